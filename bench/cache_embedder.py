"""What ``cache.embedder`` adds to a request: the time to get one vector from an embeddings
endpoint through :class:`engine.runtime.embeddings.RemoteEmbedder`, against the fake upstream
on loopback (no model time: the router's own overhead plus one local HTTP round trip), or with
``--url`` against a real endpoint (``bench/embedding_server.py``: a real model's time too).

Usage: .venv/bin/python bench/cache_embedder.py [--n 500] [--url URL --model NAME]

Prints the median and p99 of: a new text (one call), a text embedded before (the memo), and
64 new texts asked at once by 64 tasks (they share calls).
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import numpy as np
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.core.config import EmbedderConfig
from engine.core.redact import Redactor
from engine.runtime.embeddings import RemoteEmbedder
from engine.runtime.transport import PooledTransport
from engine.runtime.upstream import UpstreamClient
from engine.testing import open_fake_upstream


def summary(name: str, seconds: list[float]) -> str:
    ms = np.array(seconds) * 1000
    return f"| {name} | {len(ms)} | {np.median(ms):.3f} | {np.percentile(ms, 99):.3f} |"


async def main(n: int, url: str | None, model: str) -> None:
    async with AsyncExitStack() as stack:
        if url is None:
            fake = await stack.enter_async_context(open_fake_upstream())
            url = fake.base_url("emb", "openai")
        transport = await stack.enter_async_context(PooledTransport())
        nursery = await stack.enter_async_context(trio.open_nursery())
        settings = EmbedderConfig(url=url, model=model, timeout_ms=5000)
        embedder = RemoteEmbedder(settings, UpstreamClient(transport, redactor=Redactor([])))
        nursery.start_soon(embedder.run)
        await embedder.vectors(["warm up"])
        new, memo = [], []
        for i in range(n):
            text = f"how do I learn python quickly, take {i}"
            started = time.perf_counter()
            await embedder.vectors([text])
            new.append(time.perf_counter() - started)
            started = time.perf_counter()
            await embedder.vectors([text])
            memo.append(time.perf_counter() - started)
        burst: list[float] = []
        calls_before = embedder.calls
        for round_ in range(max(1, n // 64)):
            async def one(i: int, round_: int = round_) -> None:
                started = time.perf_counter()
                await embedder.vectors([f"burst {round_} question {i}"])
                burst.append(time.perf_counter() - started)
            async with trio.open_nursery() as tasks:
                for i in range(64):
                    tasks.start_soon(one, i)
        calls = embedder.calls - calls_before
        print("| vector for | samples | median ms | p99 ms |\n|---|---:|---:|---:|")
        print(summary("a new text (one call)", new))
        print(summary("a text embedded before (memo)", memo))
        print(summary("64 new texts at once, each", burst))
        print(f"\n64-task bursts: {len(burst)} texts in {calls} calls")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--url", help="a real /v1/embeddings endpoint (default: the fake)")
    parser.add_argument("--model", default="bench")
    args = parser.parse_args()
    trio.run(main, args.n, args.url, args.model)
