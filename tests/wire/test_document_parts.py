"""Documents on the wire (``engine.wire.anthropic.document``, ``engine.wire.openai.document``):
Anthropic's ``document`` blocks and OpenAI's ``file`` parts parsed into the canonical
:class:`DocumentPart`, written back for either upstream, and the features that route the
ones only one provider can read.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from engine.core.cache import request_key
from engine.errors import RequestInvalid
from engine.messages import (
    PDF_PAGE_TOKENS,
    ChatRequest,
    DocumentPart,
    Message,
    TextPart,
    estimate_prompt_tokens,
)
from engine.wire import ANTHROPIC, OPENAI
from engine.wire.providers import AnthropicProvider, OllamaProvider, OpenAIProvider

PDF = base64.b64encode(b"%PDF-1.7 << /Type /Page >> << /Type /Page >> << /Type /Pages >>"
                       ).decode()


def _anthropic(*blocks: Any) -> ChatRequest:
    return ANTHROPIC.parse_request(orjson.dumps({
        "model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": list(blocks)}]}))


def _openai(*parts: Any) -> ChatRequest:
    return OPENAI.parse_request(orjson.dumps({
        "messages": [{"role": "user", "content": list(parts)}]}))


def _sent(provider: Any, request: ChatRequest) -> Any:
    call = provider.build_call(request, model="m", base_url="http://x", api_key=None,
                               stream=False)
    return orjson.loads(call.body)["messages"][-1]["content"]


def test_an_anthropic_pdf_block_is_parsed_whole() -> None:
    block = {"type": "document", "title": "T", "context": "C", "citations": {"enabled": True},
             "cache_control": {"type": "ephemeral"},
             "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}}
    [part] = _anthropic(block).messages[0].parts
    assert part == DocumentPart(media_type="application/pdf", data=PDF, title="T", context="C",
                                citations='{"enabled":true}',
                                cache_control='{"type":"ephemeral"}')
    assert _sent(AnthropicProvider(), _anthropic(block)) == [block]


@pytest.mark.parametrize("source", [
    {"type": "text", "media_type": "text/plain", "data": "words"},
    {"type": "url", "url": "https://x/a.pdf"},
])
def test_anthropic_text_and_url_sources_reach_anthropic_as_sent(source: dict[str, Any]
                                                                ) -> None:
    block = {"type": "document", "source": source}
    assert _sent(AnthropicProvider(), _anthropic(block)) == [block]


def test_a_text_source_without_a_media_type_is_plain_text() -> None:
    [part] = _anthropic({"type": "document", "source": {"type": "text", "data": "w"}}
                        ).messages[0].parts
    assert part == DocumentPart(media_type="text/plain", text="w")


def test_anthropic_documents_as_chat_completions_parts() -> None:
    request = _anthropic(
        {"type": "document", "title": "a.pdf", "context": "ctx",
         "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}},
        {"type": "document", "title": "Notes", "source": {"type": "text", "data": "words"}},
    )
    assert _sent(OpenAIProvider(), request) == [
        {"type": "text", "text": "ctx"},
        {"type": "file", "file": {"filename": "a.pdf",
                                  "file_data": f"data:application/pdf;base64,{PDF}"}},
        {"type": "text", "text": "Notes\n\nwords"},
    ]


def test_a_text_document_alone_is_plain_text_to_every_provider() -> None:
    request = _anthropic({"type": "document", "source": {"type": "text", "data": "words"}})
    assert request.features() == frozenset()
    assert _sent(OllamaProvider(), request) == [{"type": "text", "text": "words"}]


def test_openai_file_parts_are_parsed_and_sent_back_as_given() -> None:
    parts = [{"type": "file", "file": {"filename": "a.pdf",
                                       "file_data": f"data:application/pdf;base64,{PDF}"}},
             {"type": "file", "file": {"file_id": "file-1"}}]
    request = _openai(*parts)
    assert request.messages[0].parts == (
        DocumentPart(media_type="application/pdf", data=PDF, title="a.pdf"),
        DocumentPart(file_id="file-1"),
    )
    assert _sent(OpenAIProvider(), request) == parts


def test_bare_base64_file_data_is_taken_as_a_pdf() -> None:
    [part] = _openai({"type": "file", "file": {"file_data": PDF}}).messages[0].parts
    assert part == DocumentPart(media_type="application/pdf", data=PDF)


def test_openai_pdf_and_text_files_as_anthropic_documents() -> None:
    text = base64.b64encode("grün".encode()).decode()
    request = _openai({"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}"}},
                      {"type": "file", "file": {"file_data": f"data:text/plain;base64,{text}",
                                                "filename": "n.txt"}})
    assert _sent(AnthropicProvider(), request) == [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                        "data": PDF}},
        {"type": "document", "title": "n.txt",
         "source": {"type": "text", "media_type": "text/plain", "data": "grün"}},
    ]


def test_a_text_file_that_is_not_base64_is_a_400_for_anthropic() -> None:
    request = _openai({"type": "file", "file": {"file_data": "data:text/plain;base64,%%%"}})
    with pytest.raises(RequestInvalid, match="base64-encoded UTF-8"):
        _sent(AnthropicProvider(), request)


@pytest.mark.parametrize(("part", "feature"), [
    (DocumentPart(media_type="application/pdf", data=PDF), "document"),
    (DocumentPart(media_type="text/plain", data="d29yZHM="), "document"),
    (DocumentPart(media_type="text/plain", text="words"), None),
    (DocumentPart(url="https://x/a.pdf"), "document_url"),
    (DocumentPart(file_id="file-1"), "file_id"),
    (DocumentPart(media_type="text/csv", data="YSxi"), "document"),
    (DocumentPart(media_type="application/msword", data="AAAA"), "file_data"),
])
def test_what_each_document_needs_and_who_serves_it(part: DocumentPart, feature: str | None
                                                    ) -> None:
    request = ChatRequest(messages=(Message("user", (part, TextPart("?"))),))
    assert request.features() == (frozenset() if feature is None else {feature})
    served = {name for name, provider in [("anthropic", AnthropicProvider()),
                                         ("openai", OpenAIProvider()),
                                         ("ollama", OllamaProvider())]
              if request.features() <= provider.supports}
    assert served == {
        None: {"anthropic", "openai", "ollama"},
        "document": {"anthropic", "openai"},
        "document_url": {"anthropic"},
        "file_id": {"openai"},
        "file_data": {"openai"},
    }[feature]
    for provider in (AnthropicProvider(), OpenAIProvider(), OllamaProvider()):
        if request.features() <= provider.supports:
            _sent(provider, request)  # each provider that serves it can write it
        else:
            with pytest.raises(RequestInvalid) as caught:
                _sent(provider, request)
            assert caught.value.param == feature


def test_documents_count_toward_the_prompt_estimate() -> None:
    def estimate(part: DocumentPart) -> int:
        return estimate_prompt_tokens(ChatRequest(messages=(Message("user", (part,)),)))

    assert estimate(DocumentPart(media_type="application/pdf", data=PDF)) == 2 * PDF_PAGE_TOKENS
    assert estimate(DocumentPart(text="x" * 400)) == 100
    assert estimate(DocumentPart(url="https://x/a.pdf")) == PDF_PAGE_TOKENS
    unpaged = base64.b64encode(b"%PDF" + bytes(120_000)).decode()  # compressed: no page marks
    assert estimate(DocumentPart(media_type="application/pdf", data=unpaged)) == (
        3 * PDF_PAGE_TOKENS)


def test_documents_are_part_of_the_cache_key() -> None:
    def key(data: str) -> bytes:
        part = DocumentPart(media_type="application/pdf", data=data)
        request = ChatRequest(messages=(Message("user", (part, TextPart("sum up"))),))
        return request_key(request, tenant="t", target="tier:1").exact

    assert key(PDF) != key(base64.b64encode(b"%PDF other").decode())
