"""What a routed miss computes, as digests, one line per text: for comparing two builds that
must agree bit for bit (a speed-up of the routing or cache path must not move a result).

For each text: the trained router's features (dense block, sentence vector, hashed indices
and values), the familiarity gate's similarity, the calibrated log-odds through the gate,
``known``, the heuristic score, the cache and dedup keys (two tenants and targets), the
embedder's sentence vector, the cache's fingerprint (its vector, then its reading for the
guards, settled) and the normalised text (as sent and lower-cased); then what a cache of
1,000 entries answers each text in turn (a miss, stored, or a hit: its score and entry).
Texts: every dev prompt and QQP question of ``LLM_ROUTER_EVAL_DATA``, multi-turn
conversations made of them, non-ASCII, empty and 5,000-character texts.

    PYTHONPATH=/path/to/a .venv/bin/python bench/routed_identity.py > a.txt
    PYTHONPATH=/path/to/b .venv/bin/python bench/routed_identity.py > b.txt
    cmp a.txt b.txt
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from engine.core.cache.key import RequestKey, request_key
from engine.core.cache.responses import ResponseCache
from engine.core.cache.semantic import SemanticMatcher
from engine.core.cache.similarity import DEFAULT_THRESHOLD, Embedder, normalize_text
from engine.core.routing.learned import DEFAULT_MODEL_PATH, LearnedRouter, request_for_prompt
from engine.core.routing.scoring import score_request
from engine.messages import ChatRequest, ChatResult, Message, TextPart, Usage


def _texts(data: Path) -> list[str]:
    seen: dict[str, None] = {}
    for path in sorted((data / "routing").glob("*.jsonl")):
        with path.open(encoding="utf-8") as lines:
            seen.update((json.loads(line)["prompt"], None) for line in lines)
    with (data / "cache" / "qqp_pairs_dev.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            pair = json.loads(line)
            seen.update(dict.fromkeys((pair["a"], pair["b"])))
    texts = list(seen)
    rng = random.Random(7)
    texts += ["", " ", "?", "▁", "a  b", "  leading and trailing  ", "naïve café – “quoted” ‘x’",
              "日本語の質問ですか？", "emoji 🙂 and Ω≈ç√∫", "can't won't isn't it's I'm",
              "x" * 5000, " ".join(rng.sample(texts, 60))[:5000]]
    texts += [t.upper() for t in rng.sample(texts, 200)]
    return texts


def _conversations(texts: list[str]) -> Iterator[ChatRequest]:
    rng = random.Random(11)
    for _ in range(500):
        turns = rng.sample(texts, rng.randint(2, 6))
        messages = []
        for i, text in enumerate(turns):
            messages.append(Message("user", (TextPart(text),)))
            if i < len(turns) - 1:
                messages.append(Message("assistant", (TextPart("an answer"),)))
        yield ChatRequest(messages=tuple(messages))


def _digest(*arrays: object) -> str:
    h = hashlib.sha256()
    for a in arrays:
        if isinstance(a, np.ndarray):
            h.update(str(a.dtype).encode() + str(a.shape).encode())
            h.update(np.ascontiguousarray(a).tobytes())
        else:
            h.update(repr(a).encode())
    return h.hexdigest()[:16]


def main() -> None:
    data = Path(os.environ["LLM_ROUTER_EVAL_DATA"])
    embedder = Embedder()
    router = LearnedRouter.load(DEFAULT_MODEL_PATH, embedder=embedder)
    texts = _texts(data)
    requests = [request_for_prompt(t) for t in texts] + list(_conversations(texts))
    total = hashlib.sha256()
    for request in requests:
        features = router.features(request)
        belief = router.assess(request)
        line = [_digest(features.dense, features.embedding, features.indices.astype(np.int64),
                        features.values),
                repr(router._familiarity(features)), repr(belief.logit), repr(belief.known),
                _digest(belief.inputs), repr(score_request(request))]
        for tenant, target in (("k1", "tier:1"), ("k2", "bench-gpt")):
            key = request_key(request, tenant=tenant, target=target)
            line.append(_digest(key.exact, key.full, key.text))
        if len(request.messages) == 1:
            text = request.messages[0].text
            fingerprint = embedder.fingerprint(text)
            vector = _digest(fingerprint.vector)
            fingerprint.settle()
            line += [_digest(embedder.embed([text])), vector, _digest(*_flat(fingerprint.pack())),
                     _digest(normalize_text(text), normalize_text(text.lower()))]
        print(" ".join(line))
        total.update(" ".join(line).encode())
    # what the cache answers: each question looked up, and stored when missed, in a cache of
    # 1,000 entries (as bench/hot_parts.py's cache work)
    answer = ChatResult(content=(TextPart("an answer"),), usage=Usage(10, 5))
    cache = ResponseCache(matcher=SemanticMatcher(), max_entries=1000, max_bytes=1 << 30,
                          max_entry_bytes=1 << 16, ttl=1e9, threshold=DEFAULT_THRESHOLD)
    for text in texts:
        key = RequestKey(exact=b"p", text=text, full=b"p" + text.encode())
        hit, prepared = cache.lookup_prepared(key, 1.0)
        if hit is None:
            cache.store(key, answer, model="m", tier=1, cost_usd=0.0, reference_usd=0.0,
                        now=1.0, prepared=prepared)
            line = ["miss"]
        else:
            line = ["hit", repr(hit.similarity), _digest(hit.entry.norm)]
        print(" ".join(line))
        total.update(" ".join(line).encode())
    print(f"# {len(requests)} requests, {len(texts)} texts: {total.hexdigest()[:16]}")


def _flat(value: object) -> Iterator[object]:
    if isinstance(value, tuple | list):
        for item in value:
            yield from _flat(item)
    elif isinstance(value, frozenset | set):
        yield from sorted(map(repr, value))
    elif isinstance(value, dict):
        yield from _flat(sorted(value.items(), key=repr))
    else:
        yield value


if __name__ == "__main__":
    main()
