"""What a full cache adds to a full garbage collection: fills the response cache with N entries
(a question of its own each, a 600-byte answer), freezes everything made before, and times
full collections (``gc.collect()``), median of 5; also how many objects the collector tracks.

Usage: .venv/bin/python bench/gc_cache.py [--entries 10000 50000]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.core.cache.key import RequestKey
from engine.core.cache.responses import ResponseCache
from engine.core.cache.semantic import SemanticMatcher
from engine.messages import ChatResult, TextPart, Usage

WORDS = ("proxy latency database index compiler garden violin glacier tax protein orbit "
         "poetry mortgage vaccine bridge neuron tariff volcano sonnet kernel").split()


def question(i: int) -> str:
    a, b, c = WORDS[i % 20], WORDS[i // 20 % 20], WORDS[i // 400 % 20]
    return f"Question {i}: how does a {a} relate to a {b} and a {c}? Answer briefly."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, nargs="+", default=[10_000, 50_000])
    args = parser.parse_args()
    matcher = SemanticMatcher()
    answer = ChatResult(content=(TextPart("An answer of some length. " * 23),),
                        usage=Usage(25, 120))
    print("| entries | tracked objects | full collection, median of 5 |")
    print("|---:|---:|---:|")
    for n in args.entries:
        cache = ResponseCache(matcher=matcher, max_entries=n, max_bytes=1 << 34,
                              max_entry_bytes=1 << 20, ttl=86_400.0, threshold=0.85)
        gc.collect()
        gc.freeze()
        for i in range(n):
            text = question(i)
            cache.store(RequestKey(b"p" * 20, text, b"p" * 20 + text.encode()), answer,
                        model="m", tier=1, cost_usd=0.001, reference_usd=0.01, now=0.0)
        gc.collect()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            gc.collect()
            times.append((time.perf_counter() - start) * 1000)
        print(f"| {n:,} | {len(gc.get_objects()):,} | {statistics.median(times):.1f} ms |")
        del cache
        gc.unfreeze()
        gc.collect()


if __name__ == "__main__":
    main()
