"""Images through the router, with the official SDKs as clients, to either upstream protocol:
OpenAI's ``image_url`` parts (an https URL or a base64 data URL, with ``detail``) and
Anthropic's ``image`` blocks (``base64`` or ``url`` sources) each become the other's shape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest
from support_protocols import AN_MID, OA_SMALL, ProtocolEnv, open_protocol_env

from engine.testing.fake_upstream import FakeUpstream

PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJ"
       "RU5ErkJggg==")
URL = "https://example.com/cat.png"


@pytest.fixture
async def env(fake_upstream: FakeUpstream) -> AsyncIterator[ProtocolEnv]:
    async with open_protocol_env(fake_upstream) as env:
        yield env


def _openai_parts(detail: str | None) -> list[Any]:
    inline: dict[str, Any] = {"url": f"data:image/png;base64,{PNG}"}
    if detail is not None:
        inline["detail"] = detail
    return [{"type": "text", "text": "what are these?"},
            {"type": "image_url", "image_url": inline},
            {"type": "image_url", "image_url": {"url": URL}}]


@pytest.mark.parametrize("detail", [None, "low", "high"])
async def test_openai_images_reach_an_openai_upstream_as_sent(env: ProtocolEnv,
                                                             detail: str | None) -> None:
    parts = _openai_parts(detail)
    await env.openai.chat.completions.create(
        model="gpt-small", messages=[{"role": "user", "content": parts}])
    assert env.sent(OA_SMALL)["messages"][0]["content"] == parts


async def test_openai_images_reach_an_anthropic_upstream(env: ProtocolEnv) -> None:
    await env.openai.chat.completions.create(
        model="claude-mid", messages=[{"role": "user", "content": _openai_parts("low")}])
    assert env.sent(AN_MID)["messages"][0]["content"] == [
        {"type": "text", "text": "what are these?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": URL}},
    ]


@pytest.mark.parametrize(("model", "backend"), [("claude-mid", AN_MID), ("gpt-small", OA_SMALL)])
async def test_anthropic_images_reach_either_upstream(env: ProtocolEnv, model: str,
                                                      backend: str) -> None:
    blocks: list[Any] = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": URL}},
        {"type": "text", "text": "what are these?"},
    ]
    await env.anthropic.messages.create(model=model, max_tokens=50,
                                        messages=[{"role": "user", "content": blocks}])
    sent = env.sent(backend)["messages"][0]["content"]
    if backend == AN_MID:
        assert sent == blocks
    else:
        assert sent == [
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "image_url", "image_url": {"url": URL}},
            {"type": "text", "text": "what are these?"},
        ]


def _screenshot_turns() -> list[Any]:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG}}
    return [
        {"role": "user", "content": "take a screenshot"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
                                           "name": "screenshot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": [{"type": "text", "text": "the screen:"},
                                                  image]}]},
    ]


async def test_images_in_tool_results_reach_an_anthropic_upstream(env: ProtocolEnv) -> None:
    turns = _screenshot_turns()
    await env.anthropic.messages.create(model="auto", max_tokens=50, messages=turns)
    assert env.sent(AN_MID)["messages"][2] == turns[2]
    assert env.fake.requests(OA_SMALL) == []  # chat completions' tool results are text only


async def test_images_in_tool_results_pinned_to_an_openai_model_are_a_400(env: ProtocolEnv
                                                                         ) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        await env.anthropic.messages.create(model="gpt-small", max_tokens=50,
                                            messages=_screenshot_turns())
    assert "gpt-small" in caught.value.body["error"]["message"]  # type: ignore[index]
    assert env.fake.requests(OA_SMALL) == []
