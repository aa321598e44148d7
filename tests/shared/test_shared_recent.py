"""The dashboard's recent requests, rate and latency (``GET /stats/recent``, and the
``/stats/events`` stream) of two real ``llm-router`` processes sharing one Redis: either
one shows the traffic of both, a process killed drops out, and with Redis gone each answers
with its own figures and says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio
from support_dashboard import events
from support_processes import fake_model, router_process, write_router_config
from support_redis import RedisServer
from support_routing import wait_for

from engine.testing.fake_upstream import FakeUpstream


def _config(folder: Path, fake: FakeUpstream, redis_url: str) -> Path:
    return write_router_config(folder, redis_url, [fake_model(fake, "m", price=0.001)])


async def _chat(http: httpx.AsyncClient, url: str, text: str, model: str = "m") -> int:
    response = await http.post(f"{url}/v1/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": text}]})
    return response.status_code


async def _recent(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    response = await http.get(url + "/stats/recent")
    assert response.status_code == 200, response.text
    return response.json()


async def _shows(http: httpx.AsyncClient, urls: list[str], requests: int, **fields: Any
                 ) -> list[dict[str, Any]]:
    """Every router's /stats/recent once each shows ``requests`` in its window and
    ``fields`` (each process publishes once a second)."""
    seen: list[dict[str, Any]] = []

    async def shown() -> bool:
        seen[:] = [await _recent(http, url) for url in urls]
        return all(s["window"]["requests"] == requests
                   and all(s[k] == v for k, v in fields.items()) for s in seen)

    try:
        await wait_for(shown, poll=0.1)
    except trio.TooSlowError:
        raise AssertionError([(s["window"], s["scope"], s.get("processes")) for s in seen]
                             ) from None
    return seen


async def test_either_process_shows_the_recent_requests_of_both(
    fake_upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path,
) -> None:
    async with (
        router_process(_config(tmp_path / "a", fake_upstream, redis_server.url)) as (_, a),
        router_process(_config(tmp_path / "b", fake_upstream, redis_server.url)) as (b_proc, b),
        httpx.AsyncClient(timeout=10) as http,
    ):
        for n in range(3):
            assert await _chat(http, a, f"to a {n}") == 200
        assert await _chat(http, b, "to b") == 200
        assert await _chat(http, b, "nothing", model="nope") == 404

        seen_a, seen_b = await _shows(http, [a, b], 5, scope="shared", processes=2)
        for seen in (seen_a, seen_b):
            assert seen["window"]["errors"] == 1
            assert [r["status"] for r in seen["requests"]].count("ok") == 4
            assert seen["requests"][0]["status"] == "model_not_found"  # B's last, newest
            assert sum(s["requests"] for s in seen["series"]) == 5
            assert seen["window"]["latency_ms"]["p50"] is not None

        # The stream of one shows the other's traffic too.
        async with events(a) as stream:
            assert await _chat(http, b, "to b again") == 200
            pushed = await stream.until(lambda s: s["recent"]["window"]["requests"] == 6)
        assert pushed["recent"]["scope"] == "shared"

        # A process killed drops out once its entry expires.
        b_proc.kill()
        await _shows(http, [a], 3, scope="shared", processes=1)

        # Redis gone: A answers from its own figures, and says so.
        redis_server.kill()
        [alone] = await _shows(http, [a], 3, scope="process")
        assert alone["processes"] == 1
        assert {r["status"] for r in alone["requests"]} == {"ok"}
        assert await _chat(http, a, "while Redis is down") == 200
        await _shows(http, [a], 4, scope="process")

        # Redis back (empty): A publishes again; nothing was lost from its own view.
        redis_server.start()
        await _shows(http, [a], 4, scope="shared", processes=1)
