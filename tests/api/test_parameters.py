"""Optional request parameters, ``n`` and tenancy, end to end over real sockets with the
official SDKs (and httpx where the headers themselves are the point).

The router of ``support_protocols`` has one OpenAI backend (``gpt-small``, tier 1) and two
Anthropic ones (``claude-mid``, tier 2; ``claude-big``, tier 3). A plain prompt routed with
``"auto"`` goes to tier 1, one with tools to tier 2. The rules under test:

* ``n`` is answered in full (choices ``0..n-1``, usage of all of them) whatever backend serves
  it: OpenAI upstreams get ``n``, Anthropic ones ``n`` calls. Streaming with ``n > 1`` is a 400.
* A parameter that changes the answer is forwarded to a backend that has it, never dropped:
  routing picks among the backends that serve every such parameter of the request; a request
  pinned to a backend without it, or that no backend can serve, is a 400 naming it, in the
  caller's protocol.
* Any credential (``x-api-key``, ``Bearer``, ``Basic``, any other scheme) is a cache tenant.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
import trio
from router_harness import make_config, open_router
from support_protocols import (
    AN_BIG,
    AN_MID,
    OA_SMALL,
    OPENAI_TOOLS,
    SDK_STREAM_LEAKS,
    UPSTREAM_KEYS,
    ProtocolEnv,
    open_protocol_env,
    user,
)

from api.http.tenancy import client_key, tenant_of
from engine.testing.fake_upstream import Behaviour, FakeUpstream

pytestmark = SDK_STREAM_LEAKS

PROMPT = "Name a colour"
OPENAI_ONLY = {
    "frequency_penalty": 0.5,
    "presence_penalty": -0.25,
    "logit_bias": {"50256": -100, "13": 5},
    "logprobs": True,
    "top_logprobs": 2,
    "reasoning_effort": "low",
    "verbosity": "high",
}


@pytest.fixture
async def env(fake_upstream: FakeUpstream) -> AsyncIterator[ProtocolEnv]:
    async with open_protocol_env(fake_upstream) as env:
        yield env


async def complete(env: ProtocolEnv, **params: Any) -> Any:
    """A chat completion through the OpenAI SDK: (completion, response headers)."""
    params = {"model": "auto", "messages": user(PROMPT)} | params
    raw = await env.openai.chat.completions.with_raw_response.create(**params)
    return raw.parse(), raw.headers


def requests_to(env: ProtocolEnv, backend: str) -> list[dict[str, Any]]:
    return [r.body for r in env.fake.requests(backend)]


# == n ===========================================================================================


async def test_n_from_an_openai_backend_is_every_choice(env: ProtocolEnv) -> None:
    completion, headers = await complete(env, n=3)

    assert headers["x-llm-router-model"] == "gpt-small"
    assert [(c.index, c.message.content) for c in completion.choices] == [
        (0, f"[oa-small] {PROMPT}"), (1, f"[oa-small] {PROMPT} #1"), (2, f"[oa-small] {PROMPT} #2"),
    ]
    [sent] = requests_to(env, OA_SMALL)
    assert sent["n"] == 3  # one call: the upstream answers n itself
    # The fake counts each choice's words: 4 + 5 + 5.
    assert completion.usage.completion_tokens == 14


async def test_n_from_an_anthropic_backend_is_every_choice(env: ProtocolEnv) -> None:
    # Routed to tier 2 (tools) and so to Anthropic, which has no n: n calls, choices merged.
    completion, headers = await complete(env, n=3, tools=OPENAI_TOOLS)

    assert headers["x-llm-router-model"] == "claude-mid"
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert {c.message.content for c in completion.choices} == {f"[an-mid] {PROMPT}"}
    assert all(c.finish_reason == "stop" for c in completion.choices)
    sent = requests_to(env, AN_MID)
    assert len(sent) == 3 and not any("n" in body for body in sent)
    # Usage is every call's: 3 prompts of 3 words, 3 answers of 4.
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (9, 12)


async def test_n_pinned_to_an_anthropic_model(env: ProtocolEnv) -> None:
    completion, _ = await complete(env, model="claude-big", n=2)
    assert [c.message.content for c in completion.choices] == [f"[an-big] {PROMPT}"] * 2
    assert len(requests_to(env, AN_BIG)) == 2


async def test_n_fails_over_as_one_call(env: ProtocolEnv) -> None:
    # One of claude-mid's n calls fails while the other is certainly under way (it never
    # answers): that one is cancelled, and claude-big answers all n.
    env.fake.script(AN_MID, Behaviour(status=500))
    env.fake.set_default(AN_MID, Behaviour(hang=True))
    completion, headers = await complete(env, n=2, tools=OPENAI_TOOLS)

    assert headers["x-llm-router-model"] == "claude-big"
    with trio.fail_after(60):
        await env.fake.wait_until_idle()
    assert [(r.status, r.cancelled) for r in env.fake.requests(AN_MID)] == [
        (500, False), (None, True)]
    assert [c.message.content for c in completion.choices] == [f"[an-big] {PROMPT}"] * 2


async def test_n_with_stream_is_refused(env: ProtocolEnv) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await env.openai.chat.completions.create(
            model="auto", messages=user(PROMPT), n=2, stream=True
        )
    error = caught.value.body
    assert isinstance(error, dict) and error["param"] == "n"
    assert "stream" in error["message"]
    assert not requests_to(env, OA_SMALL)


async def test_n_above_the_limit_is_refused(env: ProtocolEnv) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await complete(env, n=9)
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "n"


# == OpenAI-only parameters ======================================================================


async def test_openai_parameters_reach_an_openai_upstream(env: ProtocolEnv) -> None:
    await complete(env, model="gpt-small", **OPENAI_ONLY)
    [sent] = requests_to(env, OA_SMALL)
    assert {k: sent.get(k) for k in OPENAI_ONLY} == OPENAI_ONLY | {
        "logit_bias": {"13": 5.0, "50256": -100.0}
    }


@pytest.mark.parametrize("name", sorted(OPENAI_ONLY))
async def test_routing_picks_a_backend_that_has_the_parameter(
    env: ProtocolEnv, name: str
) -> None:
    # Tools route this to tier 2 (Anthropic, which lacks the parameter): gpt-small serves it.
    params = {name: OPENAI_ONLY[name]}
    if name == "top_logprobs":
        params["logprobs"] = True
    completion, headers = await complete(env, tools=OPENAI_TOOLS, **params)

    assert headers["x-llm-router-model"] == "gpt-small"
    assert completion.choices[0].message.content == f"[oa-small] {PROMPT}"
    [sent] = requests_to(env, OA_SMALL)
    assert sent[name] is not None
    assert not requests_to(env, AN_MID) and not requests_to(env, AN_BIG)


@pytest.mark.parametrize("name", sorted(OPENAI_ONLY))
async def test_pinned_to_a_backend_without_the_parameter_is_a_400(
    env: ProtocolEnv, name: str
) -> None:
    params = {name: OPENAI_ONLY[name]}
    if name == "top_logprobs":
        params["logprobs"] = True
    with pytest.raises(openai.BadRequestError) as caught:
        await complete(env, model="claude-mid", **params)
    error = caught.value.body
    expected = "logprobs" if name == "top_logprobs" else name
    assert isinstance(error, dict) and error["param"] == expected
    assert expected in error["message"] and "claude-mid" in error["message"]
    assert not requests_to(env, AN_MID)


async def test_a_parameter_no_backend_has_is_a_400(fake_upstream: FakeUpstream) -> None:
    model = {
        "name": "claude-only", "provider": "anthropic", "model": "claude-only-id",
        "base_url": fake_upstream.base_url(AN_MID, "anthropic"), "api_key": "k", "tier": 1,
    }
    async with (
        open_router(make_config({"models": [model], "cache": {"enabled": False}})) as router,
        openai.AsyncOpenAI(base_url=router.v1, api_key="k", max_retries=0,
                           http_client=openai.DefaultAsyncHttpxClient(verify=False)) as client,
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(
                model="auto", messages=user(PROMPT), logit_bias={"13": 1}
            )
    error = caught.value.body
    assert isinstance(error, dict) and error["param"] == "logit_bias"
    assert error["message"] == "logit_bias is not supported by any configured model"
    assert not fake_upstream.requests(AN_MID)


async def test_parameters_no_single_backend_has_together_are_a_400(env: ProtocolEnv) -> None:
    # top_k is Anthropic's, logit_bias OpenAI's: each has a backend, the pair has none.
    with pytest.raises(openai.BadRequestError) as caught:
        await complete(env, logit_bias={"13": 1}, extra_body={"top_k": 5})
    error = caught.value.body
    assert isinstance(error, dict) and error["param"] == "logit_bias"
    assert "together with top_k" in error["message"]


# == logprobs in the answer ======================================================================


async def test_logprobs_are_relayed(env: ProtocolEnv) -> None:
    completion, _ = await complete(env, logprobs=True, top_logprobs=2, n=2)
    for choice in completion.choices:
        tokens = choice.logprobs.content
        assert "".join(t.token for t in tokens) == choice.message.content
        assert all(len(t.top_logprobs) == 2 and t.top_logprobs[0].token == t.token
                   for t in tokens)
    plain, _ = await complete(env)
    assert plain.choices[0].logprobs is None


async def test_logprobs_are_relayed_in_a_stream(env: ProtocolEnv) -> None:
    stream = await env.openai.chat.completions.create(
        model="auto", messages=user(PROMPT), logprobs=True, top_logprobs=1, stream=True,
        tools=OPENAI_TOOLS,  # tier 2 asked: gpt-small still serves it
    )
    text, tokens = "", []
    async for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            if choice.logprobs is not None:
                tokens.extend(choice.logprobs.content or ())
    assert text == f"[oa-small] {PROMPT}"
    assert "".join(t.token for t in tokens) == text
    assert [len(t.top_logprobs) for t in tokens] == [1] * len(tokens)


async def test_a_cached_answer_keeps_its_logprobs(fake_upstream: FakeUpstream) -> None:
    async with open_protocol_env(fake_upstream, cache=True) as env:
        first, _ = await complete(env, logprobs=True)
        again, headers = await complete(env, logprobs=True)
        assert headers["x-llm-router-cache"] == "HIT"
        assert again.choices[0].logprobs == first.choices[0].logprobs

        stream = await env.openai.chat.completions.create(
            model="auto", messages=user(PROMPT), logprobs=True, stream=True
        )
        tokens = [t async for chunk in stream for c in chunk.choices
                  for t in (c.logprobs.content if c.logprobs else None) or ()]
        assert tokens == first.choices[0].logprobs.content
        assert len(requests_to(env, OA_SMALL)) == 1


# == Anthropic's own parameters ==================================================================


async def test_top_k_is_routed_to_a_backend_that_has_it(env: ProtocolEnv) -> None:
    # A plain prompt routes to tier 1 (OpenAI, whose API has no top_k): claude-mid serves it.
    raw = await env.anthropic.messages.with_raw_response.create(
        model="auto", max_tokens=64, messages=user(PROMPT),
        extra_body={"top_k": 7},  # this SDK takes sampling parameters only this way
    )
    message = await raw.parse()
    assert raw.headers["x-llm-router-model"] == "claude-mid"
    assert message.content[0].type == "text"
    assert requests_to(env, AN_MID)[-1]["top_k"] == 7
    assert not requests_to(env, OA_SMALL)


async def test_top_k_pinned_to_an_openai_model_is_a_400(env: ProtocolEnv) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        await env.anthropic.messages.create(
            model="gpt-small", max_tokens=64, messages=user(PROMPT), extra_body={"top_k": 7}
        )
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("top_k is not supported by model 'gpt-small'")
    assert not requests_to(env, OA_SMALL)


async def test_extended_thinking_pinned_to_an_openai_model_is_refused(env: ProtocolEnv
                                                                     ) -> None:
    # Served by Anthropic upstreams (tests/e2e/test_thinking.py), never dropped for others.
    with pytest.raises(anthropic.BadRequestError) as caught:
        await env.anthropic.messages.create(
            model="gpt-small", max_tokens=2048, messages=user(PROMPT),
            thinking={"type": "enabled", "budget_tokens": 1024},
        )
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["error"]["message"].startswith("thinking is not supported by model 'gpt-small'")
    assert not requests_to(env, OA_SMALL)


async def test_unsupported_openai_fields_are_refused(env: ProtocolEnv) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await complete(env, functions=[{"name": "f", "parameters": {"type": "object"}}])
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "functions"
    assert not requests_to(env, OA_SMALL)


# == tenancy =====================================================================================


def basic(user_name: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user_name}:{password}".encode()).decode()


async def test_basic_credentials_are_tenants(fake_upstream: FakeUpstream) -> None:
    # No server.api_keys: any credential is accepted, and each is its own cache tenant.
    async with (
        open_protocol_env(fake_upstream, cache=True) as env,
        httpx.AsyncClient(base_url=env.router.v1) as http,
    ):
        async def ask(authorization: str) -> str:
            response = await http.post(
                "/chat/completions", headers={"authorization": authorization},
                json={"model": "gpt-small", "messages": user("What is the capital of France?")},
            )
            assert response.status_code == 200, response.text
            return response.headers["x-llm-router-cache"]

        alice, bob = basic("alice", "pw-a"), basic("bob", "pw-b")
        assert await ask(alice) == "MISS"
        assert await ask(bob) == "MISS"  # another user: never alice's answer
        assert await ask(alice) == "HIT"
        assert await ask(bob) == "HIT"
        assert await ask("Token gateway-issued-1") == "MISS"  # any other scheme too
        assert len(requests_to(env, OA_SMALL)) == 3
        # The credential never goes upstream: the backend's own key does.
        assert {r.headers["authorization"] for r in env.fake.requests(OA_SMALL)} == {
            f"Bearer {UPSTREAM_KEYS[OA_SMALL]}"
        }


def test_tenant_of_credentials() -> None:
    # The same key is one tenant whichever header carries it (the two SDKs differ).
    assert tenant_of("k1", "") == tenant_of("", "Bearer k1") == tenant_of("k1", "Bearer k1")
    assert tenant_of("k1", "") != tenant_of("k2", "")
    assert tenant_of("", basic("a", "1")) != tenant_of("", basic("a", "2"))
    assert tenant_of("", basic("a", "1")) == tenant_of("", "basic " + basic("a", "1")[6:])
    assert tenant_of("k1", basic("a", "1")) not in {tenant_of("k1", ""),
                                                   tenant_of("", basic("a", "1"))}
    assert tenant_of("", "") == ""
    assert "k1" not in tenant_of("k1", "")  # a digest, not the key
    assert client_key("", basic("a", "1")) == ""
    assert client_key("", "bearer  k1 ") == "k1"
