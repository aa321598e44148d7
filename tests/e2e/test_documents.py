"""Documents through the router, with the official SDKs as clients, to either upstream
protocol: Anthropic's ``document`` blocks (base64 PDFs, text and URL sources) and OpenAI's
``file`` parts (``file_data``, ``file_id``) each become the other's shape where there is
one, and route to the upstream that can read them where there is not. Answers citing a
document (Anthropic's ``citations``, ``citations_delta`` events) reach both SDKs.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest
from support_protocols import (
    AN_MID,
    OA_SMALL,
    SDK_STREAM_LEAKS,
    ProtocolEnv,
    open_protocol_env,
)

from engine.messages import PDF_PAGE_TOKENS
from engine.testing.fake_upstream import Behaviour, FakeUpstream

PDF = base64.b64encode(b"%PDF-1.4 1 0 obj << /Type /Pages >> 2 0 obj << /Type /Page >> "
                       b"3 0 obj << /Type /Page >> %%EOF").decode()
URL = "https://example.com/paper.pdf"
EPHEMERAL = {"type": "ephemeral"}
pytestmark = SDK_STREAM_LEAKS


@pytest.fixture
async def env(fake_upstream: FakeUpstream) -> AsyncIterator[ProtocolEnv]:
    async with open_protocol_env(fake_upstream) as env:
        yield env


def _pdf_block(**extra: Any) -> dict[str, Any]:
    return {"type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}, **extra}


def _text_block(**extra: Any) -> dict[str, Any]:
    return {"type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "The grass is green."},
            **extra}


def _url_block() -> dict[str, Any]:
    return {"type": "document", "source": {"type": "url", "url": URL}}


async def _ask_anthropic(env: ProtocolEnv, model: str, blocks: list[Any], stream: bool) -> str:
    messages: Any = [{"role": "user", "content": blocks}]
    if stream:
        async with env.anthropic.messages.stream(model=model, max_tokens=50,
                                                 messages=messages) as events:
            message = await events.get_final_message()
    else:
        message = await env.anthropic.messages.create(model=model, max_tokens=50,
                                                      messages=messages)
    return "".join(block.text for block in message.content if block.type == "text")


async def _ask_openai(env: ProtocolEnv, model: str, parts: list[Any], stream: bool,
                      **extra: Any) -> str:
    messages: Any = [{"role": "user", "content": parts}]
    if not stream:
        completion = await env.openai.chat.completions.create(model=model, messages=messages,
                                                              **extra)
        return completion.choices[0].message.content or ""
    chunks = await env.openai.chat.completions.create(model=model, messages=messages,
                                                      stream=True, **extra)
    return "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_documents_reach_an_anthropic_upstream_as_sent(env: ProtocolEnv,
                                                                      stream: bool) -> None:
    blocks = [
        _pdf_block(title="Report", context="Q3 figures", citations={"enabled": True},
                   cache_control=EPHEMERAL),
        _text_block(title="Notes"),
        _url_block(),
        {"type": "text", "text": "summarise these"},
    ]
    text = await _ask_anthropic(env, "claude-mid", blocks, stream)
    assert text == f"[{AN_MID}] summarise these"
    assert env.sent(AN_MID)["messages"][0]["content"] == blocks


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_documents_reach_an_openai_upstream(env: ProtocolEnv,
                                                            stream: bool) -> None:
    blocks = [_pdf_block(title="report.pdf", context="Q3 figures", citations={"enabled": True}),
              _text_block(), {"type": "text", "text": "summarise these"}]
    text = await _ask_anthropic(env, "gpt-small", blocks, stream)
    assert text.startswith(f"[{OA_SMALL}]")
    assert env.sent(OA_SMALL)["messages"][0]["content"] == [
        {"type": "text", "text": "Q3 figures"},
        {"type": "file", "file": {"filename": "report.pdf",
                                  "file_data": f"data:application/pdf;base64,{PDF}"}},
        {"type": "text", "text": "The grass is green."},
        {"type": "text", "text": "summarise these"},
    ]


async def test_a_pdf_without_a_title_reaches_openai_with_a_filename(env: ProtocolEnv) -> None:
    await _ask_anthropic(env, "gpt-small", [_pdf_block(), {"type": "text", "text": "hi"}], False)
    [file, _] = env.sent(OA_SMALL)["messages"][0]["content"]
    assert file["file"]["filename"] == "document.pdf"  # OpenAI wants one with file_data


async def test_a_url_document_routes_to_an_anthropic_upstream(env: ProtocolEnv) -> None:
    blocks = [_url_block(), {"type": "text", "text": "what is this?"}]
    await _ask_anthropic(env, "auto", blocks, False)  # a short prompt: tier 1 (OpenAI) else
    assert env.sent(AN_MID)["messages"][0]["content"] == blocks
    assert env.fake.requests(OA_SMALL) == []


async def test_a_url_document_pinned_to_an_openai_model_is_a_400(env: ProtocolEnv) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        await _ask_anthropic(env, "gpt-small", [_url_block(), {"type": "text", "text": "x"}],
                             False)
    message = caught.value.body["error"]["message"]  # type: ignore[index]
    assert "document_url" in message and "gpt-small" in message
    assert env.fake.requests(OA_SMALL) == []


async def test_a_malformed_document_is_a_400_naming_the_field(env: ProtocolEnv) -> None:
    block = {"type": "document", "source": {"type": "base64", "media_type": "image/png",
                                            "data": PDF}}
    with pytest.raises(anthropic.BadRequestError) as caught:
        await _ask_anthropic(env, "auto", [block], False)
    message = caught.value.body["error"]["message"]  # type: ignore[index]
    assert message.startswith("messages.0.content.0.source.media_type")


def _file_part(media_type: str = "application/pdf", data: str = PDF) -> dict[str, Any]:
    return {"type": "file", "file": {"filename": "report.pdf",
                                     "file_data": f"data:{media_type};base64,{data}"}}


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_files_reach_an_openai_upstream_as_sent(env: ProtocolEnv,
                                                             stream: bool) -> None:
    parts = [_file_part(), {"type": "file", "file": {"file_id": "file-abc123"}},
             {"type": "text", "text": "compare these"}]
    text = await _ask_openai(env, "gpt-small", parts, stream)
    assert text == f"[{OA_SMALL}] compare these"
    assert env.sent(OA_SMALL)["messages"][0]["content"] == parts


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_files_reach_an_anthropic_upstream_as_documents(env: ProtocolEnv,
                                                                    stream: bool) -> None:
    notes = base64.b64encode(b"The grass is green.").decode()
    parts = [_file_part(), _file_part("text/plain", notes), {"type": "text", "text": "and?"}]
    text = await _ask_openai(env, "claude-mid", parts, stream)
    assert text == f"[{AN_MID}] and?"
    assert env.sent(AN_MID)["messages"][0]["content"] == [
        _pdf_block(title="report.pdf"), _text_block(title="report.pdf"),
        {"type": "text", "text": "and?"},
    ]


async def test_an_openai_file_id_routes_to_openai_and_is_a_400_pinned_elsewhere(
        env: ProtocolEnv) -> None:
    parts: list[Any] = [{"type": "file", "file": {"file_id": "file-abc123"}},
                        {"type": "text", "text": "Write a python function to parse this file, "
                                                 "step by step, and prove it correct."}]
    env.fake.set_default(AN_MID, Behaviour(status=500))  # would answer if routed there
    await _ask_openai(env, "auto", parts, False)
    assert env.sent(OA_SMALL)["messages"][0]["content"] == parts
    with pytest.raises(openai.BadRequestError) as caught:
        await _ask_openai(env, "claude-mid", parts, False)
    assert caught.value.param == "file_id"  # type: ignore[attr-defined]
    assert env.fake.requests(AN_MID) == []


async def test_an_unreadable_file_part_is_a_400_naming_the_field(env: ProtocolEnv) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await _ask_openai(env, "auto", [{"type": "file", "file": {"filename": "x.pdf"}}], False)
    assert caught.value.param == "messages[0].content[0].file"  # type: ignore[attr-defined]


@pytest.mark.parametrize("stream", [False, True])
async def test_an_answer_citing_a_document_reaches_an_anthropic_client(env: ProtocolEnv,
                                                                      stream: bool) -> None:
    env.fake.set_default(AN_MID, Behaviour(text="The grass is green.", citations=True))
    text = await _ask_anthropic(env, "claude-mid",
                                [_text_block(citations={"enabled": True}),
                                 {"type": "text", "text": "what colour is the grass?"}], stream)
    assert text == "The grass is green."


@pytest.mark.parametrize("stream", [False, True])
async def test_an_answer_citing_a_document_reaches_an_openai_client(env: ProtocolEnv,
                                                                   stream: bool) -> None:
    env.fake.set_default(AN_MID, Behaviour(text="The grass is green.", citations=True))
    text = await _ask_openai(env, "claude-mid", [_file_part(), {"type": "text", "text": "?"}],
                             stream)
    assert text == "The grass is green."


async def test_a_pdf_counts_its_pages_in_count_tokens(env: ProtocolEnv) -> None:
    counted = await env.anthropic.messages.count_tokens(
        model="auto", messages=[{"role": "user", "content": [
            _pdf_block(), {"type": "text", "text": "hi"}]}])
    assert counted.input_tokens == 2 * PDF_PAGE_TOKENS + 1
    assert env.fake.requests(AN_MID) == env.fake.requests(OA_SMALL) == []



async def test_the_cache_tells_documents_apart(fake_upstream: FakeUpstream) -> None:
    other = base64.b64encode(b"%PDF-1.4 << /Type /Page >> another report %%EOF").decode()

    def blocks(data: str) -> Any:
        return [{"role": "user", "content": [
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                            "data": data}},
            {"type": "text", "text": "summarise the report"}]}]

    fake_upstream.set_default(AN_MID, Behaviour(text="A summary.", citations=True))
    async with open_protocol_env(fake_upstream, cache=True) as env:
        create = env.anthropic.messages.with_raw_response.create
        first = await create(model="claude-mid", max_tokens=50, messages=blocks(PDF))
        again = await create(model="claude-mid", max_tokens=50, messages=blocks(PDF))
        another = await create(model="claude-mid", max_tokens=50, messages=blocks(other))
    assert [r.headers["x-llm-router-cache"] for r in (first, again, another)] == [
        "MISS", "HIT", "MISS"]
    assert (await again.parse()).content[0].text == "A summary."  # type: ignore[union-attr]
    assert [r.body["messages"][0]["content"][0]["source"]["data"]
            for r in fake_upstream.requests(AN_MID)] == [PDF, other]
