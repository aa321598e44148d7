"""``GET /metrics`` of two real ``llm-router`` processes sharing one Redis: either one shows
the traffic of both (counters, histograms, workflow runs, and the gauges of the processes
alive), and says when it shows its own alone (Redis down)."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families
from support_processes import fake_model, two_routers, write_router_config
from support_redis import RedisServer
from support_routing import wait_for

from engine.testing.fake_upstream import Behaviour, FakeUpstream

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
REQUESTS = "llm_router_requests_total"


def write_config(folder: Path, fake: FakeUpstream, redis_url: str) -> Path:
    return write_router_config(
        folder, redis_url,
        [fake_model(fake, name, price=price) for name, price in (("cheap", 0.001), ("dear", 0.01))],
        health={"probe_interval_sec": 300, "max_probe_interval_sec": 600})


async def scrape(http: httpx.AsyncClient, url: str) -> Samples:
    response = await http.get(url + "/metrics")
    assert response.status_code == 200, response.text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def chat(http: httpx.AsyncClient, url: str, model: str = "auto") -> int:
    response = await http.post(f"{url}/v1/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": "hi"}]})
    return response.status_code


async def both_show(http: httpx.AsyncClient, a: str, b: str, name: str, want: float,
                    **labels: str) -> tuple[Samples, Samples]:
    """A's and B's metrics once both show ``want`` for one sample (each process writes its
    totals every 0.25 s)."""
    seen: list[Samples] = []

    async def shown() -> bool:
        seen[:] = [await scrape(http, a), await scrape(http, b)]
        return all(value(s, name, **labels) == want for s in seen)

    try:
        await wait_for(shown, poll=0.05)
    except trio.TooSlowError:
        raise AssertionError(f"{name} {labels}: A and B show "
                             f"{[value(s, name, **labels) for s in seen]}, not {want}: "
                             f"{[{k: v for k, v in s.items() if k[0] == name} for s in seen]}"
                             ) from None
    return seen[0], seen[1]


async def test_either_process_shows_the_traffic_of_both(
    fake_upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path,
) -> None:
    fake = fake_upstream
    async with two_routers(tmp_path, write_config, fake, redis_server.url) as (a, b, http):
        # B's first call goes to cheap (untried, the lower price), and fails over.
        fake.script("cheap", Behaviour(status=500))
        assert await chat(http, b) == 200
        for _ in range(3):
            assert await chat(http, a) == 200
        for _ in range(2):
            assert await chat(http, b) == 200
        assert await chat(http, a, model="nope") == 404
        workflow = "ops:\n  one: {prompt: 'Hello.'}\n"
        done = await http.post(b + "/v1/workflows", json={"input": "x", "workflow": workflow})
        assert done.status_code == 200, done.text

        await both_show(http, a, b, "llm_router_workflow_runs_total", 1,
                        workflow="submitted", status="succeeded")
        seen_a, seen_b = await both_show(http, a, b, "llm_router_request_duration_seconds_count",
                                         7)
        for seen in (seen_a, seen_b):
            answered = {dict(labels)["model"]: v for (name, labels), v in seen.items()
                        if name == REQUESTS and dict(labels)["status"] == "200"}
            assert sum(answered.values()) == 6 and set(answered) <= {"cheap", "dear"}
            assert value(seen, "llm_router_metrics_shared") == 1
            assert value(seen, "llm_router_redis_up") == 1
            assert value(seen, REQUESTS, protocol="openai", model="other", tier="",
                         cache="none", status="404") == 1
            assert value(seen, "llm_router_upstream_attempts_total", backend="cheap",
                         outcome="server_error") == 1
            assert value(seen, "llm_router_failovers_total") == 1
            assert value(seen, "llm_router_workflow_runs_total", workflow="submitted",
                         status="succeeded") == 1
            assert value(seen, "llm_router_in_flight_requests") == 0
        ops = len(fake.requests("cheap")) + len(fake.requests("dear"))
        assert sum(v for (name, labels), v in seen_a.items()
                   if name == "llm_router_upstream_attempts_total") == ops

        # A request in flight in A is in B's gauge; once it is answered, in neither.
        fake.script("cheap", Behaviour(latency=3.0))
        fake.script("dear", Behaviour(latency=3.0))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat, http, a)
            await both_show(http, a, b, "llm_router_in_flight_requests", 1)
        await both_show(http, a, b, "llm_router_in_flight_requests", 0)

        # Redis gone: each shows its own figures, and says so.
        redis_server.kill()
        await both_show(http, a, b, "llm_router_metrics_shared", 0)
        seen_a, seen_b = await scrape(http, a), await scrape(http, b)
        assert value(seen_a, "llm_router_redis_up") == value(seen_b, "llm_router_redis_up") == 0
        count = "llm_router_request_duration_seconds_count"
        assert value(seen_a, count) + value(seen_b, count) == 8

