"""Upstream keep-alive connections expire when idle. End to end: the router, a relay that
counts the connections it opens to the fake upstream (and which side closed each), a relay
that holds the fake's answers so a burst is under way all at once, and the fake upstream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import orjson
import pytest
import trio
from support_connections import CountingRelay, open_counting_relay
from support_hold_relay import HoldRelay, open_hold_relay
from support_routing import (
    RouterClient,
    model_entry,
    open_router_client,
    provider_key,
    wait_for,
)

from engine.testing.fake_upstream import Behaviour, FakeUpstream


async def burst(client: RouterClient, relay: HoldRelay, n: int = 8) -> None:
    """``n`` requests at once, every answer held until all ``n`` are under way together."""
    relay.hold()
    responses: list[Any] = []

    async def ask(i: int) -> None:
        responses.append(await client.chat(f"burst {i}"))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(partial(ask, i))
            await relay.wait_held(n)
            relay.release()
    assert [r.status_code for r in responses] == [200] * n


@asynccontextmanager
async def open_relayed_router(fake: FakeUpstream, expiry: float
                              ) -> AsyncIterator[tuple[RouterClient, CountingRelay, HoldRelay]]:
    """A router whose one model ``a1`` reaches the fake through a counting relay, then a
    holding one; its upstream connections expire after ``expiry`` seconds idle."""
    async with open_hold_relay(fake) as held, open_counting_relay(held.url) as counted:
        models = [model_entry(fake, "a1", tier=1, base_url=f"{counted.url}/a1/v1")]
        async with open_router_client(models, upstream={"keepalive_expiry_sec": expiry}
                                      ) as client:
            yield client, counted, held


async def test_idle_upstream_connections_are_kept_for_reuse_until_they_expire(
    fake_upstream: FakeUpstream,
) -> None:
    """An expiry far longer than the test: a second burst reuses the first one's connections."""
    async with open_relayed_router(fake_upstream, 3600) as (client, relay, held):
        await burst(client, held)
        assert relay.open == relay.opened == 8  # one connection per concurrent request
        await burst(client, held)
        assert relay.open == relay.opened == 8  # the same eight again
        assert relay.closed_by_client == 0


async def test_idle_upstream_connections_are_closed_after_the_keepalive_expiry(
    fake_upstream: FakeUpstream,
) -> None:
    """The fake (hypercorn) keeps an idle connection for 5 s; here the router's expiry is
    shorter and the relay sees the router close every connection itself."""
    async with open_relayed_router(fake_upstream, 0.3) as (client, relay, held):
        await burst(client, held)
        assert relay.opened == 8  # one connection per concurrent request

        async def all_closed() -> bool:
            return relay.open == 0

        await wait_for(all_closed)
        assert relay.closed_by_client == 8  # the router's expiry, not the server's

        # A request after the expiry opens a fresh connection and is answered.
        assert (await client.chat("later")).status_code == 200
        assert relay.opened == 9


async def test_an_upstream_request_carries_what_an_http_client_would_send(
    fake_upstream: FakeUpstream,
) -> None:
    async with open_router_client([model_entry(fake_upstream, "a1", tier=1)]) as client:
        assert (await client.chat("headers, please")).status_code == 200
    [record] = fake_upstream.requests("a1")
    host, port = fake_upstream.url.removeprefix("http://").split("/")[0].rsplit(":", 1)
    sent = record.headers
    assert sent["host"] == f"{host}:{port}"
    assert sent["authorization"] == f"Bearer {provider_key('a1')}"
    assert sent["content-type"] == "application/json"
    assert int(sent["content-length"]) == len(orjson.dumps(record.body))
    assert (sent["accept"], sent["accept-encoding"], sent["user-agent"]) == (
        "*/*", "gzip, deflate", "llm-router")


@pytest.mark.parametrize("encoding", [None, "gzip"])
async def test_a_connection_read_to_its_end_is_reused(fake_upstream: FakeUpstream,
                                                      encoding: str | None) -> None:
    """Answers and streams one after another, plain or compressed, all over one connection:
    each body read to its end hands its connection back."""
    fake_upstream.set_default("a1", Behaviour(content_encoding=encoding))
    async with open_relayed_router(fake_upstream, 3600) as (client, relay, _):
        for i in range(3):
            assert (await client.chat(f"answer {i}")).status_code == 200
            response, events = await client.stream_chat(f"stream {i}")
            assert response.status_code == 200 and events[-1] == "[DONE]"
        assert relay.opened == 1 and relay.open == 1


@pytest.mark.parametrize("timeouts, stream", [
    ({"connect_sec": 0.3}, False),
    # A stream's first-byte deadline covers its wait for a connection: shorter than
    # connect_sec, the wait must still end as busy, not as the backend's timeout.
    ({"first_byte_sec": 0.4}, True),
], ids=["json", "stream-first-byte"])
async def test_a_host_with_every_connection_in_use_is_busy_not_failing(
    fake_upstream: FakeUpstream, timeouts: dict[str, float], stream: bool,
) -> None:
    """``upstream.max_connections_per_origin`` caps the connections to one host. A request
    that finds them all in use waits for one (``connect_sec``), then fails over, or gets a
    503 ``upstream_busy`` if pinned; the backend's health is not touched, since the limit is
    the router's own. Two held calls to a0 fill the host a0 and a1 share; a2 is on another."""
    async with open_hold_relay(fake_upstream) as held:
        models = [
            model_entry(fake_upstream, "a1", tier=1, base_url=held.base_url("a1", "openai"),
                        timeouts=timeouts),
            model_entry(fake_upstream, "a2", tier=2),
            model_entry(fake_upstream, "a0", tier=3, base_url=held.base_url("a0", "openai")),
        ]
        async with open_router_client(models, upstream={"max_connections_per_origin": 2}
                                      ) as client:
            held.hold()
            answers: list[Any] = []
            async with trio.open_nursery() as nursery:
                for i in range(2):
                    nursery.start_soon(
                        lambda i=i: _append(answers, client.chat(f"held {i}", model="a0")))
                await held.wait_held(2)

                pinned = await client.chat("a call for a1", model="a1", stream=stream)
                assert pinned.status_code == 503
                error = pinned.json()["error"]
                assert error["code"] == "upstream_busy"
                assert "max_connections_per_origin" in error["message"]
                assert pinned.headers["retry-after"] == "1"

                routed = await client.chat("hello", stream=stream)  # tier 1: a1, then a2
                assert routed.status_code == 200
                assert routed.headers["x-llm-router-model"] == "a2"

                backends = {b["name"]: b for b in
                            (await client.request("GET", "/v1/backends")).json()}
                assert backends["a1"]["status"] == "healthy"
                assert backends["a1"]["last_error"] is None
                assert (backends["a0"]["in_flight"], backends["a1"]["in_flight"]) == (2, 0)
                held.release()
            assert [a.status_code for a in answers] == [200, 200]
            assert fake_upstream.requests("a1") == []  # the busy calls never reached it


async def _append(answers: list[Any], call: Any) -> None:
    answers.append(await call)
