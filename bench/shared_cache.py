"""The response cache shared through Redis: what it costs a request, how soon an entry stored
by one router is a hit on another, and Redis's memory per entry.

Usage: .venv/bin/python bench/shared_cache.py [--entries 10000] [--answer-bytes 600]

Starts its own ``redis-server`` (from the PATH) on a free port, nothing saved to disk.

* **hot path**: what a request pays for the cache, in process: ``lookup`` (a hit) and
  ``store`` of a :class:`ResponseCache` (memory only) against a
  :class:`~engine.runtime.shared_cache.SharedCache` (Redis), texts prepared beforehand as the
  server does for long ones; per-call time, p50 and p99. The shared cache's Redis work runs
  in a background task, not in these calls; its cost per entry is reported apart
  (``publish``: this process's entries, ``file``: another process's, fetched and indexed);
* **propagation**: two shared caches on separate Redis connections (as two processes have);
  the time from ``store`` on one to the entry being a hit on the other (polled every 0.5 ms);
* **over HTTP**: two routers (in this process, each with its own Redis clients) and the fake
  upstream: the time from router A's answer to router B having filed it (B's ``/stats``
  polled), and the request latency of a hit on B (an entry A stored) against a hit on A (its
  own) and a hit on a router without Redis;
* **Redis memory**: ``INFO memory`` ``used_memory`` before and after ``--entries`` entries
  published (question 60-90 characters, answer ``--answer-bytes``), per entry and for 1M.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import make_config, open_router, percentile, redis_server

from engine.core.cache.key import RequestKey
from engine.core.cache.record import CacheRecord, encode_record
from engine.core.cache.responses import ResponseCache
from engine.core.cache.semantic import SemanticMatcher
from engine.core.redis_address import RedisAddress
from engine.messages import ChatResult, TextPart, Usage
from engine.runtime.shared import open_shared
from engine.runtime.shared_cache import SharedCache
from engine.stores.redis import open_redis
from engine.stores.redis.cache import Put, RedisCacheStore
from engine.testing import open_fake_upstream

WORDS = ("river mountain capital history protein engine violin harvest orbit glacier "
         "theorem market poetry climate neuron bridge desert lantern copper signal").split()


def question(i: int) -> str:
    words = [WORDS[(i // len(WORDS) ** k) % len(WORDS)] for k in range(4)]
    return f"Question {i}: what links the {words[0]} and the {words[1]} of {words[2]} {words[3]}?"


def answer(size: int) -> ChatResult:
    return ChatResult(content=(TextPart(("lorem ipsum " * (size // 12 + 1))[:size]),),
                      usage=Usage(40, size // 4))


def row(name: str, values: list[float], unit: float = 1e6, label: str = "µs") -> str:
    return (f"| {name} | {statistics.median(values) * unit:.1f} {label} | "
            f"{percentile(values, 0.99) * unit:.1f} {label} | {len(values)} |")


def bounds(matcher: SemanticMatcher) -> dict[str, Any]:
    return dict(matcher=matcher, max_entries=100_000, max_bytes=1 << 30,
                max_entry_bytes=1 << 20, ttl=3600.0, threshold=0.85)


async def hot_path(matcher: SemanticMatcher, address: RedisAddress, n: int) -> list[str]:
    keys = [RequestKey(b"p" * 20, question(i), b"") for i in range(n)]
    prepare = ResponseCache(**bounds(matcher)).prepare
    prepared = [prepare(k.text) for k in keys]
    result = answer(600)
    out = ["| operation | p50 | p99 | n |", "|---|---|---|---|"]
    async with open_shared(address, timeout=0.25) as shared, trio.open_nursery() as nursery:
        caches: list[tuple[str, ResponseCache]] = [
            ("memory", ResponseCache(**bounds(matcher))),
            ("redis", SharedCache(shared, **bounds(matcher)))]
        nursery.start_soon(caches[1][1].run)  # type: ignore[attr-defined]
        for name, cache in caches:
            stores, hits = [], []
            for key, prep in zip(keys, prepared, strict=True):
                started = time.perf_counter()
                cache.store(key, result, model="m", tier=1, cost_usd=0.001,
                            reference_usd=0.01, now=trio.current_time(), prepared=prep)
                stores.append(time.perf_counter() - started)
                if len(stores) % 64 == 0:
                    await trio.sleep(0)  # as between requests: the publisher runs
            for key, prep in zip(keys, prepared, strict=True):
                started = time.perf_counter()
                hit = cache.lookup(key, trio.current_time(), prepared=prep)
                hits.append(time.perf_counter() - started)
                assert hit is not None
            out += [row(f"store, {name}", stores), row(f"lookup (hit), {name}", hits)]
        shared_cache = caches[1][1]
        assert isinstance(shared_cache, SharedCache)
        with trio.fail_after(60):
            while shared_cache.counters()["backlog"]:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    return out


async def background(matcher: SemanticMatcher, address: RedisAddress, n: int) -> list[str]:
    """Per entry: publishing (SET + script, batched) and filing another process's entry."""
    result = answer(600)
    async with open_shared(address, timeout=1.0) as one, \
            open_shared(address, timeout=1.0) as two, trio.open_nursery() as nursery:
        a, b = SharedCache(one, **bounds(matcher)), SharedCache(two, **bounds(matcher))
        nursery.start_soon(a.run)
        nursery.start_soon(b.run)
        await one.redis.call("FLUSHALL")
        await trio.sleep(0.3)
        base = b.received
        keys = [RequestKey(b"q" * 20, question(10_000_000 + i), b"") for i in range(n)]
        prepared = [a.prepare(key.text) for key in keys]  # as a request does before storing
        started = time.perf_counter()
        for i in range(n):
            a.store(keys[i], result, model="m", tier=1, cost_usd=0, reference_usd=0,
                    now=trio.current_time(), prepared=prepared[i])
            while a.counters()["backlog"] >= 512:
                await trio.sleep(0)  # the backlog holds 1,000: let the publisher catch up
        with trio.fail_after(120):
            while a.counters()["backlog"]:
                await trio.sleep(0.001)
        published = time.perf_counter() - started
        with trio.fail_after(120):
            while b.received - base < n:
                await trio.sleep(0.001)
        filed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    return [f"- {n} entries stored on A: published in {published:.2f} s "
            f"({published / n * 1e6:.0f} µs per entry, batches of 64), all filed on B "
            f"after {filed:.2f} s ({filed / n * 1e6:.0f} µs per entry: fetch, prepare, "
            "index)"]


