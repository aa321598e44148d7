"""Configured secrets never leave the router, whatever an upstream does with them.

The upstream (the fake) puts a provider key where providers put text: an error body (4xx/5xx),
an error event mid-stream (both formats), an Anthropic-style error answered with status 200,
and the answer itself, streamed in deltas that cut through the key or not. The key comes whole,
upper-cased, split in two, after 290 other characters (where a 300-character cut used to leave
part of it), glued to other text, and next to the router's own client key. Nothing a client can
see (bodies, error events, ``GET /v1/backends``, ``/stats``) nor the log may then hold the key,
nor any 8 consecutive characters of it, in any case. A key's public prefix (``sk-ant-api03-``)
is not secret and may show.

The OpenAI-protocol backend's key has no ``sk-`` prefix and no shape a pattern would know, so
only the scrub of configured secrets can catch it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from support_protocols import SDK_STREAM_LEAKS, sse_events
from support_routing import RouterClient, Seen, model_entry, open_router_client, user

from engine.testing.fake_upstream import Behaviour, FakeUpstream

ANTHROPIC_KEY = (
    "sk-ant-api03-Jx7Qm2Vt9Lp4Rw8Zk3Nc6Hb1Fy5Ds0GaUe4Yi8Oo2Pq7Kr3Mt9Wv6Xs1Bz5Ch0Dn4Ej8Fl2Gk7"
    "Hm3Iq9Jr6Ks1Lt5Mu0Nv4Ow8Px2-Qy3AA"
)
OPENAI_KEY = "relay.7Hq3xV9p.Lw2Zt8Kc.Rn4Fy6Jd.Bs1Mg5Qa"
CLIENT_KEY = "router.Tk5Wd8.Ym3Qa7.Pc2Vn9"
SECRETS = (ANTHROPIC_KEY, OPENAI_KEY, CLIENT_KEY)
PUBLIC_PREFIX = "sk-ant-api03-"

# backend name -> (provider, its key)
UPSTREAMS = {"claude": ("anthropic", ANTHROPIC_KEY), "relay": ("openai", OPENAI_KEY)}
BACKENDS = pytest.mark.parametrize("backend", list(UPSTREAMS))

LEAKS: dict[str, Callable[[str], str]] = {
    "whole": lambda key: f"overloaded, key={key}",
    "upper-cased": lambda key: f"overloaded, KEY={key.upper()}",
    "split in two": lambda key: f"overloaded: {key[: len(key) // 2]} / {key[len(key) // 2 :]}",
    "after 290 characters": lambda key: "x" * 290 + key,
    "glued to text": lambda key: f"overloaded{key}retry",
    "with the client key": lambda key: f"caller {CLIENT_KEY} used {key}",
}
# Where the summary still shows a marker (the 290-character message is cut before it).
MARKED = [name for name in LEAKS if name != "after 290 characters"]


def fragments(secret: str) -> list[str]:
    """Every 8 consecutive characters of ``secret`` that reach past its public prefix."""
    public = len(PUBLIC_PREFIX) if secret.startswith(PUBLIC_PREFIX) else 0
    low = secret.lower()
    return [low[i : i + 8] for i in range(len(low) - 7) if i + 8 > public]


def assert_no_secret(text: str, where: str) -> None:
    low = text.lower()
    for secret in SECRETS:
        found = [piece for piece in fragments(secret) if piece in low]
        assert not found, f"{where} shows {found[0]!r} of a secret: {text[:400]!r}"


@pytest.fixture
async def client(
    fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[RouterClient]:
    caplog.set_level(logging.DEBUG)
    models = [
        model_entry(fake_upstream, name, tier=1, provider=provider, api_key=key)
        for name, (provider, key) in UPSTREAMS.items()
    ]
    async with open_router_client(models, server={"api_keys": [CLIENT_KEY]}) as running:
        running.http.headers["authorization"] = f"Bearer {CLIENT_KEY}"
        yield running
        # Whatever the test did: nothing the router showed or logged holds a secret.
        running.seen.append(await _get(running, "/v1/backends"))
        running.seen.append(await _get(running, "/stats"))
        for seen in running.seen:
            assert_no_secret(seen.text, "a response")
            assert_no_secret(str(seen.headers), "a response header")
    assert_no_secret(caplog.text, "the log")


async def _get(client: RouterClient, path: str) -> Any:
    response = await client.request("GET", path)
    assert response.status_code == 200
    return client.seen.pop()


async def recover(client: RouterClient, fake: FakeUpstream, backend: str) -> None:
    """One good answer, so repeated failures never take the pinned backend down."""
    fake.script(backend, Behaviour(text="fine"))
    assert (await client.chat(model=backend)).status_code == 200


async def detail_of(client: RouterClient, backend: str) -> str:
    detail = (await client.backends())[backend]["detail"]
    assert isinstance(detail, str)
    return detail


def error_message(response: httpx.Response) -> str:
    message: str = response.json()["error"]["message"]
    return message


# ---- upstream error text ----------------------------------------------------------------------


@BACKENDS
@pytest.mark.parametrize("status", [500, 400])
async def test_an_error_body_is_summarised_without_the_key(
    fake_upstream: FakeUpstream, client: RouterClient, backend: str, status: int
) -> None:
    key = UPSTREAMS[backend][1]
    for name, leak in LEAKS.items():
        for ask in (client.chat, client.messages):
            fake_upstream.script(backend, Behaviour(status=status, error_message=leak(key)))
            response = await ask(model=backend)
            assert response.status_code == (502 if status == 500 else 400), response.text
            message = error_message(response)
            assert message.startswith(f"{backend} answered {status}: "), message
            assert len(message) < 300
            if name in MARKED:
                assert "[redacted]" in message, message
                assert "overloaded" in message or "caller" in message
                assert "[redacted]" in await detail_of(client, backend)
            if status == 500:
                await recover(client, fake_upstream, backend)


@BACKENDS
async def test_an_error_event_mid_stream_is_summarised_without_the_key(
    fake_upstream: FakeUpstream, client: RouterClient, backend: str
) -> None:
    key = UPSTREAMS[backend][1]
    for name, leak in LEAKS.items():
        for path in ("/v1/chat/completions", "/v1/messages"):
            fake_upstream.script(
                backend, Behaviour(text="one two three", error_event_after=1,
                                   error_message=leak(key)),
            )
            body = {"model": backend, "max_tokens": 64, "messages": user("hi"), "stream": True}
            async with client.http.stream("POST", client.url + path, json=body) as response:
                raw = (await response.aread()).decode()
            client.seen.append(Seen(response.status_code, response.headers, raw))
            assert response.status_code == 200
            errors = [data for _, data in sse_events(raw.encode())
                      if isinstance(data, dict) and "error" in data]
            assert len(errors) == 1, raw
            message = errors[0]["error"]["message"]
            assert message.startswith(f"{backend}: upstream stream failed: "), message
            if name in MARKED:
                assert "[redacted]" in message, message
                assert "[redacted]" in await detail_of(client, backend)
            await recover(client, fake_upstream, backend)


@BACKENDS
async def test_an_error_answered_with_200_is_an_error_without_the_key(
    fake_upstream: FakeUpstream, client: RouterClient, backend: str
) -> None:
    key = UPSTREAMS[backend][1]
    for name, leak in LEAKS.items():
        for ask in (client.chat, client.messages):
            fake_upstream.script(backend, Behaviour(error_with_200=True, error_message=leak(key)))
            response = await ask(model=backend)
            assert response.status_code == 502, response.text
            message = error_message(response)
            assert message.startswith(f"{backend}: upstream sent an error: "), message
            if name in MARKED:
                assert "[redacted]" in message, message
            await recover(client, fake_upstream, backend)


# ---- answers ----------------------------------------------------------------------------------


@BACKENDS
async def test_an_answer_holding_the_key_is_relayed_without_it(
    fake_upstream: FakeUpstream, client: RouterClient, backend: str
) -> None:
    key = UPSTREAMS[backend][1]
    for name, leak in LEAKS.items():
        fake_upstream.script(backend, Behaviour(text=f"here: {leak(key)}"),
                             Behaviour(text=f"here: {leak(key)}"))
        openai_style = (await client.chat(model=backend)).json()
        text = openai_style["choices"][0]["message"]["content"]
        anthropic_style = (await client.messages(model=backend)).json()
        assert anthropic_style["content"][0]["text"] == text
        assert text.startswith("here: ")
        if name in MARKED:
            assert "[redacted]" in text, text
        assert_no_secret(text, name)


async def test_every_choice_of_an_answer_is_relayed_without_the_key(
    fake_upstream: FakeUpstream, client: RouterClient
) -> None:
    """``n: 2`` to an OpenAI-protocol upstream: the second choice is scrubbed as the first."""
    fake_upstream.script("relay", Behaviour(text=f"here: {OPENAI_KEY}"))
    answer = await client.chat(model="relay", n=2)
    assert answer.status_code == 200, answer.text
    choices = answer.json()["choices"]
    assert [choice["index"] for choice in choices] == [0, 1]
    for choice in choices:
        text = choice["message"]["content"]
        assert "[redacted]" in text, text
        assert_no_secret(text, "whole")


async def test_the_log_probabilities_of_a_scrubbed_answer_are_not_relayed(
    fake_upstream: FakeUpstream, client: RouterClient
) -> None:
    """Each token's log probability carries the token's text: joined, they would spell out
    the key the answer's text lost. A scrubbed answer comes without them; a clean one keeps
    them."""
    fake_upstream.script("relay", Behaviour(text=f"here: {OPENAI_KEY}"),
                         Behaviour(text="nothing secret here"))
    scrubbed = (await client.chat(model="relay", logprobs=True)).json()["choices"][0]
    assert "[redacted]" in scrubbed["message"]["content"]
    assert scrubbed["logprobs"] is None
    assert_no_secret(orjson.dumps(scrubbed).decode(), "whole")
    clean = (await client.chat(model="relay", logprobs=True)).json()["choices"][0]
    tokens = [entry["token"] for entry in clean["logprobs"]["content"]]
    assert "".join(tokens).strip() == clean["message"]["content"].strip()


@BACKENDS
@pytest.mark.parametrize("delta_chars", [None, 4, 7, 13])
async def test_a_streamed_answer_holding_the_key_is_relayed_without_it(
    fake_upstream: FakeUpstream, client: RouterClient, backend: str, delta_chars: int | None
) -> None:
    """Deltas cut through the key: once its first 8 characters are in, the rest is hidden;
    what went out before is shorter than a fragment."""
    key = UPSTREAMS[backend][1]
    for name, leak in LEAKS.items():
        said = f"here: {leak(key)} end"
        fake_upstream.script(backend, Behaviour(text=said, text_delta_chars=delta_chars),
                             Behaviour(text=said, text_delta_chars=delta_chars))
        texts = []
        for path in ("/v1/chat/completions", "/v1/messages"):
            body = {"model": backend, "max_tokens": 64, "messages": user("hi"), "stream": True}
            async with client.http.stream("POST", client.url + path, json=body) as response:
                raw = (await response.aread()).decode()
            client.seen.append(Seen(response.status_code, response.headers, raw))
            assert response.status_code == 200
            texts.append(_streamed_text(raw))
        assert texts[0] == texts[1]
        assert texts[0].startswith("here: ") and texts[0].endswith(" end"), texts[0]
        assert "[redacted]" in texts[0]
        assert_no_secret(texts[0], f"{name} streamed in pieces of {delta_chars}")


def _streamed_text(raw: str) -> str:
    pieces = []
    for _, data in sse_events(raw.encode()):
        if not isinstance(data, dict):
            continue
        for choice in data.get("choices") or ():
            pieces.append(choice["delta"].get("content") or "")
        if data.get("type") == "content_block_delta":
            pieces.append(data["delta"].get("text") or "")
    return "".join(pieces)


# ---- through the SDKs -------------------------------------------------------------------------


@SDK_STREAM_LEAKS
@BACKENDS
async def test_the_sdks_see_no_key(
    fake_upstream: FakeUpstream, client: RouterClient, backend: str
) -> None:
    key = UPSTREAMS[backend][1]
    leak = LEAKS["split in two"](key)
    seen: list[str] = []  # everything the SDKs made of the answers

    def saw(error: openai.APIError | anthropic.APIError, *, whole_body: bool = True) -> None:
        seen.extend([str(error), orjson.dumps(error.body).decode()])
        if whole_body:
            assert isinstance(error, openai.APIStatusError | anthropic.APIStatusError)
            seen.append(error.response.text)
        assert "[redacted]" in str(error), error

    async with (
        openai.AsyncOpenAI(base_url=client.router.v1, api_key=CLIENT_KEY, max_retries=0,
                           http_client=openai.DefaultAsyncHttpxClient(verify=False)) as oai,
        anthropic.AsyncAnthropic(base_url=client.url, api_key=CLIENT_KEY, max_retries=0,
                                 http_client=anthropic.DefaultAsyncHttpxClient(verify=False)
                                 ) as claude,
    ):
        for fault in (Behaviour(status=500, error_message=leak),
                      Behaviour(error_with_200=True, error_message=leak)):
            fake_upstream.script(backend, fault, fault)
            with pytest.raises(openai.InternalServerError) as oai_error:
                await oai.chat.completions.create(model=backend, messages=user("hi"))
            saw(oai_error.value)
            with pytest.raises(anthropic.InternalServerError) as claude_error:
                await claude.messages.create(model=backend, max_tokens=64, messages=user("hi"))
            saw(claude_error.value)
            await recover(client, fake_upstream, backend)

        fault = Behaviour(text="one two three", error_event_after=1, error_message=leak)
        fake_upstream.script(backend, fault, fault)
        stream = await oai.chat.completions.create(model=backend, messages=user("hi"),
                                                   stream=True)
        with pytest.raises(openai.APIError) as oai_event:
            async for chunk in stream:
                seen.extend(c.delta.content or "" for c in chunk.choices)
        saw(oai_event.value, whole_body=False)
        with pytest.raises(anthropic.APIError) as claude_event:
            async with claude.messages.stream(model=backend, max_tokens=64,
                                              messages=user("hi")) as events:
                async for text in events.text_stream:
                    seen.append(text)
        saw(claude_event.value, whole_body=False)
        await recover(client, fake_upstream, backend)

        answer = Behaviour(text=f"here: {leak}", text_delta_chars=5)
        fake_upstream.script(backend, answer, answer, answer, answer)
        done = await oai.chat.completions.create(model=backend, messages=user("hi"))
        seen.append(done.choices[0].message.content or "")
        message = await claude.messages.create(model=backend, max_tokens=64,
                                               messages=user("hi"))
        seen.append(message.content[0].text)  # type: ignore[union-attr]
        stream = await oai.chat.completions.create(model=backend, messages=user("hi"),
                                                   stream=True)
        seen.append("".join([c.choices[0].delta.content or "" async for c in stream
                             if c.choices]))
        async with claude.messages.stream(model=backend, max_tokens=64,
                                          messages=user("hi")) as events:
            seen.append(await events.get_final_text())

    assert all(text.startswith("here: ") and "[redacted]" in text for text in seen[-4:]), seen
    for text in seen:
        assert_no_secret(text, "an SDK")


# ---- logs -------------------------------------------------------------------------------------


async def test_the_access_log_hides_a_key(
    fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    """The access line of a request carrying a key (in its path, its query string, its
    referrer) shows none of it: the path is scrubbed, the query and headers are not logged."""
    caplog.set_level(logging.INFO, logger="llm_router.access")
    models = [model_entry(fake_upstream, "relay", tier=1, api_key=OPENAI_KEY)]
    server = {"api_keys": [CLIENT_KEY], "access_log": True}
    async with open_router_client(models, server=server) as client:
        response = await client.request(
            "GET", f"/v1/models/{CLIENT_KEY}?key={CLIENT_KEY}",
            headers={"referer": f"https://app.example/chat?key={CLIENT_KEY}"})
        assert response.status_code == 401
    lines = [r for r in caplog.records if r.name == "llm_router.access"]
    assert len(lines) == 1
    out = lines[0].getMessage() + repr(lines[0].fields)  # type: ignore[attr-defined]
    assert out.startswith("GET /v1/models/[redacted] 401 "), out
    assert_no_secret(out, "the access log")
