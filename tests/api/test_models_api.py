"""``GET /v1/models`` and ``GET /v1/models/{id}`` through both official SDKs.

Chat UIs pick a model from this list, so ``auto`` (routed) must be on it, first; the SDKs'
``models.retrieve`` must find a configured model and get a 404 in their own shape otherwise.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import openai
import pytest
from support_protocols import SDK_STREAM_LEAKS, ProtocolEnv, open_protocol_env

from engine.testing.fake_upstream import FakeUpstream

pytestmark = SDK_STREAM_LEAKS

CONFIGURED = ["gpt-small", "claude-mid", "claude-big"]


@pytest.fixture
async def env(fake_upstream: FakeUpstream) -> AsyncIterator[ProtocolEnv]:
    async with open_protocol_env(fake_upstream) as env:
        yield env


async def test_openai_list_has_auto_first_then_every_configured_model(env: ProtocolEnv) -> None:
    page = await env.openai.models.list()
    assert [m.id for m in page.data] == ["auto", *CONFIGURED]
    assert [m.owned_by for m in page.data] == ["llm-router", "openai", "anthropic", "anthropic"]
    assert all(m.object == "model" for m in page.data)


async def test_openai_retrieve_finds_a_model_and_404s_an_unknown_one(env: ProtocolEnv) -> None:
    found = await env.openai.models.retrieve("claude-mid")
    assert (found.id, found.owned_by) == ("claude-mid", "anthropic")
    assert (await env.openai.models.retrieve("auto")).id == "auto"
    with pytest.raises(openai.NotFoundError) as missing:
        await env.openai.models.retrieve("no-such-model")
    assert missing.value.status_code == 404
    assert "no-such-model" in missing.value.message


async def test_anthropic_list_and_retrieve(env: ProtocolEnv) -> None:
    page = await env.anthropic.models.list()
    assert [m.id for m in page.data] == ["auto", *CONFIGURED]
    assert page.data[2].display_name == "claude-mid (tier 2)"
    found = await env.anthropic.models.retrieve("claude-big")
    assert (found.id, found.type) == ("claude-big", "model")
    with pytest.raises(anthropic.NotFoundError) as missing:
        await env.anthropic.models.retrieve("no-such-model")
    assert missing.value.status_code == 404
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


async def test_anthropic_paging_limits_the_page_and_the_sdk_follows_it(env: ProtocolEnv) -> None:
    page = await env.anthropic.models.list(limit=2)
    assert [m.id for m in page.data] == ["auto", "gpt-small"]
    assert (page.has_more, page.first_id, page.last_id) == (True, "auto", "gpt-small")
    assert [m.id async for m in await env.anthropic.models.list(limit=2)] == ["auto", *CONFIGURED]
    after = await env.anthropic.models.list(limit=2, after_id="claude-mid")
    assert ([m.id for m in after.data], after.has_more) == (["claude-big"], False)
    before = await env.anthropic.models.list(limit=1, before_id="claude-mid")
    assert ([m.id for m in before.data], before.has_more) == (["gpt-small"], True)
    with pytest.raises(anthropic.BadRequestError) as unknown:
        await env.anthropic.models.list(after_id="no-such-model")
    assert "no-such-model" in unknown.value.message
    with pytest.raises(anthropic.BadRequestError):
        await env.anthropic.models.list(limit=0)


async def test_models_need_a_client_key_when_keys_are_set(fake_upstream: FakeUpstream) -> None:
    async with open_protocol_env(fake_upstream, api_keys=["right"]) as env:
        assert (await env.openai.models.retrieve("gpt-small")).id == "gpt-small"
        wrong = env.openai.with_options(api_key="wrong")
        with pytest.raises(openai.AuthenticationError):
            await wrong.models.retrieve("gpt-small")
        with pytest.raises(openai.AuthenticationError):
            await wrong.models.list()
