"""Dedup across router processes through Redis: what the claim costs a request, and what a
burst spread over processes costs upstream.

1. **Claim cost.** ``SharedFlights.fly`` around a flight that answers at once, against a
   real ``redis-server`` on loopback, one flight after another with distinct keys (every one
   a leader nobody follows: the claim, then the release of its lead written in the
   background), against the same flight run directly. Reports a PING round trip for scale,
   the latency added on the request's path (p50, p99; each flight's background write done
   before the next), and, back to back, the wall and router CPU time added per flight,
   background work included.
2. **Cross-process burst.** N ``llm-router`` processes sharing the Redis, a burst of B
   identical requests dealt round-robin over them (JSON, then SSE), the fake upstream taking
   ``latency`` seconds: upstream calls and wall time; then the same processes without
   ``state.redis_url`` (each dedups alone).

    .venv/bin/python bench/shared_dedup.py [flights=5000] [processes=3] [burst=20] [latency_s=1]

Needs ``redis-server`` on the PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio
import yaml

from engine.core.redis_address import RedisAddress
from engine.messages import ChatResult, TextPart, Usage
from engine.runtime.node import NodeResult, Served
from engine.runtime.shared_flights import SharedFlights
from engine.stores.redis import open_redis
from engine.stores.redis.tail import StreamTail
from engine.testing.fake_upstream import Behaviour, FakeUpstream, open_fake_upstream

LLM_ROUTER = str(Path(sys.executable).parent / "llm-router")


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.02)
    return process, f"redis://127.0.0.1:{port}/0"


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


async def claim_cost(url: str, flights: int) -> None:
    done = NodeResult(
        ChatResult((TextPart("An answer of a few hundred characters. " * 8),),
                   usage=Usage(40, 80), upstream_model="up-m"),
        Served(model="m", tier=1, score=30, router="heuristic"), 0.00006, 0.0012)

    async def run(publish: Any) -> NodeResult:
        return done

    async with open_redis(RedisAddress.from_url(url)) as redis, trio.open_nursery() as nursery:
        tail = StreamTail(redis)
        shared = SharedFlights(redis, tail)
        nursery.start_soon(shared.run)  # the process's writer: releases, renewals

        async def publish(item: Any, size: int) -> float:
            return 0.0

        await redis.call("PING")
        for i in range(flights // 10):  # warm up
            await shared.fly(b"warm%d" % i, run, publish)
        await trio.testing.wait_all_tasks_blocked()
        ping, direct, isolated = [], [], []
        for _ in range(flights):
            t = time.perf_counter()
            await redis.call("PING")
            ping.append(time.perf_counter() - t)
            t = time.perf_counter()
            await run(publish)
            direct.append(time.perf_counter() - t)
            t = time.perf_counter()
            await shared.fly(os.urandom(20), run, publish)
            isolated.append(time.perf_counter() - t)
            await trio.testing.wait_all_tasks_blocked()  # its lead is released
        added = [c - d for c, d in zip(isolated, direct, strict=True)]
        # Back to back: each flight's background write shares the loop and the socket with
        # the next one's claim, as under load.
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(flights):
            await run(publish)
        direct_loop, direct_cpu = time.perf_counter() - start, time.process_time() - cpu
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(flights):
            await shared.fly(os.urandom(20), run, publish)
        await trio.testing.wait_all_tasks_blocked()
        claimed_loop, claimed_cpu = time.perf_counter() - start, time.process_time() - cpu
        print(f"claim cost, {flights} leading flights (real redis-server on loopback):")
        print(f"  one PING round trip:             p50 {pct(ping, 0.5) * 1e3:.3f} ms, "
              f"p99 {pct(ping, 0.99) * 1e3:.3f} ms")
        print(f"  added on the request's path:     p50 {pct(added, 0.5) * 1e3:.3f} ms, "
              f"p99 {pct(added, 0.99) * 1e3:.3f} ms")
        print(f"  back to back, all work included: "
              f"{(claimed_loop - direct_loop) / flights * 1e3:.3f} ms wall, "
              f"{(claimed_cpu - direct_cpu) / flights * 1e3:.3f} ms router CPU per flight")
        nursery.cancel_scope.cancel()


def write_config(folder: Path, fake: FakeUpstream, redis_url: str | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"path": str(folder / "state.db")}
    if redis_url:
        state["redis_url"] = redis_url
    config = {
        "models": [{"name": "m", "provider": "openai", "model": "up-m", "tier": 1,
                    "base_url": fake.base_url("m", "openai"), "api_key": "k",
                    "cost_per_1k_in": 0.15, "cost_per_1k_out": 0.6}],
        "cache": {"enabled": False},
        "learned": {"model": None, "feedback_db": str(folder / "feedback.db")},
        "state": state,
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@asynccontextmanager
async def router_process(config: Path) -> AsyncIterator[str]:
    process = await trio.lowlevel.open_process(
        [LLM_ROUTER, "--config", str(config), "--addr", "127.0.0.1:0"],
        cwd=config.parent, stderr=subprocess.PIPE)
    assert process.stderr is not None
    err = b""
    try:
        with trio.fail_after(60):
            while (found := re.search(rb"listening on (http://127\.0\.0\.1:\d+)", err)) is None:
                chunk = await process.stderr.receive_some()
                assert chunk, err.decode()
                err += chunk
        async with trio.open_nursery() as nursery:
            async def drain() -> None:
                while await process.stderr.receive_some():  # type: ignore[union-attr]
                    pass
            nursery.start_soon(drain)
            yield found.group(1).decode()
            nursery.cancel_scope.cancel()
    finally:
        process.terminate()
        with trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()


async def cross_process(redis_url: str, n: int, size: int, latency: float) -> None:
    print(f"\nburst of {size} identical requests over {n} llm-router processes, "
          f"upstream latency {latency} s:\n")
    print("| redis | mode | upstream calls | wall s | all 200 |")
    print("|---|---|---:|---:|---|")
    async with open_fake_upstream() as fake:
        fake.set_default("m", Behaviour(latency=latency, chunk_delay=0.01))
        for shared in (True, False):
            folder = Path(tempfile.mkdtemp(prefix="llmr-bench-"))
            async with AsyncExitStack() as stack, httpx.AsyncClient(timeout=60) as http:
                urls = [await stack.enter_async_context(router_process(write_config(
                    folder / f"r{i}", fake, redis_url if shared else None))) for i in range(n)]
                for stream in (False, True):
                    fake.reset()
                    fake.set_default("m", Behaviour(latency=latency, chunk_delay=0.01))
                    body = {"model": "auto", "stream": stream,
                            "messages": [{"role": "user", "content":
                                          f"Summarise Hamlet ({shared}, {stream})."}]}
                    statuses: list[int] = []

                    # bound now (the nursery below waits for every call to finish)
                    async def one(url: str, body: dict[str, Any] = body,
                                  statuses: list[int] = statuses) -> None:
                        async with http.stream("POST", url + "/v1/chat/completions",
                                               json=body) as response:
                            await response.aread()
                        statuses.append(response.status_code)

                    start = trio.current_time()
                    async with trio.open_nursery() as nursery:
                        for i in range(size):
                            nursery.start_soon(one, urls[i % n])
                    wall = trio.current_time() - start
                    print(f"| {'shared' if shared else 'none'} | "
                          f"{'SSE' if stream else 'JSON'} | {len(fake.requests('m'))} | "
                          f"{wall:.2f} | {all(s == 200 for s in statuses)} |")


async def main() -> None:
    flights = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    latency = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
    process, url = start_redis(Path(tempfile.mkdtemp(prefix="llmr-bench-redis-")))
    try:
        await claim_cost(url, flights)
        await cross_process(url, n, size, latency)
    finally:
        process.kill()


if __name__ == "__main__":
    import trio.testing

    trio.run(main)
