"""The chat endpoints' lean path (``api.http.chat_front``) over real sockets: what the Quart
app did for a chat request, it does too: a client that leaves cancels the upstream call and
is logged as 499, a refused caller's body is never read, bodies come in pieces, and every
other spelling of the paths is still answered, by the Quart routes, the same way."""

from __future__ import annotations

import logging
from functools import partial

import httpx
import hypercorn.trio
import orjson
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from router_harness import make_config
from support_protocols import wait_until_cancelled
from support_routing import model_entry, open_router_client

from api.http.app import create_app
from api.http.server import hypercorn_config
from engine.testing.fake_upstream import Behaviour, FakeUpstream

PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}


def chat_body(protocol: str, text: str = "hi") -> bytes:
    body: dict[str, object] = {"model": "a1", "messages": [{"role": "user", "content": text}]}
    if protocol == "anthropic":
        body["max_tokens"] = 64
    return orjson.dumps(body)


def post(path: str, body: bytes, *, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nhost: router\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{extra}\r\n").encode() + body


async def connect(url: str) -> trio.SocketStream:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return await trio.open_tcp_stream(host, int(port))


def in_flight(metrics: str) -> float:
    return next(s.value for family in text_string_to_metric_families(metrics)
                for s in family.samples if s.name == "llm_router_in_flight_requests")


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_a_client_leaving_a_json_request_cancels_the_upstream_call(
    fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture, protocol: str,
) -> None:
    fake_upstream.script("a1", Behaviour(latency=5))  # far longer than the client waits
    caplog.set_level(logging.INFO, logger="llm_router.access")
    async with open_router_client([model_entry(fake_upstream, "a1", tier=1)],
                                  server={"access_log": True}) as client:
        stream = await connect(client.url)
        await stream.send_all(post(PATHS[protocol], chat_body(protocol)))
        with trio.fail_after(5):
            while not fake_upstream.requests("a1"):
                await trio.sleep(0.01)  # the call is upstream
        await stream.aclose()
        await wait_until_cancelled(fake_upstream, "a1")
        metrics = (await client.request("GET", "/metrics")).text
    assert in_flight(metrics) == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "llm_router.access"
             and r.getMessage().startswith(f"POST {PATHS[protocol]} ")]
    assert len(lines) == 1 and lines[0].startswith(f"POST {PATHS[protocol]} 499 "), lines


async def test_under_a_server_that_does_not_tell_the_client_left_a_task_watches(
    fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture,
) -> None:
    """Served by hypercorn's own ``serve`` (no ``api.http.client_gone`` in the scope), the
    client's leaving is seen by a task waiting for ``http.disconnect``: same cancel, same 499."""
    fake_upstream.script("a1", Behaviour(latency=5))
    caplog.set_level(logging.INFO, logger="llm_router.access")
    config = make_config({"models": [model_entry(fake_upstream, "a1", tier=1)],
                          "server": {"access_log": True}})
    app = create_app(config)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(
            hypercorn.trio.serve, app, hypercorn_config(config, host="127.0.0.1", port=0),
            shutdown_trigger=stop.wait))
        try:
            stream = await connect(binds[0])
            await stream.send_all(post(PATHS["openai"], chat_body("openai")))
            with trio.fail_after(5):
                while not fake_upstream.requests("a1"):
                    await trio.sleep(0.01)
            await stream.aclose()
            await wait_until_cancelled(fake_upstream, "a1")
        finally:
            stop.set()
    lines = [r.getMessage() for r in caplog.records if r.name == "llm_router.access"
             and r.getMessage().startswith(f"POST {PATHS['openai']} ")]
    assert len(lines) == 1 and lines[0].startswith(f"POST {PATHS['openai']} 499 "), lines


