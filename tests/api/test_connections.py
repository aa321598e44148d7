"""Client connections over real sockets: how long the router waits for what.

``server.read_timeout_sec`` bounds reading a request's body, ``server.keep_alive_sec`` an idle
connection; neither cuts an answer that takes long to produce: the model's own ``timeouts``
end those, with an error in the caller's protocol. Connections the client closed are released
at once, and clients that hang up early leave no traceback in the log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
from router_harness import RunningRouter, make_config
from support_processes import fake_model, router_process
from support_routing import RouterClient, model_entry, open_router_client, user, wait_for

from api.http.app import create_app
from api.http.server import hypercorn_config, serve
from engine.testing.fake_upstream import Behaviour, FakeUpstream
from engine.wire.sse import decode_events

SHORT = {"read_timeout_sec": 1, "keep_alive_sec": 1}


@asynccontextmanager
async def router(fake: FakeUpstream, *, server: dict[str, Any], **model: Any
                 ) -> AsyncIterator[RouterClient]:
    async with open_router_client([model_entry(fake, "a1", tier=1, **model)],
                                  server=server) as client:
        yield client


async def connect(running: RunningRouter) -> trio.SocketStream:
    host, port = running.url.removeprefix("http://").rsplit(":", 1)
    return await trio.open_tcp_stream(host, int(port))


async def receive(stream: trio.SocketStream) -> bytes:
    """The next bytes, or b"" once the server has closed (or reset) the connection."""
    try:
        return bytes(await stream.receive_some(65536))
    except trio.BrokenResourceError:
        return b""


async def read_response(stream: trio.SocketStream) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a content-length: (status, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await receive(stream)
        assert chunk, f"closed without a complete response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    match = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
    assert match, head
    while len(body) < int(match[1]):
        chunk = await receive(stream)
        assert chunk, "closed in the middle of the body"
        body += chunk
    return int(head.split(b" ", 2)[1]), body


async def assert_closed_by_server(stream: trio.SocketStream, *, within: float) -> None:
    with trio.fail_after(within):
        while await receive(stream):
            pass


HEALTH = b"GET /health HTTP/1.1\r\nhost: router\r\n\r\n"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# ---- a long answer is not a slow request -------------------------------------------------------


async def test_a_json_answer_slower_than_the_read_timeout_arrives_whole(
    fake_upstream: FakeUpstream,
) -> None:
    async with router(fake_upstream, server=SHORT) as client:
        fake_upstream.set_default("a1", Behaviour(latency=1.5))

        async def openai_answer() -> None:
            response = await client.chat("take your time")
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["message"]["content"] == "[a1] take your time"

        async def anthropic_answer() -> None:
            response = await client.messages("take your time")
            assert response.status_code == 200, response.text
            assert response.json()["content"][0]["text"] == "[a1] take your time"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(openai_answer)
            nursery.start_soon(anthropic_answer)


async def test_a_stream_longer_than_the_read_timeout_arrives_whole(
    fake_upstream: FakeUpstream,
) -> None:
    async with router(fake_upstream, server=SHORT) as client:
        fake_upstream.set_default("a1", Behaviour(chunk_delay=0.2))
        response, events = await client.stream_chat("one two three four five")
        assert response.status_code == 200
        text = "".join(e["choices"][0]["delta"].get("content") or ""
                       for e in events if isinstance(e, dict) and e["choices"])
        assert text == "[a1] one two three four five"
        assert events[-1] == "[DONE]"


async def test_write_timeout_when_configured_caps_a_non_streamed_answer(
    fake_upstream: FakeUpstream,
) -> None:
    async with router(fake_upstream, server={"write_timeout_sec": 0.3}) as client:
        fake_upstream.set_default("a1", Behaviour(latency=1.0))
        response = await client.chat("too slow")
        assert response.status_code == 504, response.text
        error = response.json()["error"]
        assert error["code"] == "deadline_exceeded"
        assert "server.write_timeout_sec" in error["message"]


# ---- a stalled upstream ends in an error, in the caller's protocol -----------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_an_upstream_silent_past_the_read_timeout_gets_a_504(
    fake_upstream: FakeUpstream, stream: bool
) -> None:
    async with router(fake_upstream, server=SHORT, timeouts={"first_byte_sec": 1.5}) as client:
        fake_upstream.set_default("a1", Behaviour(hang=True))

        async def openai_error() -> None:
            response = await client.chat("anyone?", model="a1", stream=stream)
            assert response.status_code == 504, response.text
            assert response.headers["content-type"] == "application/json"
            assert response.json()["error"]["code"] == "upstream_timeout"

        async def anthropic_error() -> None:
            response = await client.messages("anyone?", model="a1", stream=stream)
            assert response.status_code == 504, response.text
            assert response.json()["error"]["type"] == "timeout_error"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(openai_error)
            nursery.start_soon(anthropic_error)


async def test_a_stream_stalled_past_the_read_timeout_ends_with_an_error_event(
    fake_upstream: FakeUpstream,
) -> None:
    async with router(fake_upstream, server=SHORT, timeouts={"idle_sec": 1.5}) as client:
        fake_upstream.set_default("a1", Behaviour(stall_after=1))

        async def openai_stream() -> None:
            response, events = await client.stream_chat("one two three")
            assert response.status_code == 200
            assert events[1]["choices"][0]["delta"]["content"] == "[a1] "
            assert events[-1]["error"]["code"] == "upstream_timeout"

        async def anthropic_stream() -> None:
            body = {"model": "auto", "max_tokens": 64, "stream": True,
                    "messages": user("one two three")}
            async with client.http.stream("POST", client.url + "/v1/messages", json=body) as sse:
                raw = (await sse.aread()).decode()
            assert sse.status_code == 200
            assert '"text":"[a1] "' in raw
            name, last = decode_events(raw.encode())[-1]
            assert name == "error", raw
            assert orjson.loads(last)["error"]["type"] == "timeout_error"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(openai_stream)
            nursery.start_soon(anthropic_stream)


# ---- slow requests and idle connections stay bounded -------------------------------------------


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_a_body_slower_than_the_read_timeout_gets_a_408(
    fake_upstream: FakeUpstream, path: str
) -> None:
    async with router(fake_upstream, server={"read_timeout_sec": 0.5}) as client:
        stream = await connect(client.router)
        head = (f"POST {path} HTTP/1.1\r\nhost: router\r\ncontent-type: application/json\r\n"
                "content-length: 64\r\n\r\n").encode()
        await stream.send_all(head)

        async def trickle() -> None:
            try:
                for _ in range(64):
                    await stream.send_all(b" ")
                    await trio.sleep(0.1)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle)
            with trio.fail_after(3):
                status, body = await read_response(stream)
            nursery.cancel_scope.cancel()
        await stream.aclose()
    assert status == 408, body
    if path == "/v1/messages":
        assert body.startswith(b'{"type":"error","error":{"type":"invalid_request_error"')
    else:
        assert b'"code":"request_timeout"' in body
    assert b"server.read_timeout_sec" in body


async def test_an_idle_connection_is_closed_after_keep_alive_sec(
    fake_upstream: FakeUpstream,
) -> None:
    async with router(fake_upstream, server={"keep_alive_sec": 0.3}) as client:
        silent = await connect(client.router)
        used = await connect(client.router)
        for _ in range(2):  # kept alive between requests
            await used.send_all(HEALTH)
            assert (await read_response(used))[0] == 200
        await assert_closed_by_server(silent, within=3)
        await assert_closed_by_server(used, within=3)
        await silent.aclose()
        await used.aclose()


async def test_a_connection_busy_longer_than_keep_alive_sec_is_kept_then_closed_when_idle(
    fake_upstream: FakeUpstream,
) -> None:
    body = orjson.dumps({"model": "a1", "messages": user("slow")})
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: router\r\n"
               b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
               + body)
    async with router(fake_upstream, server={"keep_alive_sec": 0.3}) as client:
        fake_upstream.set_default("a1", Behaviour(latency=1.0))
        stream = await connect(client.router)
        for _ in range(2):  # each answer takes longer than keep_alive_sec; kept alive between
            await stream.send_all(request)
            status, answer = await read_response(stream)
            assert status == 200, answer
        await assert_closed_by_server(stream, within=3)
        await stream.aclose()


async def test_idle_connections_are_closed_at_once_when_the_server_shuts_down(
    fake_upstream: FakeUpstream,
) -> None:
    config = make_config({"models": [model_entry(fake_upstream, "a1", tier=1)],
                          "server": {"keep_alive_sec": 60}})
    hc = hypercorn_config(config, host="127.0.0.1", port=0)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        (url,) = await nursery.start(partial(serve, create_app(config), hc,
                                             shutdown_trigger=stop.wait))
        host, port = url.removeprefix("http://").rsplit(":", 1)
        silent = await trio.open_tcp_stream(host, int(port))
        used = await trio.open_tcp_stream(host, int(port))
        await used.send_all(HEALTH)
        assert (await read_response(used))[0] == 200
        stop.set()
        # Long before keep_alive_sec, and before graceful_timeout (10 s) would cancel them.
        await assert_closed_by_server(silent, within=3)
        await assert_closed_by_server(used, within=3)
        await silent.aclose()
        await used.aclose()


@pytest.mark.parametrize("request_line", [
    b"POST /v1/chat/completions HTTP/1.1\r\nconnection: close\r\n",
    b"POST /v1/chat/completions HTTP/1.0\r\n",
], ids=["connection-close", "http-1.0"])
async def test_a_request_that_ends_its_connection_is_answered_then_closed(
    fake_upstream: FakeUpstream, request_line: bytes
) -> None:
    body = orjson.dumps({"model": "a1", "messages": user("bye")})
    async with router(fake_upstream, server={"keep_alive_sec": 60}) as client:
        stream = await connect(client.router)
        await stream.send_all(request_line + b"host: router\r\ncontent-type: application/json"
                              b"\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
        status, answer = await read_response(stream)
        assert status == 200, answer
        await assert_closed_by_server(stream, within=3)  # not after keep_alive_sec
        await stream.aclose()


async def test_headers_sent_slowly_are_cut_off_after_keep_alive_sec(
    fake_upstream: FakeUpstream,
) -> None:
    async with router(fake_upstream, server={"keep_alive_sec": 0.3}) as client:
        stream = await connect(client.router)
        await stream.send_all(b"GET /health HTTP/1.1\r\n")
        with trio.fail_after(3):
            try:
                for _ in range(100):
                    await stream.send_all(b"x")
                    await trio.sleep(0.05)
            except trio.BrokenResourceError:
                pass
            else:
                pytest.fail("the server kept reading a request that never ends")
        await stream.aclose()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd")
async def test_connections_the_client_closed_are_released_at_once(
    fake_upstream: FakeUpstream,
) -> None:
    async with router(fake_upstream, server={"keep_alive_sec": 30}) as client:
        baseline = open_fds()
        streams = []
        for n in range(40):
            stream = await connect(client.router)
            if n % 2:
                await stream.send_all(HEALTH)
                assert (await read_response(stream))[0] == 200
            streams.append(stream)
        with trio.fail_after(2):  # both ends are in this process: two descriptors each
            while open_fds() < baseline + 2 * len(streams):
                await trio.sleep(0.01)
        for stream in streams:
            await stream.aclose()
        with trio.fail_after(2):  # long before keep_alive_sec
            while open_fds() > baseline:
                await trio.sleep(0.01)


async def test_clients_hanging_up_on_a_413_leave_no_error_in_the_log(
    fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: router\r\n"
            b"content-type: application/json\r\ncontent-length: 52428800\r\n\r\n")
    statuses: list[bytes] = []
    async with router(fake_upstream, server={}) as client:

        async def hang_up_on_the_answer() -> None:
            stream = await connect(client.router)
            await stream.send_all(head)
            with trio.fail_after(5):
                statuses.append((await receive(stream))[:12])
            await stream.aclose()

        async with trio.open_nursery() as nursery:
            for _ in range(100):
                nursery.start_soon(hang_up_on_the_answer)
        assert (await client.request("GET", "/health")).status_code == 200
    assert statuses == [b"HTTP/1.1 413"] * 100
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors[0].getMessage()


async def test_a_413_read_while_the_body_is_still_sent_ends_its_request(
    fake_upstream: FakeUpstream, tmp_path: Path,
) -> None:
    """A client sends its whole body while it reads the answer, and hangs up on a 413 (as
    curl does without ``Expect: 100-continue``). The body's unread pieces filled the
    request's event queue, the stream's end waited for room there for ever, and the request
    (counted in flight) and its connection stayed open until the server stopped. A router
    process of its own: in this one, client and server would take turns on one event loop,
    and the server would read the body as fast as it came."""
    config = tmp_path / "router.yaml"
    config.write_bytes(orjson.dumps({
        "models": [fake_model(fake_upstream, "a1")],
        "server": {"max_body_bytes": 65536},
        "cache": {"enabled": False},
        "learned": {"model": None, "feedback_db": str(tmp_path / "feedback.db")},
        "state": {"path": str(tmp_path / "state.db")},
    }))
    body = b"x" * (8 * 1024 * 1024)
    statuses: list[bytes] = []
    async with router_process(config) as (_, url), httpx.AsyncClient() as http:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        for path in ("/v1/chat/completions", "/v1/messages", "/v1/workflows") * 4:
            stream = await trio.open_tcp_stream(host, int(port))
            head = (f"POST {path} HTTP/1.1\r\nhost: router\r\ncontent-type: "
                    f"application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode()

            async def upload(stream: trio.SocketStream = stream, head: bytes = head) -> None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.send_all(head)
                    for start in range(0, len(body), 65536):
                        await stream.send_all(body[start:start + 65536])

            async with trio.open_nursery() as nursery:
                nursery.start_soon(upload)
                with trio.fail_after(5):
                    statuses.append((await receive(stream))[:12])
                nursery.cancel_scope.cancel()
            await stream.aclose()

        async def none_in_flight() -> bool:
            metrics = await http.get(url + "/metrics")
            return "\nllm_router_in_flight_requests 0.0\n" in metrics.text

        await wait_for(none_in_flight, timeout=5, poll=0.05)
    assert statuses == [b"HTTP/1.1 413"] * 12
