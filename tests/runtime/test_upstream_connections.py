"""Upstream keep-alive connections expire when idle. End to end: the router, a relay that
counts the connections it opens to the fake upstream, and the fake upstream itself.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import orjson
import trio
from support_connections import open_counting_relay
from support_routing import model_entry, open_router_client, provider_key, wait_for

from engine.testing.fake_upstream import Behaviour, FakeUpstream

EXPIRY = 0.3


async def test_idle_upstream_connections_are_closed_after_the_keepalive_expiry(
    fake_upstream: FakeUpstream,
) -> None:
    fake_upstream.set_default("a1", Behaviour(latency=0.2))  # so the burst overlaps
    async with open_counting_relay(fake_upstream.url) as relay:
        models = [model_entry(fake_upstream, "a1", tier=1, base_url=f"{relay.url}/a1/v1")]
        async with open_router_client(
            models, upstream={"keepalive_expiry_sec": EXPIRY}
        ) as client:
            responses: list[Any] = []

            async def ask(i: int) -> None:
                responses.append(await client.chat(f"burst {i}"))

            async with trio.open_nursery() as nursery:
                for i in range(8):
                    nursery.start_soon(partial(ask, i))
            assert [r.status_code for r in responses] == [200] * 8
            assert relay.open == relay.opened == 8  # one connection per concurrent request
            await trio.sleep(EXPIRY / 2)
            assert relay.open == 8  # kept alive for reuse while not yet expired

            # The server keeps idle connections for 5 s (hypercorn's default): anything
            # closed sooner was closed by the router's expiry.
            async def all_closed() -> bool:
                return relay.open == 0

            await wait_for(all_closed, timeout=2.0)

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
