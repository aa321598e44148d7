"""What in-flight dedup across processes costs a *streamed* request nobody follows.

Usage: .venv/bin/python bench/shared_streams.py [--requests 300] [--rounds 3]

Needs ``redis-server`` on the PATH (started here on a free loopback port, nothing saved).

``Gateway.open_stream`` read to its end, one request at a time, for a gateway through Redis
with in-flight dedup off and one with it on (the default), in alternating rounds so drift on
a shared machine hits both alike. The in-process fake upstream answers 40 words, one event
each. Every request asks a question of its own: repeating one would have each request follow
the one before it (a request that claims its flight before the last one's lead is released
follows that flight through Redis), which is not what this measures. Prints the p50 of each
and this process's CPU per request in each round (the fake upstream's share, the same for
both, included).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from itertools import count
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import one_model_config, percentile, redis_server, run_rounds

from engine.messages import ChatRequest, Message, TextPart
from engine.runtime import RunContext, open_gateway
from engine.runtime.models import Models
from engine.testing import open_fake_upstream
from engine.testing.fake_upstream import Behaviour

_questions = count()


async def timed_streams(gateway: object, n: int, cpu: list[float] | None = None
                        ) -> list[float]:
    """Each stream's milliseconds, read to its end; ``cpu`` gets this process's CPU
    milliseconds per stream over the ``n``."""
    ctx = RunContext(tenant="bench")
    out = []
    began = time.process_time()
    for _ in range(n):
        text = f"hello there {next(_questions)}"
        request = ChatRequest(messages=(Message("user", (TextPart(text),)),))
        start = time.perf_counter()
        stream = await gateway.open_stream(request, ctx)  # type: ignore[attr-defined]
        async for _ in stream:
            pass
        out.append((time.perf_counter() - start) * 1000)
    await trio.sleep(0.02)  # the last stream's background writes
    if cpu is not None:
        cpu.append((time.process_time() - began) / n * 1000)
    return out


async def main(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="llmr-bench-"))
    with redis_server() as url:
        async with open_fake_upstream() as fake:
            fake.set_default("m", Behaviour(text=" ".join(f"word{i}" for i in range(40))))
            base = fake.base_url("m", "openai")
            async with (
                open_gateway(one_model_config(base, folder / "nodedup", redis_url=url,
                                              dedup={"enabled": False}),
                             models=Models()) as nodedup,
                open_gateway(one_model_config(base, folder / "shared", redis_url=url),
                             models=Models()) as shared,
            ):
                gateways = {"stream, through Redis, in-flight dedup off": nodedup,
                            "stream, through Redis (in-flight dedup on, the default)": shared}
                for gateway in gateways.values():
                    await timed_streams(gateway, 100)
                latency: dict[str, list[float]] = {name: [] for name in gateways}
                cpu: dict[str, list[float]] = {name: [] for name in gateways}
                for _ in range(args.rounds):
                    for name, gateway in gateways.items():
                        latency[name] += await timed_streams(
                            gateway, args.requests // args.rounds, cpu[name])
    print(f"Python {sys.version.split()[0]}, {args.requests} streams per gateway, one at a "
          f"time, {args.rounds} alternating rounds\n")
    print("| what | p50 ms | CPU ms per stream, by round |")
    print("|---|---:|---|")
    for name in gateways:
        rounds = ", ".join(f"{c:.2f}" for c in cpu[name])
        print(f"| {name} | {percentile(latency[name], 0.5):.3f} | {rounds} |")
    off, on = (statistics.median(cpu[name]) for name in gateways)
    print(f"\nin-flight dedup on: CPU {on - off:+.3f} ms per stream (medians over the rounds)")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    run_rounds(main, __doc__, requests=300, rounds=3)