async def propagation(matcher: SemanticMatcher, address: RedisAddress, n: int) -> list[str]:
    result = answer(600)
    delays = []
    async with open_shared(address, timeout=0.25) as one, \
            open_shared(address, timeout=0.25) as two, trio.open_nursery() as nursery:
        a, b = SharedCache(one, **bounds(matcher)), SharedCache(two, **bounds(matcher))
        nursery.start_soon(a.run)
        nursery.start_soon(b.run)
        await one.redis.call("FLUSHALL")
        await trio.sleep(0.3)
        for i in range(n):
            key = RequestKey(b"r" * 20, question(20_000_000 + i), b"")
            started = time.perf_counter()
            a.store(key, result, model="m", tier=1, cost_usd=0, reference_usd=0,
                    now=trio.current_time())
            with trio.fail_after(5):
                while b.lookup(key, trio.current_time()) is None:
                    await trio.sleep(0.0005)
            delays.append(time.perf_counter() - started)
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    return ["| store on A → hit on B | p50 | p99 | n |", "|---|---|---|---|",
            row("in process, two Redis connections", delays, 1e3, "ms")]


async def over_http(redis_url: str, n: int) -> list[str]:
    async with open_redis(RedisAddress.from_url(redis_url)) as redis:
        await redis.call("FLUSHALL")  # B would catch up on the entries above first
    async with open_fake_upstream() as fake:
        models = [{"name": "m", "provider": "openai", "model": "m", "tier": 1,
                   "base_url": fake.base_url("m", "openai"), "api_key": "k"}]

        def config(redis: bool) -> Any:
            data: dict[str, Any] = {"models": models, "cache": {"enabled": True}}
            if redis:
                data["state"] = {"redis_url": redis_url}
            return make_config(data)

        async with open_router(config(True)) as a, open_router(config(True)) as b, \
                open_router(config(False)) as m, httpx.AsyncClient() as http:

            async def chat(url: str, text: str) -> tuple[float, str]:
                started = time.perf_counter()
                response = await http.post(f"{url}/v1/chat/completions", json={
                    "model": "auto", "messages": [{"role": "user", "content": text}]})
                assert response.status_code == 200
                return time.perf_counter() - started, response.headers["x-llm-router-cache"]

            async def received(url: str) -> int:
                stats = (await http.get(f"{url}/stats")).json()
                return int(stats["cache"]["shared"]["received"])

            spread, remote, local, memory = [], [], [], []
            for i in range(n):
                text = question(30_000_000 + i)
                before = await received(b.url)
                await chat(a.url, text)
                started = time.perf_counter()
                while await received(b.url) == before:
                    pass
                spread.append(time.perf_counter() - started)
                took, state = await chat(b.url, text)
                assert state == "HIT"
                remote.append(took)
                took, state = await chat(a.url, text)
                assert state == "HIT"
                local.append(took)
                await chat(m.url, text)
                took, state = await chat(m.url, text)
                assert state == "HIT"
                memory.append(took)
    return ["| over HTTP | p50 | p99 | n |", "|---|---|---|---|",
            row("A answers → B has filed it (B's /stats polled)", spread, 1e3, "ms"),
            row("hit on B, entry stored by A", remote, 1e3, "ms"),
            row("hit on A, its own entry", local, 1e3, "ms"),
            row("hit on a router without Redis", memory, 1e3, "ms")]


