"""A streamed chat whose client leaves after its handler returned but before the server
pulled the body's first chunk still ends: its upstream call is closed, it leaves the
in-flight gauge, and its access line is written.

That window is real with Quart-Trio on hypercorn: the client's ``http.disconnect`` cancels
the request's nursery; a cancellation requested in the same scheduler batch as the stream's
head arriving is delivered at the next checkpoint, which is the server's ``send`` of the
response start (hypercorn takes its send lock there). Quart has not entered the body yet, so
it never closes it, and an async generator that never started would not run its ``finally``
even if it were closed. Over a socket the window is hit by chance only (clients closing at
random moments around the head's arrival: about once in 200-400 streams), so the app is called
here through its ASGI interface, as hypercorn calls it: ``send`` of the response start is where
the client's disconnect is noticed (it waits until the cancellation lands)."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import orjson
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from support_routing import model_entry, open_router_client

from engine.testing.fake_upstream import Behaviour, FakeUpstream

ROUNDS = 5


def scope_of(path: str, body: bytes) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1", "method": "POST", "scheme": "http", "path": path,
        "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"router.test"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80), "extensions": {},
    }


async def leave_at_the_response_start(app: Any, path: str, body: bytes) -> list[str]:
    """Call ``app`` for one request whose client disconnects once the response starts,
    before any of its body is taken; the messages the app sent."""
    left = trio.Event()
    request_sent = False
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await left.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])
        if message["type"] == "http.response.start":
            left.set()
            await trio.sleep_forever()  # the write during which the disconnect lands

    with trio.fail_after(10):
        await app(scope_of(path, body), receive, send)
    return sent


def in_flight(text: str) -> float:
    return next(s.value for family in text_string_to_metric_families(text)
                for s in family.samples if s.name == "llm_router_in_flight_requests")


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"model": "auto", "stream": True,
                              "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/messages", {"model": "auto", "stream": True, "max_tokens": 64,
                      "messages": [{"role": "user", "content": "hi"}]}),
], ids=["openai", "anthropic"])
async def test_a_stream_left_before_its_body_is_pulled_is_ended(
    fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture, path: str,
    body: dict[str, Any],
) -> None:
    fake = fake_upstream
    fake.set_default("m", Behaviour(stall_after=1))  # a stream that goes on until closed
    caplog.set_level(logging.INFO, logger="llm_router.access")
    async with open_router_client([model_entry(fake, "m", tier=1)],
                                  server={"access_log": True}) as client:
        app = client.router.app
        for i in range(ROUNDS):
            # A question of its own each round: a round's flight may still be winding down
            # when the next one comes, and an identical request would join it (dedup).
            asked = body | {"messages": [{"role": "user", "content": f"hi {i}"}]}
            sent = await leave_at_the_response_start(app, path, orjson.dumps(asked))
            assert sent == ["http.response.start"]  # no byte of the body was taken
        with trio.fail_after(10):
            await fake.wait_until_idle()  # every upstream stream was closed
        metrics = await client.request("GET", "/metrics")
        assert isinstance(metrics, httpx.Response) and metrics.status_code == 200
    calls = fake.requests("m")
    assert len(calls) == ROUNDS and all(call.cancelled for call in calls)
    assert in_flight(metrics.text) == 0
    lines = [r for r in caplog.records if r.name == "llm_router.access"
             and r.getMessage().startswith(f"POST {path} ")]
    assert len(lines) == ROUNDS
