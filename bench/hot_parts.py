"""The routed miss's own work and a stream's decoding, in a hot loop: microseconds per call
of the trained router's features, the cache's fingerprint, the embedder on one text, a miss's
whole cache work (lookup and store in a cache of 1,000 entries) for templated questions
(``bench/wrk/varied.lua``'s) and for real ones (the QQP dev questions, with
``LLM_ROUTER_EVAL_DATA``), and the decoding of the peer harness's 44-event OpenAI stream (or a
built-in one like it).

    .venv/bin/python bench/hot_parts.py [--stream-body FILE] [--rounds N] [--scan MB]

A hot loop keeps the interpreter's and the CPU's caches warm, so these are lower bounds (in a
serving router the same calls take about twice as long); they are for comparing two builds
(``bench/ab.sh``, which picks the code with PYTHONPATH), not for absolute figures. Each
figure is the best of ``--rounds`` rounds of 2,000 calls, which the machine's other load can
only make slower. ``--scan MB`` reads that many megabytes between calls (untimed), as a
serving router's other work runs through the CPU's caches between two requests: closer to
the server's figures, and noisier.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.core.cache.key import RequestKey
from engine.core.cache.responses import ResponseCache
from engine.core.cache.semantic import SemanticMatcher
from engine.core.cache.similarity import DEFAULT_THRESHOLD, Embedder
from engine.core.routing.learned import DEFAULT_MODEL_PATH, LearnedRouter, request_for_prompt
from engine.messages import ChatResult, TextPart, Usage
from engine.wire.openai.response import OpenAIStreamDecoder

_WORDS = ("proxy latency database index compiler garden violin glacier tax protein orbit "
          "poetry mortgage vaccine bridge neuron tariff volcano sonnet kernel enzyme harbor "
          "ledger prism canyon cipher meadow turbine lantern quartz saddle thunder").split()


def _prompts(n: int) -> list[str]:
    """``bench/wrk/varied.lua``'s prompts: a new question every time."""
    rng = random.Random(1)
    return [f"Question {i}: how does a {rng.choice(_WORDS)} relate to a {rng.choice(_WORDS)} "
            f"and a {rng.choice(_WORDS)}? Answer briefly." for i in range(n)]


def _stream_body() -> bytes:
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
             "model": "gpt-4o-mini", "system_fingerprint": "fp", "choices": [
                 {"index": 0, "delta": {"content": "word "}, "logprobs": None,
                  "finish_reason": None}], "usage": None}
    events = [chunk] * 42 + [dict(chunk, choices=[{"index": 0, "delta": {},
                                                    "finish_reason": "stop"}])]
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + (
        b"data: [DONE]\n\n")


def _real_questions() -> list[str]:
    data = os.environ.get("LLM_ROUTER_EVAL_DATA")
    if not data:
        return []
    seen: dict[str, None] = {}
    with open(Path(data) / "cache" / "qqp_pairs_dev.jsonl", encoding="utf-8") as lines:
        for line in lines:
            pair = json.loads(line)
            seen.update(dict.fromkeys((pair["a"], pair["b"])))
    return list(seen)


def _cache_work(matcher: SemanticMatcher, texts: list[str], rounds: int,
                scan: Callable[[], object]) -> float:
    """Microseconds of a miss's lookup and store, each text once, in a cache that holds the
    1,000 texts before it (the first 1,000 fill it, unmeasured)."""
    answer = ChatResult(content=(TextPart("an answer of a few words"),), usage=Usage(10, 5))
    best = float("inf")
    for _ in range(rounds):
        cache = ResponseCache(matcher=matcher, max_entries=1000, max_bytes=1 << 30,
                              max_entry_bytes=1 << 16, ttl=1e9, threshold=DEFAULT_THRESHOLD)
        elapsed = 0.0
        for i, text in enumerate(texts):
            key = RequestKey(exact=b"p" * 20, text=text, full=b"p" * 20 + text.encode())
            scan()
            start = time.perf_counter()
            hit, prepared = cache.lookup_prepared(key, 1.0)
            if hit is None:
                cache.store_entry(key, answer, model="m", tier=1, cost_usd=0.0,
                                  reference_usd=0.0, now=1.0, prepared=prepared)
            if i >= 1000:
                elapsed += time.perf_counter() - start
        best = min(best, elapsed / (len(texts) - 1000))
    return best * 1e6


def _best(fn: Callable[[Any], object], items: Sequence[Any], rounds: int,
          scan: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(rounds):
        elapsed = 0.0
        for item in items:
            scan()
            start = time.perf_counter()
            fn(item)
            elapsed += time.perf_counter() - start
        best = min(best, elapsed / len(items))
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stream-body", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scan", type=float, default=0.0, metavar="MB")
    args = parser.parse_args()
    scanned = np.ones(int(args.scan * (1 << 20)) // 8)
    scan = scanned.sum if len(scanned) else (lambda: None)
    embedder = Embedder()
    router = LearnedRouter.load(DEFAULT_MODEL_PATH, embedder=embedder)
    prompts = _prompts(2000)
    requests = [request_for_prompt(p) for p in prompts]
    body = args.stream_body.read_bytes() if args.stream_body else _stream_body()

    def decode(_: object) -> None:
        decoder = OpenAIStreamDecoder()
        decoder.feed(body)
        decoder.close()

    # extract_features is what a routed miss computes (the router remembers repeats)
    from engine.core.routing.learned import extract_features
    rows = [
        ("trained router's features", lambda r: extract_features(r, router.config,
                                                                 embedder=embedder), requests),
        # assess is all the trained router does for a miss: features, the gate's similarity,
        # the log-odds, known (2,000 questions cycle through its memory of 256)
        ("trained router's assessment", router.assess, requests),
        ("cache fingerprint, as a miss makes it", embedder.fingerprint, prompts),
        ("sentence vector, one text", lambda p: embedder.embed([p]), prompts),
        ("stream decoding (one stream)", decode, range(200)),
    ]
    for name, fn, items in rows:
        print(f"{name:38s} {_best(fn, items, args.rounds, scan):8.1f} us")
    matcher = SemanticMatcher()
    print(f"{'cache work, templated questions':38s} "
          f"{_cache_work(matcher, _prompts(3000), args.rounds, scan):8.1f} us")
    real = _real_questions()
    if real:
        print(f"{'cache work, real questions':38s} "
              f"{_cache_work(matcher, real[:3000], args.rounds, scan):8.1f} us")


if __name__ == "__main__":
    main()
