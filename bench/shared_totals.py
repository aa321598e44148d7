"""What sharing health and totals through Redis costs a request.

Usage: .venv/bin/python bench/shared_totals.py [--requests 3000] [--rounds 5]

Needs ``redis-server`` on the PATH (started here on a free loopback port, nothing saved).

1. End to end: ``Gateway.complete`` (routing, the backend call to an in-process fake
   upstream over loopback HTTP, stats) timed per request, one at a time, for a gateway
   without ``state.redis_url``, one with it and in-flight dedup off, and one with it as
   configured by default (dedup on: a claim round trip per request, and the release of the
   flight's lead after it, in the background), in alternating rounds so drift on a shared
   machine hits all alike. Prints the p50 / p90 of each, and this process's CPU per request
   in each round (the fake upstream's share, the same for all three, included).
2. The Redis work itself, timed alone: the totals write (``SharedTotals.flush``, one
   pipeline: the write script's ``EVALSHA``, ``HSET`` of every counter + ``SADD``, and, when
   a gauge changed, ``DEL`` + ``HSET`` + ``PEXPIRE`` + ``SADD`` of the gauges; a process
   writes as soon as it counts, at most once per ``MIN_GAP_SEC`` = 10 ms, so up to 100 a second
   on a busy process, and every ``FLUSH_SEC`` = 0.25 s when something changed without a
   count), a health verdict published (``HSET`` + ``XADD``: only when a backend changes
   state), and the read behind ``/stats`` (the ``SUM`` script over every process's hash; per
   read, not per request). The totals write is also measured in this process's CPU time
   (``time.process_time``), each write after one request's counts (an answer of one model
   for one client key, its labels and latencies), with and without a gauge change (the chat
   requests in flight change with every request), on two shapes of totals: this gateway's
   (one model, a few label sets: ~30 values) and a larger deployment's (5 models, 50 client
   keys, 40 label sets, 6 error codes: ~250 values), to bound what the writes cost a busy
   process.

Prints Markdown.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import one_model_config, percentile, redis_server, run_rounds

from engine.core.stats import Stats
from engine.messages import ChatRequest, Message, TextPart, Usage
from engine.runtime import RunContext, open_gateway
from engine.runtime.models import Models
from engine.runtime.shared_totals import flatten
from engine.testing import open_fake_upstream


async def timed_requests(gateway: object, count: int, cpu: list[float] | None = None
                         ) -> list[float]:
    """Each request's milliseconds; ``cpu`` gets this process's CPU milliseconds per request
    over the ``count`` (the background writes they caused included, the fake upstream too)."""
    request = ChatRequest(messages=(Message("user", (TextPart("hello there"),)),))
    ctx = RunContext(tenant="bench")
    out = []
    began = time.process_time()
    for _ in range(count):
        start = time.perf_counter()
        await gateway.complete(request, ctx)  # type: ignore[attr-defined]
        out.append((time.perf_counter() - start) * 1000)
    await trio.sleep(0.02)  # the last request's background writes
    if cpu is not None:
        cpu.append((time.process_time() - began) / count * 1000)
    return out


def grow(stats: Stats) -> None:
    """Counts of a larger deployment than this gateway: more models, client keys, request
    labels and error codes (each a value of the totals)."""
    for i in range(4):
        stats.by_model[f"model-{i}"] += 10
        stats.by_tier[i + 2] += 10
        stats.spent_by_model[f"model-{i}"] = 0.5 * i
    for i in range(50):
        stats.record_key(f"key_{i:016x}", cost_usd=0.001, tokens=100)
    for protocol in ("openai", "anthropic"):
        for i in range(5):
            for cache in ("hit", "miss"):
                for status in ("200", "429"):
                    stats.record_exchange((protocol, f"model-{i}", str(1 + i % 3), cache, status),
                                          seconds=0.001 * (1 + i), first_byte_seconds=0.0005)
    for code in ("upstream_error", "upstream_timeout", "rate_limited", "invalid_request",
                 "no_backend_available", "budget_exceeded"):
        stats.record_error(code)


async def timed(fn: object, count: int) -> list[float]:
    out = []
    for _ in range(count):
        start = time.perf_counter()
        await fn()  # type: ignore[operator]
        out.append((time.perf_counter() - start) * 1000)
    return out


async def cpu_per(fn: object, count: int) -> float:
    """This process's CPU time per call of ``fn``, in µs."""
    start = time.process_time()
    for _ in range(count):
        await fn()  # type: ignore[operator]
    return (time.process_time() - start) / count * 1e6