async def memory(address: RedisAddress, entries: int, answer_bytes: int) -> list[str]:
    async def used(redis: Any) -> int:
        info = (await redis.call("INFO", "memory")).decode()
        return int(next(line.split(":")[1] for line in info.splitlines()
                        if line.startswith("used_memory:")))

    async with open_shared(address, timeout=2.0) as shared, trio.open_nursery() as nursery:
        await shared.redis.call("FLUSHALL")
        store = RedisCacheStore(shared.redis, origin="bench", max_entries=10 * entries,
                                max_bytes=1 << 40, stream_len=2 * entries + 1000)
        before = await used(shared.redis)
        result = answer(answer_bytes)
        now = time.time()
        payload_bytes = 0
        for start in range(0, entries, 256):
            puts = []
            for i in range(start, min(entries, start + 256)):
                record = CacheRecord(exact=bytes(20), text=question(40_000_000 + i),
                                     result=result, model="m", tier=1, cost_usd=0.001,
                                     reference_usd=0.01, expires=now + 3600, size=1500)
                payload = encode_record(record)
                payload_bytes += len(payload)
                puts.append(Put(f"{i:032x}", payload, 1500, int((now + 3600) * 1000)))
            await store.publish(puts, int(now * 1000))
        after = await used(shared.redis)
        nursery.cancel_scope.cancel()
    per = (after - before) / entries
    return [f"- {entries} entries, answer {answer_bytes} B, mean payload "
            f"{payload_bytes / entries:.0f} B: used_memory grew {(after - before) / 2**20:.1f} "
            f"MiB, **{per:.0f} B per entry** (payload, expiry, index, size, its "
            f"stream record); 1M entries ≈ {per * 1e6 / 2**30:.2f} GiB"]


async def main(args: argparse.Namespace) -> None:
    with redis_server() as url:
        address = RedisAddress.from_url(url)
        matcher = await trio.to_thread.run_sync(SemanticMatcher)
        print("## Hot path (per call)\n")
        print("\n".join(await hot_path(matcher, address, 2000)))
        print("\n## Background work per entry\n")
        print("\n".join(await background(matcher, address, 2000)))
        print("\n## Propagation\n")
        print("\n".join(await propagation(matcher, address, 200)))
        print()
        print("\n".join(await over_http(url, 100)))
        print("\n## Redis memory\n")
        print("\n".join(await memory(address, args.entries, args.answer_bytes)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--answer-bytes", type=int, default=600)
    trio.run(main, parser.parse_args())