async def test_a_refused_caller_is_answered_without_waiting_for_its_body(
    fake_upstream: FakeUpstream,
) -> None:
    # The head promises a body that never comes: the credential is checked first.
    async with open_router_client([model_entry(fake_upstream, "a1", tier=1)],
                                  server={"api_keys": ["sk-the-right-key"]}) as client:
        stream = await connect(client.url)
        head = post(PATHS["openai"], b"", extra="authorization: Bearer sk-wrong\r\n")
        await stream.send_all(head.replace(b"content-length: 0", b"content-length: 500"))
        data = b""
        with trio.fail_after(5):
            while b'"code":"unauthorized"' not in data:
                chunk = await stream.receive_some(65536)
                assert chunk, data
                data += chunk
        await stream.aclose()
    assert data.startswith(b"HTTP/1.1 401 "), data


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_a_body_in_pieces_is_read_whole_and_one_too_large_refused(
    fake_upstream: FakeUpstream, protocol: str,
) -> None:
    async with open_router_client([model_entry(fake_upstream, "a1", tier=1)],
                                  server={"max_body_bytes": 2048}) as client:
        body = chat_body(protocol, "pieces " * 20)
        for payload, expected in ((body, 200), (body + b" " * 4096, 413)):
            stream = await connect(client.url)
            await stream.send_all(post(PATHS[protocol], b"", extra="transfer-encoding: chunked"
                                       "\r\nconnection: close\r\n").replace(
                                           b"content-length: 0\r\n", b""))
            data = b""

            async def send_pieces(payload: bytes = payload,
                                  stream: trio.SocketStream = stream) -> None:
                try:
                    for start in range(0, len(payload), 100):  # 100-byte chunks
                        piece = payload[start:start + 100]
                        await stream.send_all(b"%x\r\n%s\r\n" % (len(piece), piece))
                        await trio.sleep(0.001)
                    await stream.send_all(b"0\r\n\r\n")
                except trio.BrokenResourceError:
                    pass  # refused mid-body: the router closed the connection

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_pieces)
                with trio.fail_after(5):  # read while sending: the answer may come early
                    while chunk := await stream.receive_some(65536):
                        data += chunk
                nursery.cancel_scope.cancel()
            await stream.aclose()
            assert data.startswith(f"HTTP/1.1 {expected} ".encode()), data[:300]
            if expected == 413:
                assert b"request_too_large" in data
            else:
                assert b"[a1] pieces pieces" in data


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_other_spellings_of_the_paths_are_answered_alike(
    fake_upstream: FakeUpstream, protocol: str,
) -> None:
    async with open_router_client([model_entry(fake_upstream, "a1", tier=1)]) as client:
        lean = await client.request("POST", PATHS[protocol], content=chat_body(protocol))
        quart = await client.request("POST", "/" + PATHS[protocol], content=chat_body(protocol))
        bad = await client.request("POST", "/" + PATHS[protocol], content=b"{nope")
    assert isinstance(lean, httpx.Response) and isinstance(quart, httpx.Response)
    assert lean.status_code == quart.status_code == 200
    assert set(lean.headers) == set(quart.headers)
    for response in (lean, quart):
        reply = response.json()
        assert reply["model"] == "a1" and response.headers["x-llm-router-model"] == "a1"
        assert reply["id"].endswith(response.headers["x-request-id"])
    assert bad.status_code == 400
    if protocol == "anthropic":
        assert bad.json()["type"] == "error"
    else:
        assert bad.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("spelling", ["", "/"])
@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_a_body_refused_unread_ends_the_connection(
    fake_upstream: FakeUpstream, protocol: str, spelling: str,
) -> None:
    """Refused before its body was read (too large, or the caller refused), the answer says
    ``connection: close``: the rest of the body is still on its way, and a client that sent
    its next request behind it on the same connection would find the connection gone."""
    async with open_router_client([model_entry(fake_upstream, "a1", tier=1)],
                                  server={"max_body_bytes": 2048,
                                          "api_keys": ["sk-good"]}) as client:
        path = spelling + PATHS[protocol]
        good = {"authorization": "Bearer sk-good"}
        large = await client.request("POST", path, content=chat_body(protocol, "x" * 4096),
                                     headers=good)
        refused = await client.request("POST", path, content=chat_body(protocol),
                                       headers={"authorization": "Bearer sk-bad"})
        served = await client.request("POST", path, content=chat_body(protocol), headers=good)
    assert large.status_code == 413 and large.headers["connection"] == "close"
    assert refused.status_code == 401
    if not spelling:  # the lean path reads no body it refuses (Quart's reads every body whole)
        assert refused.headers["connection"] == "close"
    assert served.status_code == 200 and "connection" not in served.headers