async def main(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="llmr-bench-"))
    with redis_server() as url:
        async with open_fake_upstream() as fake:
            base = fake.base_url("m", "openai")
            async with (
                open_gateway(one_model_config(base, folder / "plain"), models=Models()) as plain,
                open_gateway(one_model_config(base, folder / "nodedup", redis_url=url,
                                              dedup={"enabled": False}),
                             models=Models()) as nodedup,
                open_gateway(one_model_config(base, folder / "shared", redis_url=url),
                             models=Models()) as shared,
            ):
                gateways = {"request, no Redis": plain,
                            "request, through Redis, in-flight dedup off": nodedup,
                            "request, through Redis (in-flight dedup on, the default)": shared}
                for gateway in gateways.values():
                    await timed_requests(gateway, 200)
                fake.reset()
                latency: dict[str, list[float]] = {name: [] for name in gateways}
                cpu: dict[str, list[float]] = {name: [] for name in gateways}
                per_round = args.requests // args.rounds
                for _ in range(args.rounds):
                    for name, gateway in gateways.items():
                        latency[name] += await timed_requests(gateway, per_round, cpu[name])
                totals = shared.shared_totals
                health = shared.shared_health
                assert totals is not None and health is not None

                async def flush() -> None:
                    shared.stats.total_requests += 1  # a change, so the write happens
                    await totals.flush()

                async def publish() -> None:
                    health._pending["m"] = {"status", "rate_limit"}
                    await health._publish()

                flushes = await timed(flush, 2000)
                labels = ("openai", "m", "1", "none", "200")
                for i in range(200):  # latency buckets filled as a served router's are
                    shared.stats.record_exchange(labels, seconds=0.001 * (1 + i % 40),
                                                 first_byte_seconds=0.0005 * (1 + i % 40))

                model = shared.config.models[0]
                served = [0]

                async def request_then_flush() -> None:
                    served[0] += 1
                    shared.stats.record(model, Usage(120 + served[0] % 7, 40))
                    shared.stats.record_key(f"key_{served[0] % 50:016x}", cost_usd=0.0001,
                                            tokens=160)
                    shared.stats.record_exchange(labels, seconds=0.002, first_byte_seconds=0.001)
                    await totals.flush()

                async def request_then_flush_gauge() -> None:
                    shared.stats.in_flight ^= 1  # a gauge changed too
                    await request_then_flush()

                writes: list[tuple[int, float, float]] = []
                for shape in ("small", "large"):
                    if shape == "large":
                        grow(shared.stats)
                    await request_then_flush()
                    writes.append((len(flatten(shared.stats, shared.pool)),
                                   await cpu_per(request_then_flush, 2000),
                                   await cpu_per(request_then_flush_gauge, 2000)))
                shared.stats.in_flight = 0
                publishes = await timed(publish, 2000)
                reads = await timed(totals.totals, 2000)
        print(f"Python {sys.version.split()[0]}, {args.requests} requests per gateway, "
              f"one at a time, {args.rounds} alternating rounds\n")
        print("| what | p50 ms | p90 ms | CPU ms per request, by round |")
        print("|---|---:|---:|---|")
        for name, values in (*latency.items(),
                             ("totals write (flush)", flushes),
                             ("health verdict published", publishes),
                             ("/stats read (SUM script)", reads)):
            rounds = ", ".join(f"{c:.2f}" for c in cpu.get(name, []))
            print(f"| {name} | {percentile(values, 0.5):.3f} | {percentile(values, 0.9):.3f} "
                  f"| {rounds} |")
        alone = statistics.median(latency["request, no Redis"])
        alone_cpu = statistics.median(cpu["request, no Redis"])
        for name in list(gateways)[1:]:
            print(f"\n{name}: p50 {statistics.median(latency[name]) - alone:+.3f} ms, CPU "
                  f"{statistics.median(cpu[name]) - alone_cpu:+.3f} ms per request (medians "
                  f"over the rounds) against no Redis")
        print("\nTotals write after one request's counts, this process's CPU (µs):\n")
        print("| values in the totals | per write | with a gauge changed |")
        print("|---:|---:|---:|")
        for fields, cpu_write, cpu_write_gauge in writes:
            print(f"| {fields} | {cpu_write:.0f} | {cpu_write_gauge:.0f} |")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    run_rounds(main, __doc__, requests=3000, rounds=5)
