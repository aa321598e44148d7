"""OpenAI ``file`` content parts (documents), both ways. Sans-IO.

:func:`parse_file` reads a client's ``{"type": "file", "file": {...}}`` part as a canonical
:class:`~engine.messages.DocumentPart`; :func:`render_document` writes a document as the
parts an OpenAI-compatible upstream takes: a ``file`` part for inline data or a file id, and
plain text for a text document (an Anthropic client's ``text`` source).
"""

from __future__ import annotations

from typing import Any

from engine.errors import RequestInvalid
from engine.messages import DocumentPart

from .fields import invalid_type

__all__ = ["DEFAULT_FILENAME", "parse_file", "render_document"]

DEFAULT_FILENAME = "document.pdf"  # OpenAI wants a filename with file_data; Anthropic has none
_PDF = "application/pdf"


def parse_file(value: Any, path: str) -> DocumentPart:
    """A ``file`` part's ``file`` object: ``file_data`` (a base64 data URL; bare base64 is
    taken as a PDF) or ``file_id``, with an optional ``filename``.

    Raises:
        RequestInvalid: it is malformed; ``param`` names the field.
    """
    if type(value) is not dict:
        raise invalid_type(path, "an object", value)
    filename = _optional(value, "filename", path)
    file_id = _optional(value, "file_id", path)
    file_data = _optional(value, "file_data", path)
    if (file_id is None) == (file_data is None):
        raise RequestInvalid(f"'{path}' must hold one of 'file_data' or 'file_id'.",
                             param=path)
    if file_id is not None:
        return DocumentPart(file_id=file_id, title=filename)
    assert file_data is not None
    if not file_data.startswith("data:"):
        return DocumentPart(media_type=_PDF, data=file_data, title=filename)
    header, comma, data = file_data[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if not comma or encoding != "base64" or not media_type or not data:
        raise RequestInvalid(
            f"'{path}.file_data' must be a base64 data URL ('data:<media type>;base64,<data>').",
            param=f"{path}.file_data",
        )
    return DocumentPart(media_type=media_type, data=data, title=filename)


def render_document(part: DocumentPart) -> list[dict[str, Any]]:
    """``part`` as chat-completions content parts: its ``context`` (and a text document's
    title) as text first, then the document. Citations are Anthropic's: not sent.

    Raises:
        RequestInvalid: it has no form here (a URL): routing sends such a document
            elsewhere, so only a caller that pinned an OpenAI model sees this.
    """
    if part.text is not None:
        texts = [t for t in (part.title, part.context, part.text) if t]
        return [{"type": "text", "text": "\n\n".join(texts)}] if texts else []
    out: list[dict[str, Any]] = [{"type": "text", "text": part.context}] if part.context else []
    file: dict[str, str] = {}
    if part.file_id is not None:
        file["file_id"] = part.file_id
        if part.title is not None:
            file["filename"] = part.title
    elif part.data is not None:
        file["filename"] = part.title or DEFAULT_FILENAME
        file["file_data"] = f"data:{part.media_type or _PDF};base64,{part.data}"
    else:
        need = part.feature() or "document"
        raise RequestInvalid(f"{need} is not supported by OpenAI-compatible models",
                             param=need)
    out.append({"type": "file", "file": file})
    return out


def _optional(value: dict[str, Any], key: str, path: str) -> str | None:
    item = value.get(key)
    if item is not None and (type(item) is not str or not item):
        raise invalid_type(f"{path}.{key}", "a non-empty string", item)
    return item
