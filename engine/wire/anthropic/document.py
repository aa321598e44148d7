"""Anthropic ``document`` content blocks (PDFs and plain text), both ways. Sans-IO.

:func:`parse_document` reads a client's block as a canonical
:class:`~engine.messages.DocumentPart`; :func:`render_document` writes one as the block an
Anthropic upstream takes: an Anthropic client's block as it sent it, and an OpenAI client's
``file`` part (a base64 PDF, or text) as the block that carries the same document.
"""

from __future__ import annotations

import binascii
from typing import Any

import orjson

from engine.errors import RequestInvalid
from engine.messages import DocumentPart

__all__ = ["DOCUMENT_TYPES", "parse_document", "render_document"]

PDF = "application/pdf"
DOCUMENT_TYPES = (PDF, "text/plain")  # base64 sources are PDFs; text sources plain text


def parse_document(block: dict[str, Any], path: str, cache_control: str | None
                   ) -> DocumentPart:
    """A ``document`` block as a :class:`DocumentPart`.

    Raises:
        RequestInvalid: the block is malformed; ``param`` is the field path.
    """
    source = block.get("source")
    spath = f"{path}.source"
    if not isinstance(source, dict):
        raise _invalid(spath, "field required" if source is None else "must be an object")
    kind = source.get("type")
    if kind == "base64":
        if source.get("media_type") != PDF:
            raise _invalid(f"{spath}.media_type", f"must be '{PDF}'")
        document = DocumentPart(media_type=PDF, data=_text(source, "data", spath, empty=False))
    elif kind == "text":
        media_type = source.get("media_type", "text/plain")
        if media_type != "text/plain":
            raise _invalid(f"{spath}.media_type", "must be 'text/plain'")
        document = DocumentPart(media_type=media_type, text=_text(source, "data", spath))
    elif kind == "url":
        document = DocumentPart(url=_text(source, "url", spath, empty=False))
    else:
        raise _invalid(f"{spath}.type", "must be 'base64', 'text' or 'url'")
    citations = block.get("citations")
    if citations is not None and (not isinstance(citations, dict)
                                  or not isinstance(citations.get("enabled", False), bool)):
        raise _invalid(f"{path}.citations", "must be an object with a boolean 'enabled'")
    return DocumentPart(
        media_type=document.media_type, data=document.data, text=document.text,
        url=document.url,
        title=_optional_text(block, "title", path),
        context=_optional_text(block, "context", path),
        citations=None if citations is None else orjson.dumps(citations).decode(),
        cache_control=cache_control,
    )


def render_document(part: DocumentPart, index: int) -> dict[str, Any]:
    """``part`` as a ``document`` block for an Anthropic upstream.

    Raises:
        RequestInvalid: it cannot be one (an OpenAI file id, data that is not base64 text of
            its type): routing sends such a document elsewhere, so only a caller that pinned
            an Anthropic model sees this.
    """
    source: dict[str, Any]
    if part.text is not None:
        source = {"type": "text", "media_type": "text/plain", "data": part.text}
    elif part.url is not None:
        source = {"type": "url", "url": part.url}
    elif part.data is not None and part.media_type == PDF:
        source = {"type": "base64", "media_type": PDF, "data": part.data}
    elif part.data is not None and (part.media_type or "").startswith("text/"):
        try:  # an OpenAI client's text file: Anthropic takes it as text
            text = binascii.a2b_base64(part.data, strict_mode=True).decode()
        except (binascii.Error, ValueError):
            raise RequestInvalid("a text file's file_data must be base64-encoded UTF-8",
                                 param=f"messages.{index}.content") from None
        source = {"type": "text", "media_type": "text/plain", "data": text}
    else:
        need = part.feature() or "document"
        raise RequestInvalid(f"{need} is not supported by Anthropic models", param=need)
    block: dict[str, Any] = {"type": "document", "source": source}
    if part.title is not None:
        block["title"] = part.title
    if part.context is not None:
        block["context"] = part.context
    if part.citations is not None:
        block["citations"] = orjson.Fragment(part.citations)
    if part.cache_control is not None:
        block["cache_control"] = orjson.Fragment(part.cache_control)
    return block


def _text(obj: dict[str, Any], key: str, path: str, *, empty: bool = True) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or (not empty and not value):
        problem = "field required" if value is None else (
            "must be a string" if not isinstance(value, str) else "must not be empty")
        raise _invalid(f"{path}.{key}", problem)
    return value


def _optional_text(obj: dict[str, Any], key: str, path: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise _invalid(f"{path}.{key}", "must be a string")
    return value


def _invalid(param: str, problem: str) -> RequestInvalid:
    return RequestInvalid(f"{param}: {problem}", param=param)
