"""A routed miss's own work, N times, for a profiler that counts rather than samples: the
trained router's ``assess`` and the cache's lookup and store (1,000 entries) of each of the
first N QQP dev questions (``LLM_ROUTER_EVAL_DATA``), nothing else. Under valgrind's
cachegrind the difference between two values of N is the per-question figure, which the
machine's other load cannot move:

    valgrind --tool=cachegrind --cache-sim=yes --cachegrind-out-file=/dev/null \\
        .venv/bin/python bench/routed_miss_work.py 1400    # minus the same with 1000
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from engine.core.cache.key import RequestKey
from engine.core.cache.responses import ResponseCache
from engine.core.cache.semantic import SemanticMatcher
from engine.core.cache.similarity import DEFAULT_THRESHOLD
from engine.core.routing.learned import DEFAULT_MODEL_PATH, LearnedRouter, request_for_prompt
from engine.core.routing.scoring import score_request
from engine.messages import ChatResult, TextPart, Usage


def main() -> None:
    count = int(sys.argv[1])
    seen: dict[str, None] = {}
    path = Path(os.environ["LLM_ROUTER_EVAL_DATA"]) / "cache" / "qqp_pairs_dev.jsonl"
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            pair = json.loads(line)
            seen.update(dict.fromkeys(" ".join(pair[k].split()) for k in ("a", "b")))
    matcher = SemanticMatcher()
    router = LearnedRouter.load(DEFAULT_MODEL_PATH, embedder=matcher.embedder)
    answer = ChatResult(content=(TextPart("an answer of a few words"),), usage=Usage(10, 5))
    cache = ResponseCache(matcher=matcher, max_entries=1000, max_bytes=1 << 30,
                          max_entry_bytes=1 << 16, ttl=1e9, threshold=DEFAULT_THRESHOLD)
    for text in list(seen)[:count]:
        request = request_for_prompt(text)
        router.assess(request, heuristic=score_request(request))
        key = RequestKey(exact=b"p" * 20, text=text, full=b"p" * 20 + text.encode())
        hit, prepared = cache.lookup_prepared(key, 1.0)
        if hit is None:
            cache.store_entry(key, answer, model="m", tier=1, cost_usd=0.0, reference_usd=0.0,
                              now=1.0, prepared=prepared)


if __name__ == "__main__":
    main()
