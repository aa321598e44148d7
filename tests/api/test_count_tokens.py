"""POST /v1/messages/count_tokens with the official ``anthropic`` SDK as the client.

The router answers it itself, with an estimate (four characters a token over everything the
model would read), whichever backend the request would be routed to; it never reaches an
upstream and is never a 404 or a 500.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import httpx
import pytest
from support_protocols import (
    AN_BIG,
    AN_MID,
    ANTHROPIC_TOOLS,
    OA_SMALL,
    ProtocolEnv,
    open_protocol_env,
    user,
)

from engine.testing.fake_upstream import FakeUpstream


@pytest.fixture
async def env(fake_upstream: FakeUpstream) -> AsyncIterator[ProtocolEnv]:
    async with open_protocol_env(fake_upstream) as env:
        yield env


@pytest.mark.parametrize("model", ["auto", "gpt-small", "claude-mid"])
async def test_the_sdk_counts_tokens(env: ProtocolEnv, model: str) -> None:
    counted = await env.anthropic.messages.count_tokens(
        model=model, system="Be brief.", messages=user("How many tokens is this question?")
    )
    # "Be brief." (9 characters) and the question (33): 3 + 9 tokens at four characters each
    assert counted.input_tokens == 12
    for backend in (OA_SMALL, AN_MID, AN_BIG):
        assert env.fake.requests(backend) == []


async def test_tools_images_and_tool_turns_count(env: ProtocolEnv) -> None:
    plain = await env.anthropic.messages.count_tokens(model="auto", messages=user("hi"))
    with_tools = await env.anthropic.messages.count_tokens(
        model="auto", messages=user("hi"), tools=ANTHROPIC_TOOLS
    )
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBORw0KGgo="}}
    with_image = await env.anthropic.messages.count_tokens(
        model="auto", messages=[{"role": "user", "content": [image, {"type": "text",
                                                                     "text": "hi"}]}],
    )
    conversation = await env.anthropic.messages.count_tokens(
        model="auto",
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
                                               "name": "get_weather",
                                               "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                          "content": "sunny, 21 degrees"}]},
        ],
    )
    assert plain.input_tokens == 1
    assert with_tools.input_tokens > plain.input_tokens + 10  # the schema is read too
    assert with_image.input_tokens >= plain.input_tokens + 1000  # an image is far from free
    assert conversation.input_tokens > plain.input_tokens + 5


async def test_an_unknown_model_is_a_404(env: ProtocolEnv) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        await env.anthropic.messages.count_tokens(model="nope", messages=user("hi"))
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


@pytest.mark.parametrize("body", [
    b"{not json",
    b"[]",
    b'{"model": "auto"}',
    b'{"model": "auto", "messages": []}',
    b'{"model": "auto", "messages": [{"role": "wizard", "content": "x"}]}',
    b'{"model": "auto", "messages": [{"role": "user", "content": 3}]}',
])
async def test_malformed_bodies_are_400_anthropic_errors(env: ProtocolEnv, body: bytes) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{env.router.url}/v1/messages/count_tokens", content=body,
                                   headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"


async def test_the_key_is_checked(fake_upstream: FakeUpstream) -> None:
    async with open_protocol_env(fake_upstream, api_keys=["right"]) as env:
        async with anthropic.AsyncAnthropic(base_url=env.router.url, api_key="wrong",
                                            max_retries=0) as stranger:
            with pytest.raises(anthropic.AuthenticationError):
                await stranger.messages.count_tokens(model="auto", messages=user("hi"))
        counted = await env.anthropic.messages.count_tokens(model="auto", messages=user("hi"))
    assert counted.input_tokens == 1
