"""The Messages API's ``output_config`` and top-level ``cache_control``, as the ``anthropic``
SDK sends them: structured outputs (``messages.parse`` with a pydantic model) from either
upstream protocol, ``effort`` served by Anthropic upstreams (never dropped for others), and
automatic prompt caching relayed to Anthropic upstreams.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import pydantic
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


class City(pydantic.BaseModel):
    name: str
    population: int


@pytest.fixture
async def env(fake_upstream: FakeUpstream) -> AsyncIterator[ProtocolEnv]:
    answer = Behaviour(text='{"name": "Oslo", "population": 709000}')
    fake_upstream.set_default(OA_SMALL, answer)
    fake_upstream.set_default(AN_MID, answer)
    async with open_protocol_env(fake_upstream) as env:
        yield env


async def test_parse_with_a_model_from_an_anthropic_upstream(env: ProtocolEnv) -> None:
    message = await env.anthropic.messages.parse(
        model="claude-mid", max_tokens=200, messages=user("Biggest city of Norway?"),
        output_format=City)
    assert message.parsed_output == City(name="Oslo", population=709000)
    sent = env.sent(AN_MID)
    assert "output_config" not in sent  # asked as Anthropic asks every JSON answer here
    assert '"population"' in sent["system"] and "JSON" in sent["system"]


async def test_parse_with_a_model_from_an_openai_upstream(env: ProtocolEnv) -> None:
    message = await env.anthropic.messages.parse(
        model="gpt-small", max_tokens=200, messages=user("Biggest city of Norway?"),
        output_format=City)
    assert message.parsed_output == City(name="Oslo", population=709000)
    response_format = env.sent(OA_SMALL)["response_format"]
    assert response_format["type"] == "json_schema"
    assert set(response_format["json_schema"]["schema"]["properties"]) == {"name", "population"}


async def test_effort_is_served_by_anthropic_upstreams_only(env: ProtocolEnv) -> None:
    await env.anthropic.messages.create(
        model="auto", max_tokens=200, messages=user("hi"), output_config={"effort": "high"})
    assert env.sent(AN_MID)["output_config"] == {"effort": "high"}
    assert env.fake.requests(OA_SMALL) == []

    with pytest.raises(anthropic.BadRequestError) as caught:
        await env.anthropic.messages.create(
            model="gpt-small", max_tokens=200, messages=user("hi"),
            output_config={"effort": "high"})
    assert "effort" in caught.value.body["error"]["message"]  # type: ignore[index]
    assert env.fake.requests(OA_SMALL) == []


@pytest.mark.parametrize("output_config", [
    "high", {"effort": 3}, {"format": {"type": "xml"}}, {"format": {"type": "json_schema"}},
])
async def test_malformed_output_config_is_a_400(env: ProtocolEnv, output_config: object
                                                ) -> None:
    with pytest.raises(anthropic.BadRequestError):
        await env.anthropic.messages.create(
            model="claude-mid", max_tokens=200, messages=user("hi"),
            output_config=output_config)  # type: ignore[arg-type]


async def test_automatic_caching_reaches_an_anthropic_upstream(env: ProtocolEnv) -> None:
    await env.anthropic.messages.create(model="claude-mid", max_tokens=50, messages=user("hi"),
                                        cache_control={"type": "ephemeral"})
    assert env.sent(AN_MID)["cache_control"] == {"type": "ephemeral"}
    await env.anthropic.messages.create(model="gpt-small", max_tokens=50, messages=user("hi"),
                                        cache_control={"type": "ephemeral"})
    assert "cache_control" not in env.sent(OA_SMALL)
