"""Semantic-cache lookup latency and memory at 1k / 10k / 100k entries.

Usage: .venv/bin/python bench/cache_lookup.py [--sizes 1000 10000 100000] [--data DIR]

``--data`` (default: the ``LLM_ROUTER_EVAL_DATA`` environment variable) is the evaluation data
folder, which is not part of this repository: its ``routing/`` and ``cache/`` dev files.

Entries are realistic prompt vectors: windows of 6-25 words cut from the dev prompts
(RouteLLM MMLU, RouterBench, AlpacaEval, QQP), embedded by ``engine.similarity.Embedder``.
For each size the entries go one by one into a fresh ``VectorIndex`` (defaults: exact numpy
below 2,048 entries, HNSW above), then:

* insert: time per ``add`` while filling, and the process RSS growth per entry;
* search: ``index.search(vector, k=4)`` alone, for hits (a stored prompt with its first
  letter lower-cased and "?" appended, cosine ~0.99) and misses (held-out windows);
* lookup: what the cache does per request: fingerprint the query text, search k=4, and
  ``match`` each candidate; hit rate = share of hit queries whose own entry matched;
* brute force: one numpy matrix-vector product over all entries, for comparison.

Also the memory of one ``Fingerprint`` (tracemalloc, mean over 2,000 prompts), which the cache
keeps per entry beside the index. Prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import tracemalloc
from importlib.metadata import version
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.core.cache.similarity import Embedder, match
from engine.core.cache.vector_index import VectorIndex

QUERIES = 1000


def corpus(data: Path, count: int) -> list[str]:
    """``count`` distinct word windows from the dev prompts, deterministically."""
    texts = []
    for name in ("routellm_mmlu_dev", "routerbench_arc_mbpp_winogrande_dev",
                 "alpaca_eval2_gpt35_vs_gpt4turbo_dev"):
        with (data / "routing" / f"{name}.jsonl").open(encoding="utf-8") as lines:
            texts += [json.loads(line)["prompt"] for line in lines]
    with (data / "cache" / "qqp_pairs_dev.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            texts += [row["a"], row["b"]]
    words = [t.split() for t in texts]
    rng = np.random.default_rng(0)
    out: dict[str, None] = {}
    while len(out) < count:
        w = words[rng.integers(len(words))]
        size = int(rng.integers(6, 26))
        start = int(rng.integers(0, max(1, len(w) - size + 1)))
        out[" ".join(w[start : start + size])] = None
    return list(out)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def stats(seconds: list[float]) -> str:
    us = np.asarray(seconds) * 1e6
    return f"{np.median(us):.0f} / {np.percentile(us, 99):.0f}"


def timed(fn, items) -> tuple[list[float], list]:  # type: ignore[no-untyped-def]
    times, results = [], []
    for item in items:
        started = time.perf_counter()
        results.append(fn(item))
        times.append(time.perf_counter() - started)
    return times, results


def machine() -> str:
    with open("/proc/cpuinfo") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info
                    if line.startswith("model name")), platform.processor())
    libs = ", ".join(f"{p} {version(p)}" for p in ("numpy", "usearch", "wordllama", "tokenizers"))
    return (f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu};"
            f" Python {platform.python_version()}; {libs}")


def measure(embedder: Embedder, vectors: np.ndarray, stored: list[str], held_out: list[str],
            size: int, rng: np.random.Generator) -> str:
    """One Markdown row: a fresh index of ``size`` entries, timed."""
    rss = rss_bytes()
    index = VectorIndex(embedder.dim)
    insert, _ = timed(lambda i: index.add(i, vectors[i]), range(size))
    per_entry = (rss_bytes() - rss) / size
    picks = rng.choice(size, QUERIES, replace=False)
    hit_texts = [stored[i][:1].lower() + stored[i][1:].rstrip(".?!") + "?" for i in picks]
    hit_vectors = embedder.embed(hit_texts)
    miss_vectors = vectors[len(stored):]
    search_hit, _ = timed(lambda v: index.search(v, 4), hit_vectors)
    search_miss, _ = timed(lambda v: index.search(v, 4), miss_vectors)
    # the cache keeps a fingerprint per entry: make the candidates' ones outside the clock
    candidates = {key for v in (*hit_vectors, *miss_vectors) for key, _ in index.search(v, 4)}
    cached = {key: embedder.fingerprint(stored[key]) for key in candidates}  # type: ignore[index]

    def lookup(text: str) -> object:
        query = embedder.fingerprint(text)
        for key, _ in index.search(query.vector, 4):
            if match(query, cached[key])[0]:
                return key
        return None

    lookup_hit, found = timed(lookup, hit_texts)
    hit_rate = np.mean([f == int(i) for f, i in zip(found, picks, strict=True)])
    lookup_miss, _ = timed(lookup, held_out[:QUERIES])
    matrix = vectors[:size]
    brute, _ = timed(lambda v: np.argpartition(-(matrix @ v), 4)[:4], miss_vectors[:200])
    kind = "HNSW f16" if index.approximate else "exact numpy"
    return (f"| {size:,} | {kind} | {stats(insert)} | {per_entry:.0f} B | {stats(search_hit)} |"
            f" {stats(search_miss)} | {stats(lookup_hit)} | {stats(lookup_miss)} |"
            f" {hit_rate:.3f} | {np.median(brute) * 1e6:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("LLM_ROUTER_EVAL_DATA") or None,
                        help="the evaluation data folder (default: $LLM_ROUTER_EVAL_DATA)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    args = parser.parse_args()
    if args.data is None:
        parser.error("give --data DIR or set LLM_ROUTER_EVAL_DATA")
    largest = max(args.sizes)
    texts = corpus(args.data, largest + QUERIES)
    embedder = Embedder()
    started = time.perf_counter()
    vectors = embedder.embed(texts)
    embed_us = (time.perf_counter() - started) / len(texts) * 1e6
    stored, held_out = texts[:largest], texts[largest:]

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    sample = [embedder.fingerprint(t) for t in stored[:2000]]
    fp_bytes = (tracemalloc.get_traced_memory()[0] - before) / len(sample)
    tracemalloc.stop()
    del sample

    print(f"machine: {machine()}\n")
    print(f"corpus: {len(texts)} prompt windows, mean {np.mean([len(t) for t in texts]):.0f}"
          f" chars; embed {embed_us:.0f} us/prompt (batch); Fingerprint {fp_bytes / 1024:.1f}"
          " KiB/entry (tracemalloc)\n")
    print("| entries | index | insert median / p99 (us) | RSS / entry | search hit"
          " median / p99 (us) | search miss median / p99 (us) | lookup hit median / p99 (us) |"
          " lookup miss median / p99 (us) | hit rate | brute force median (us) |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(1)
    for size in sorted(args.sizes):
        print(measure(embedder, vectors, stored, held_out, size, rng))


if __name__ == "__main__":
    main()
