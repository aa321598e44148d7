"""The saving of in-flight dedup on a burst of identical requests.

A burst of N identical chat completions arrives at once; the upstream (the test suite's fake
provider on loopback) takes ``latency`` seconds to answer. With dedup on, the router makes
one upstream call and every caller gets its answer; with dedup off, N calls. Prints upstream
calls, wall time of the burst and USD spent for both.

    .venv/bin/python bench/dedup_burst.py [N] [latency_s]
"""

from __future__ import annotations

import sys

import httpx
import trio
from harness import make_config, open_router

from engine.testing.fake_upstream import Behaviour, open_fake_upstream


async def burst(n: int, latency: float, dedup: bool, stream: bool) -> tuple[int, float, float]:
    async with open_fake_upstream() as fake:
        fake.set_default("b1", Behaviour(latency=latency, chunk_delay=latency / 20))
        config = make_config({
            "models": [{"name": "m", "provider": "openai", "model": "gpt-4o-mini",
                        "base_url": fake.base_url("b1", "openai"), "api_key": "k",
                        "cost_per_1k_in": 0.15, "cost_per_1k_out": 0.6, "tier": 1}],
            "cache": {"enabled": False},
            "dedup": {"enabled": dedup},
        })
        async with open_router(config) as router, httpx.AsyncClient(timeout=60) as client:
            body = {"model": "auto", "stream": stream,
                    "messages": [{"role": "user", "content": "Summarise the plot of Hamlet."}]}

            async def one() -> None:
                response = await client.post(router.v1 + "/chat/completions", json=body)
                assert response.status_code == 200, response.text

            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                for _ in range(n):
                    nursery.start_soon(one)
            wall = trio.current_time() - start
            stats = (await client.get(router.url + "/stats")).json()
            return len(fake.requests("b1")), wall, stats["total_spent_usd"]


async def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    latency = float(sys.argv[2]) if len(sys.argv) > 2 else 0.5
    print(f"burst of {n} identical requests, upstream latency {latency} s\n")
    print("| mode | dedup | upstream calls | wall time s | USD spent |")
    print("|---|---|---:|---:|---:|")
    for stream in (False, True):
        for dedup in (True, False):
            calls, wall, spent = await burst(n, latency, dedup, stream)
            mode = "stream" if stream else "JSON"
            print(f"| {mode} | {'on' if dedup else 'off'} | {calls} | {wall:.2f} | {spent:.6f} |")


if __name__ == "__main__":
    trio.run(main)
