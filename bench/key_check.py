"""What a client key check costs a request: the embedded gate (SQLite store, counters in
memory) and the shared gate (Redis), against no keys.

Usage: .venv/bin/python bench/key_check.py [--requests 3000] [--rounds 5]

Needs ``redis-server`` on the PATH (started here on a free loopback port, nothing saved).

1. End to end: what the API does for a chat request with a client key, ``KeyGate.authenticate``
   then ``Gateway.complete`` (the key's admission before the backend call to an in-process
   fake upstream over loopback HTTP, its settlement after), timed per request, one at a
   time, for gateways without keys and with keys (a key with ``rpm``, ``tpm`` and a budget,
   so every check runs), without Redis and with it, in alternating rounds so drift on a
   shared machine hits all alike; and, in the gateway with keys on Redis, requests with no
   key and with a key without limits (the cleanest A/B: one gateway, one event loop).
2. The gate alone: authenticate + admit + settle, per call, for the embedded gate, the
   shared gate with limits (one admission script round trip; the settlement is queued and
   written in the background, batched), and the shared gate with a key without limits (no
   round trip); and a bare ``PING`` round trip on the same client, for scale.

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
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import one_model_config, percentile, redis_server, run_rounds

from engine.core.keys import KeySettings
from engine.errors import StoreUnavailable
from engine.messages import ChatRequest, Message, TextPart
from engine.runtime import RunContext, open_gateway
from engine.runtime.models import Models
from engine.testing import open_fake_upstream

ADMIN = "admin-key-for-the-benchmark"
LIMITS = KeySettings(name="bench", rpm=10_000_000, tpm=10_000_000_000, budget_usd=1e9)


def config(fake_url: str, folder: Path, *, redis_url: str | None, keys: bool) -> Any:
    return one_model_config(fake_url, folder, redis_url=redis_url,
                            **({"server": {"admin_key": ADMIN}} if keys else {}))


class Caller:
    """One gateway, called as the API calls it for a request with (or without) a key."""

    def __init__(self, gateway: Any, secret: str | None) -> None:
        self.gateway = gateway
        self.secret = secret
        self.request = ChatRequest(messages=(Message("user", (TextPart("hello there"),)),),
                                   max_tokens=50)

    async def timed(self, count: int) -> list[float]:
        out = []
        for _ in range(count):
            start = time.perf_counter()
            key = None
            if self.secret is not None:
                key = await self.gateway.keys.authenticate(self.secret)
            await self.gateway.complete(self.request, RunContext(tenant="bench", key=key))
            out.append((time.perf_counter() - start) * 1000)
        return out


async def gate_alone(gate: Any, secret: str, count: int) -> list[float]:
    out = []
    for _ in range(count):
        start = time.perf_counter()
        record = await gate.authenticate(secret)
        ticket = await gate.admit(record, tokens=60, max_cost_usd=0.0001)
        gate.settle(record, ticket, tokens=20, cost_usd=0.00005)
        out.append((time.perf_counter() - start) * 1000)
        await trio.sleep(0)
    return out


async def main(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="llmr-bench-"))
    with redis_server() as url:
        async with open_fake_upstream() as fake:
            base = fake.base_url("m", "openai")
            async with (
                open_gateway(config(base, folder / "a", redis_url=None, keys=False),
                             models=Models()) as plain,
                open_gateway(config(base, folder / "b", redis_url=None, keys=True),
                             models=Models()) as embedded,
                open_gateway(config(base, folder / "c", redis_url=url, keys=False),
                             models=Models()) as shared,
                open_gateway(config(base, folder / "d", redis_url=url, keys=True),
                             models=Models()) as shared_keys,
            ):
                _, embedded_secret = await embedded.keys.create(LIMITS)
                _, shared_secret = await shared_keys.keys.create(LIMITS)
                _, unlimited = await shared_keys.keys.create(KeySettings(name="free"))
                callers = {
                    "no keys, no Redis": Caller(plain, None),
                    "keys on SQLite (gate in memory)": Caller(embedded, embedded_secret),
                    "no keys, Redis shared state": Caller(shared, None),
                    "keys on Redis (admission script)": Caller(shared_keys, shared_secret),
                    "same gateway, no key": Caller(shared_keys, None),
                    "same gateway, key without limits": Caller(shared_keys, unlimited),
                }
                for caller in callers.values():
                    await caller.timed(200)
                times: dict[str, list[float]] = {name: [] for name in callers}
                per_round = args.requests // args.rounds
                for _ in range(args.rounds):
                    for name, caller in callers.items():
                        times[name] += await caller.timed(per_round)
                alone = {
                    "embedded gate, key with limits": await gate_alone(
                        embedded.keys, embedded_secret, args.requests),
                    "Redis gate, key with limits": await gate_alone(
                        shared_keys.keys, shared_secret, args.requests),
                    "Redis gate, key without limits": await gate_alone(
                        shared_keys.keys, unlimited, args.requests),
                }
                redis_client = shared_keys.keys.shared_store.redis
                pings, lost = [], 0
                for _ in range(args.requests):
                    start = time.perf_counter()
                    try:
                        await redis_client.call("PING")
                    except StoreUnavailable:  # over redis_timeout_ms on a loaded machine
                        lost += 1
                        await trio.sleep(1)  # the heartbeat finds Redis again
                        continue
                    pings.append((time.perf_counter() - start) * 1000)
                alone["a Redis PING round trip, for scale"] = pings
                fallbacks = shared_keys.keys.fallbacks
        print(f"Python {sys.version.split()[0]}, {args.requests} requests per gateway, "
              f"one at a time, {args.rounds} alternating rounds\n")
        print("| whole request (authenticate + complete) | p50 ms | p99 ms |")
        print("|---|---:|---:|")
        for name, values in times.items():
            print(f"| {name} | {percentile(values, 0.5):.3f} | {percentile(values, 0.99):.3f} |")
        p50 = {name: statistics.median(values) for name, values in times.items()}
        names = list(times)
        print(f"\nkeys on SQLite vs no keys, p50: {p50[names[1]] - p50[names[0]]:+.3f} ms; "
              f"keys on Redis vs Redis without keys: {p50[names[3]] - p50[names[2]]:+.3f} ms; "
              f"in the Redis gateway with keys, a key with limits vs no key: "
              f"{p50[names[3]] - p50[names[4]]:+.3f} ms, a key without limits vs no key: "
              f"{p50[names[5]] - p50[names[4]]:+.3f} ms")
        print("\n| the gate alone (authenticate + admit + settle) | p50 ms | p99 ms |")
        print("|---|---:|---:|")
        for name, values in alone.items():
            print(f"| {name} | {percentile(values, 0.5):.4f} | {percentile(values, 0.99):.4f} |")
        print(f"\nadmissions that fell back to the process's own gate (Redis slower than "
              f"redis_timeout_ms): {fallbacks}; PINGs over it: {lost}")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    run_rounds(main, __doc__, requests=3000, rounds=5)
