"""OpenAI's own request fields through the router, with the official SDKs as clients: those
that do not change the answer (``prompt_cache_key``, ``safety_identifier``, ``service_tier``,
``store``, ``metadata``, ``prediction``) reach OpenAI upstreams and are left out for Anthropic
ones; ``web_search_options`` changes it, so it routes to OpenAI upstreams (a 400 when pinned
to another); audio output is refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from support_protocols import (
    AN_MID,
    OA_SMALL,
    SDK_STREAM_LEAKS,
    ProtocolEnv,
    open_protocol_env,
    user,
)

from engine.testing.fake_upstream import Behaviour, FakeUpstream

pytestmark = SDK_STREAM_LEAKS

FIELDS: dict[str, Any] = {
    "prompt_cache_key": "tenant-42",
    "safety_identifier": "user-hash-7",
    "service_tier": "flex",
    "store": True,
    "metadata": {"project": "docs", "run": "3"},
    "prediction": {"type": "content", "content": "Paris is the capital of France."},
}
SEARCH = {"search_context_size": "low"}


@pytest.fixture
async def env(fake_upstream: FakeUpstream) -> AsyncIterator[ProtocolEnv]:
    async with open_protocol_env(fake_upstream) as env:
        yield env


async def _ask(env: ProtocolEnv, model: str, stream: bool, **extra: Any) -> str:
    if not stream:
        completion = await env.openai.chat.completions.create(
            model=model, messages=user("What is the capital of France?"), **extra)
        return completion.choices[0].message.content or ""
    chunks = await env.openai.chat.completions.create(
        model=model, messages=user("What is the capital of France?"), stream=True, **extra)
    return "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_fields_reach_an_openai_upstream(env: ProtocolEnv, stream: bool) -> None:
    await _ask(env, "gpt-small", stream, **FIELDS)
    sent = env.sent(OA_SMALL)
    assert {key: sent.get(key) for key in FIELDS} == FIELDS


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_fields_are_left_out_for_an_anthropic_upstream(env: ProtocolEnv,
                                                                    stream: bool) -> None:
    text = await _ask(env, "claude-mid", stream, **FIELDS)
    assert text == f"[{AN_MID}] What is the capital of France?"
    sent = env.sent(AN_MID)  # the fake refuses fields Anthropic does not have, as Anthropic
    assert sent["metadata"] == {"user_id": "user-hash-7"}  # the safety identifier
    assert not set(FIELDS) - {"metadata"} & set(sent)


async def test_user_wins_over_the_safety_identifier_for_anthropic(env: ProtocolEnv) -> None:
    await _ask(env, "claude-mid", False, user="u-1", safety_identifier="user-hash-7")
    assert env.sent(AN_MID)["metadata"] == {"user_id": "u-1"}


@pytest.mark.parametrize("stream", [False, True])
async def test_web_search_routes_to_an_openai_upstream(env: ProtocolEnv, stream: bool) -> None:
    # an answer with url_citation annotations, as a web search answer has
    env.fake.set_default(OA_SMALL, Behaviour(text="Paris.", citations=True))
    text = await _ask(env, "auto", stream, web_search_options=SEARCH)
    assert text == "Paris."
    assert env.sent(OA_SMALL)["web_search_options"] == SEARCH
    assert env.fake.requests(AN_MID) == []


async def test_web_search_pinned_to_an_anthropic_model_is_a_400(env: ProtocolEnv) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await _ask(env, "claude-mid", False, web_search_options=SEARCH)
    assert caught.value.param == "web_search_options"  # type: ignore[attr-defined]
    assert env.fake.requests(AN_MID) == []


@pytest.mark.parametrize(("extra", "param"), [
    ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ({"modalities": ["audio"]}, "modalities"),
])
async def test_audio_output_is_a_400_saying_what_to_leave_out(
        env: ProtocolEnv, extra: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await _ask(env, "gpt-small", False, **extra)
    assert caught.value.param == param  # type: ignore[attr-defined]
    assert "leave out 'modalities'" in caught.value.message or "'audio'" in caught.value.message
    assert env.fake.requests(OA_SMALL) == []


async def test_text_only_modalities_are_accepted(env: ProtocolEnv) -> None:
    assert await _ask(env, "gpt-small", False, modalities=["text"])
    assert "modalities" not in env.sent(OA_SMALL)
