"""Streaming behaviour, end to end: chunks are relayed as they arrive, streams carry the routing
headers, a client leaving cancels the upstream call, and an upstream failing mid-stream ends the
client's stream with an error in its own protocol, never with a clean-looking end.

Every fault is tried against both upstream protocols, since the failure is decoded on one side
of the router and rendered on the other.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
import trio
from support_protocols import (
    AN_MID,
    OA_SMALL,
    SDK_STREAM_LEAKS,
    ProtocolEnv,
    open_protocol_env,
    open_raw_stream,
    sse_events,
    user,
    wait_until_cancelled,
)

from engine.testing.fake_upstream import Behaviour, FakeUpstream

pytestmark = SDK_STREAM_LEAKS

BACKEND = {"gpt-small": OA_SMALL, "claude-mid": AN_MID}
UPSTREAMS = pytest.mark.parametrize("model", ["gpt-small", "claude-mid"])
FAULTS = pytest.mark.parametrize(
    "fault",
    [Behaviour(cut_after=2), Behaviour(error_event_after=2), Behaviour(endless_event_after=2)],
    ids=["cut_after", "error_event_after", "endless_event_after"],
)
ENDPOINTS = pytest.mark.parametrize("endpoint", ["openai", "anthropic"])
# Slow enough that buffering a whole stream would be obvious, fast enough to keep tests short.
SLOW = Behaviour(text="alpha beta gamma", chunk_delay=0.5)


@pytest.fixture
async def env(fake_upstream: FakeUpstream) -> AsyncIterator[ProtocolEnv]:
    async with open_protocol_env(fake_upstream) as env:
        yield env


def _body(endpoint: str, model: str, text: str) -> tuple[str, dict[str, Any]]:
    """The path and JSON body of a raw streaming request to ``endpoint``."""
    if endpoint == "openai":
        return "/chat/completions", {"model": model, "messages": user(text), "stream": True}
    body = {"model": model, "max_tokens": 64, "messages": user(text), "stream": True}
    return "/messages", body


# -- relayed as it arrives --------------------------------------------------------------------


async def _first_word(env: ProtocolEnv, client: str, model: str, prompt: str) -> str:
    """The first word of the answer as ``client`` receives it, and whether the upstream had
    finished sending by then: ``"alpha sending"`` or ``"alpha finished"``. The client reads
    its stream to the end (leaving early would leak the SDKs' generators)."""
    first = ""

    def seen(word: str) -> None:
        nonlocal first
        if not first:
            [record] = [r for r in env.fake.requests(BACKEND[model]) if prompt in str(r.body)]
            first = f"{word} {'finished' if record.completed else 'sending'}"

    if client == "openai":
        stream = await env.openai.chat.completions.create(
            model=model, messages=user(prompt), stream=True
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                seen(chunk.choices[0].delta.content.strip())
    elif client == "anthropic":
        async with env.anthropic.messages.stream(
            model=model, max_tokens=64, messages=user(prompt)
        ) as events:
            async for event in events:
                if event.type == "content_block_delta":
                    seen(event.delta.text.strip())  # type: ignore[union-attr]
    else:
        path, body = _body(client.removeprefix("raw-"), model, prompt)
        async with httpx.AsyncClient() as http, http.stream(
            "POST", env.router.v1 + path, json=body
        ) as response:
            received = b""
            async for piece in response.aiter_raw():
                received += piece
                if b"alpha" in received:
                    seen("alpha")
    return first


async def test_streams_are_relayed_chunk_by_chunk(env: ProtocolEnv) -> None:
    # The upstream spaces its events half a second apart: a router that waited for more (or
    # for the end) before relaying would hand the first word over only once the upstream had
    # finished. Every client (both SDKs, raw HTTP on both endpoints) from both upstream
    # protocols, all at once, so that the test costs one slow stream's time.
    for backend in BACKEND.values():
        env.fake.set_default(backend, SLOW)
    words: dict[tuple[str, str], str] = {}

    async def receive(client: str, model: str) -> None:
        # distinct prompts, so that no request can share another's upstream call
        words[client, model] = await _first_word(env, client, model, f"go {client} {model}")

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for client in ("openai", "anthropic", "raw-openai", "raw-anthropic"):
                for model in BACKEND:
                    nursery.start_soon(receive, client, model)
    assert len(words) == 8 and set(words.values()) == {"alpha sending"}, words


# -- headers ----------------------------------------------------------------------------------


async def test_openai_stream_carries_routing_headers(env: ProtocolEnv) -> None:
    raw = await env.openai.chat.completions.with_raw_response.create(
        model="auto", messages=user("hello stream"), stream=True
    )
    chunks = [chunk async for chunk in raw.parse()]

    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["x-llm-router-model"] == "gpt-small"
    assert raw.headers["x-llm-router-tier"] == "1"
    assert raw.headers["x-llm-router-score"].isdigit()
    assert raw.headers["x-llm-router-cache"] == "MISS"
    assert raw.headers["x-llm-router-request-id"]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "[oa-small] hello stream"


async def test_anthropic_stream_carries_routing_headers(env: ProtocolEnv) -> None:
    async with env.anthropic.messages.stream(
        model="claude-mid", max_tokens=64, messages=user("hello stream")
    ) as stream:
        headers = stream.response.headers
        final = await stream.get_final_message()

    assert headers["content-type"].startswith("text/event-stream")
    assert headers["x-llm-router-model"] == "claude-mid"
    assert headers["x-llm-router-tier"] == "2"
    assert headers["x-llm-router-score"].isdigit()
    assert headers["x-llm-router-cache"] == "MISS"
    assert headers["x-llm-router-request-id"]
    assert final.content[0].text == "[an-mid] hello stream"  # type: ignore[union-attr]


# -- client disconnect ------------------------------------------------------------------------


async def _backend_in_flight(env: ProtocolEnv, name: str) -> int:
    async with httpx.AsyncClient() as http:
        backends = (await http.get(env.router.v1 + "/backends")).json()
    [backend] = [b for b in backends if b["name"] == name]
    in_flight: int = backend["in_flight"]
    return in_flight


async def _wait_released(env: ProtocolEnv, model: str) -> None:
    with trio.fail_after(2):
        while await _backend_in_flight(env, model):
            await trio.sleep(0.02)


@UPSTREAMS
async def test_openai_client_leaving_cancels_the_upstream(env: ProtocolEnv, model: str) -> None:
    backend = BACKEND[model]
    env.fake.script(backend, Behaviour(text=" ".join(["word"] * 40), chunk_delay=0.05))
    stream = await env.openai.chat.completions.create(
        model=model, messages=user("a long answer"), stream=True
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    await stream.close()

    # 40 words at 0.05 s would take 2 s; the upstream call must end long before that.
    with trio.fail_after(1):
        await wait_until_cancelled(env.fake, backend)
    await _wait_released(env, model)


@UPSTREAMS
async def test_anthropic_client_leaving_cancels_the_upstream(env: ProtocolEnv, model: str) -> None:
    backend = BACKEND[model]
    env.fake.script(backend, Behaviour(text=" ".join(["word"] * 40), chunk_delay=0.05))
    async with env.anthropic.messages.stream(
        model=model, max_tokens=256, messages=user("a long answer")
    ) as stream:
        async for text in stream.text_stream:
            assert text
            break

    with trio.fail_after(1):
        await wait_until_cancelled(env.fake, backend)
    await _wait_released(env, model)


async def test_raw_client_leaving_cancels_the_upstream(env: ProtocolEnv) -> None:
    env.fake.script(OA_SMALL, Behaviour(text=" ".join(["word"] * 40), chunk_delay=0.05))
    path, body = _body("anthropic", "gpt-small", "a long answer")
    async with httpx.AsyncClient() as http:
        request = http.build_request("POST", env.router.v1 + path, json=body)
        response = await http.send(request, stream=True)
        assert response.status_code == 200
        await response.aclose()  # headers only, then gone

    with trio.fail_after(1):
        await wait_until_cancelled(env.fake, OA_SMALL)


async def test_a_client_leaving_before_the_first_byte_cancels_the_upstream(
    env: ProtocolEnv,
) -> None:
    # The upstream answers after 0.3 s, then takes 2 s to stream; the client leaves at 0.1 s.
    env.fake.script(OA_SMALL, Behaviour(latency=0.3, text=" ".join(["word"] * 40),
                                        chunk_delay=0.05))
    path, body = _body("openai", "gpt-small", "a long answer")
    async with httpx.AsyncClient() as http:
        with trio.move_on_after(0.1) as waited:
            await http.post(env.router.v1 + path, json=body)
        assert waited.cancelled_caught  # gone before the router could answer

    await wait_until_cancelled(env.fake, OA_SMALL)


async def test_clients_leaving_while_their_streams_run_are_not_internal_errors(
    fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture,
) -> None:
    # A client's channel closes before its cancellation reaches the task relaying its
    # stream; a task that was already running sends into the closed channel. Unshared
    # streams (dedup off) used to take that for a bug: an ERROR with a traceback and an
    # "internal_error" outcome, for a few of every 30 clients leaving at once.
    async with open_protocol_env(fake_upstream, dedup=False) as env:
        env.fake.set_default(OA_SMALL, Behaviour(text=" ".join(["word"] * 3000)))

        async def leave(i: int) -> None:
            path, body = _body("openai", "gpt-small", f"a long answer {i}")
            async with open_raw_stream(env.router.url, "/v1" + path, body) as client:
                assert client.head.startswith(b"HTTP/1.1 200")

        with caplog.at_level(logging.WARNING, logger="llm_router"):
            async with trio.open_nursery() as nursery:
                for i in range(40):
                    nursery.start_soon(leave, i)
            with trio.fail_after(5):
                await env.fake.wait_until_idle()
            await _wait_released(env, "gpt-small")
            async with httpx.AsyncClient() as http:
                recent = (await http.get(env.router.url + "/stats/recent")).json()
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
        outcomes = [r["status"] for r in recent["requests"]]
        assert outcomes == ["cancelled"] * 40


# -- a client that stops reading --------------------------------------------------------------

# 8 MiB of reply in 8 KiB words: far more than every buffer between the fake and a stalled
# client (the kernel's socket buffers on both connections, the router's stream buffer).
HUGE = ("x" * 8191 + " ") * 1024
HUGE_SSE = len(HUGE)  # the stream is longer on the wire (SSE framing)


@UPSTREAMS
async def test_a_client_that_stops_reading_is_disconnected_and_the_upstream_cancelled(
    fake_upstream: FakeUpstream, model: str
) -> None:
    backend = BACKEND[model]
    server = {"stream_write_timeout_sec": 1, "stream_buffer_bytes": 65536}
    async with open_protocol_env(fake_upstream, server=server) as env:
        env.fake.set_default(backend, Behaviour(text=HUGE))
        path, body = _body("openai", model, "a huge answer")
        async with open_raw_stream(env.router.url, "/v1" + path, body) as client:
            assert client.head.startswith(b"HTTP/1.1 200")
            # The client reads nothing more. The router must stop reading the upstream (not
            # read it to the end into memory), and once the client has taken nothing for the
            # write timeout, drop it and cancel the upstream call.
            with trio.fail_after(10):
                await env.fake.wait_until_idle()
            record = env.only_request(backend)
            assert record.cancelled and not record.completed
            assert record.sent_bytes < HUGE_SSE / 2
            with trio.fail_after(5):  # closed: what was in flight, then the end
                await client.read_to_end()
            assert client.closed
        events = client.events()
        assert events and events[-1][1] != "[DONE]"
        assert len(client.raw) < HUGE_SSE / 2
        await _wait_released(env, model)


# -- upstream failures mid-stream -------------------------------------------------------------


@FAULTS
@UPSTREAMS
async def test_openai_client_sees_an_error_when_the_upstream_fails_mid_stream(
    env: ProtocolEnv, model: str, fault: Behaviour
) -> None:
    env.fake.script(BACKEND[model], fault)
    stream = await env.openai.chat.completions.create(
        model=model, messages=user("one two three four five"), stream=True
    )
    pieces: list[str] = []
    finishes: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        async for chunk in stream:
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
                finishes += (
                    [chunk.choices[0].finish_reason] if chunk.choices[0].finish_reason else []
                )

    assert "".join(pieces).startswith("[")  # the first chunk reached the client first
    assert finishes == []  # it never looked finished
    assert not isinstance(caught.value, openai.APIStatusError)  # a 200 that failed later
    assert caught.value.message


@FAULTS
@UPSTREAMS
async def test_anthropic_client_sees_an_error_when_the_upstream_fails_mid_stream(
    env: ProtocolEnv, model: str, fault: Behaviour
) -> None:
    env.fake.script(BACKEND[model], fault)
    pieces: list[str] = []
    with pytest.raises(anthropic.APIError) as caught:
        async with env.anthropic.messages.stream(
            model=model, max_tokens=64, messages=user("one two three four five")
        ) as stream:
            async for text in stream.text_stream:
                pieces.append(text)

    assert "".join(pieces).startswith("[")  # the first chunk reached the client first
    assert caught.value.message


@FAULTS
@UPSTREAMS
@ENDPOINTS
async def test_a_failed_stream_never_looks_complete_on_the_wire(
    env: ProtocolEnv, endpoint: str, model: str, fault: Behaviour
) -> None:
    env.fake.script(BACKEND[model], fault)
    path, body = _body(endpoint, model, "one two three four five")
    async with (
        httpx.AsyncClient() as http,
        http.stream("POST", env.router.v1 + path, json=body) as response,
    ):
        raw = await response.aread()

    assert response.status_code == 200
    assert response.headers["x-llm-router-model"] == model
    events = sse_events(raw)
    *content, (name, error) = events
    assert raw.endswith(b"\n\n")  # the error event itself is complete
    if fault.endless_event_after is not None:  # given up after 16 MiB, not at a timeout
        assert "without a complete event" in error["error"]["message"]
    if endpoint == "openai":
        assert b"[DONE]" not in raw
        assert name == ""
        assert set(error) == {"error"} and error["error"]["message"]
        assert error["error"]["type"] == "server_error"
        assert any(c["choices"][0]["delta"].get("content") for _, c in content)
        assert all(c["choices"][0]["finish_reason"] is None for _, c in content)
    else:
        assert b"message_stop" not in raw and b"message_delta" not in raw
        assert name == "error"
        assert error["type"] == "error" and error["error"]["message"]
        assert error["error"]["type"] in ("api_error", "overloaded_error")
        assert any(data["type"] == "content_block_delta" for _, data in content)


@UPSTREAMS
@ENDPOINTS
async def test_a_complete_stream_ends_cleanly_on_the_wire(
    env: ProtocolEnv, endpoint: str, model: str
) -> None:
    # The control for the test above: the same request without a fault ends properly, once.
    path, body = _body(endpoint, model, "one two three four five")
    async with httpx.AsyncClient() as http:
        response = await http.post(env.router.v1 + path, json=body)

    assert response.status_code == 200
    raw = response.content
    events = sse_events(raw)
    if endpoint == "openai":
        assert raw.count(b"[DONE]") == 1 and events[-1] == ("", "[DONE]")
        assert events[-2][1]["choices"][0]["finish_reason"] == "stop"
    else:
        assert [name for name, _ in events].count("message_stop") == 1
        assert events[-1][0] == "message_stop"
        assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert not any(name == "error" or "error" in data for name, data in events[:-1])


@UPSTREAMS
async def test_a_stream_that_fails_before_its_first_chunk_is_an_http_error(
    env: ProtocolEnv, model: str
) -> None:
    env.fake.script(BACKEND[model], Behaviour(status=500), Behaviour(status=500))
    with pytest.raises(openai.APIStatusError) as openai_error:
        await env.openai.chat.completions.create(model=model, messages=user("x"), stream=True)
    with pytest.raises(anthropic.APIStatusError) as anthropic_error:
        async with env.anthropic.messages.stream(
            model=model, max_tokens=8, messages=user("x")
        ) as stream:
            await stream.get_final_message()

    assert openai_error.value.status_code == 502
    assert anthropic_error.value.status_code == 502
    assert openai_error.value.response.headers["x-llm-router-request-id"]
    assert not openai_error.value.response.headers["content-type"].startswith("text/event-stream")
