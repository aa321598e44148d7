"""Semantic-cache stores into a full cache: what each holds the event loop, at 1k / 10k / 100k.

Usage: .venv/bin/python bench/cache_stores.py [--sizes 1000 10000 100000] [--data DIR]
       [--interval 0.002] [--expansion-add N]

``--data`` (default: ``LLM_ROUTER_EVAL_DATA``) is the evaluation data folder, as for
``bench/cache_lookup.py``, whose prompt windows and packaged embedder this uses.

For each size, in one trio loop: a ``VectorIndex`` is filled to ``size`` entries (the move
into the graph at 2,048 timed on its own), then churned as a full cache churns: each *store*
removes the oldest entry (LRU eviction) and adds a new one, one store every ``--interval``
seconds, ``min(2,000, size / 2)`` stores. After each store one *lookup* searches k=4 for a
paraphrase of an entry (alternately the entry just stored and an older one), then the
candidates are matched as the cache matches them.

With the runtime's ``IndexWriter`` (indexes made ``deferred``) the graph work runs in a worker
thread; the loop pays the buffer's add and remove and the writer's take and commit, timed
here by wrapping those calls. Without it (an index without ``deferred``: run this script
against an older checkout) each store does its graph insert and removal inline.

Reported per size: the loop hold of a store (median / p99 / max), of the writer's take+commit
(the same), the move into the graph (the loop's longest hold in it: one store inline, one
batch's take+commit deferred; and the worker thread's time), a lookup's hold and its latency
(the wait for the writer's lock included), "found during churn" (the looked-up entry among the
candidates and matched), and recall after churn (1,000 paraphrases of live entries, own entry
found, as ``cache_lookup.py``'s hit rate), a loop-lag probe during the churn (a task
sleeping 1 ms: how late it wakes, p99 / max), and the most entries buffered beside the graph.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cache_lookup import QUERIES, corpus, machine

from engine.core.cache.similarity import Embedder, match
from engine.core.cache.vector_index import VectorIndex

DEFERRED = "deferred" in inspect.signature(VectorIndex).parameters
if DEFERRED:
    from engine.runtime.cache_index import IndexWriter


def us(values: list[float]) -> str:
    a = np.asarray(values) * 1e6
    return f"{np.median(a):.0f} / {np.percentile(a, 99):.0f} / {a.max():.0f}"


def paraphrase(text: str) -> str:
    return text[:1].lower() + text[1:].rstrip(".?!") + "?"


class Timed:
    """Wraps an index's methods, recording each call's duration under a name."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}

    def wrap(self, obj: Any, name: str, label: str) -> None:
        fn = getattr(obj, name)
        times = self.times.setdefault(label, [])

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                times.append(time.perf_counter() - started)

        setattr(obj, name, timed)


async def lag_probe(lags: list[float]) -> None:
    while True:
        started = trio.current_time()
        await trio.sleep(0.001)
        lags.append(trio.current_time() - started - 0.001)


async def drain(writer: Any, index: Any) -> None:
    while not writer.idle or index.pending or index.buffered:
        await trio.sleep(0.01)


async def measure(embedder: Embedder, vectors: np.ndarray, texts: list[str], size: int,
                  interval: float, expansion_add: int | None) -> str:
    churn = min(2000, size // 2)
    new = range(size, size + churn)  # the churn's entries: texts[size:size + churn]
    rng = np.random.default_rng(size)
    fingerprints: dict[int, Any] = {}

    def fp(key: int) -> Any:
        if key not in fingerprints:
            fingerprints[key] = embedder.fingerprint(texts[key])
        return fingerprints[key]

    async with trio.open_nursery() as nursery:
        writer = IndexWriter() if DEFERRED else None
        hnsw = {} if expansion_add is None else {"expansion_add": expansion_add}
        index = (VectorIndex(embedder.dim, deferred=True, **hnsw) if DEFERRED
                 else VectorIndex(embedder.dim, **hnsw))
        if writer is not None:
            nursery.start_soon(writer.run)
        # fill up to the move, one by one; then the rest
        move_hold, move_thread = 0.0, 0.0
        fill_started = time.perf_counter()
        for i in range(min(size, 2049)):
            started = time.perf_counter()
            index.add(i, vectors[i])
            if writer is not None:  # the move: batch by batch, as the writer takes them
                while True:
                    taken = time.perf_counter()
                    batch = index.take()
                    hold = time.perf_counter() - taken
                    if batch is None:
                        break
                    started_thread = time.perf_counter()
                    await trio.to_thread.run_sync(index.apply, batch)
                    move_thread += time.perf_counter() - started_thread
                    committed = time.perf_counter()
                    index.commit(batch)
                    move_hold = max(move_hold, hold + time.perf_counter() - committed)
            else:
                move_hold = max(move_hold, time.perf_counter() - started)
        if writer is not None:  # the rest in one batch, all cores (not measured)
            for i in range(2049, size):
                index.add(i, vectors[i])
            batch = index.take(size)
            if batch is not None:
                await trio.to_thread.run_sync(index.apply, batch)
                index.commit(batch)
        else:
            for i in range(2049, size):
                index.add(i, vectors[i])
        fill_s = time.perf_counter() - fill_started
        timer = Timed()
        if writer is not None:
            timer.wrap(index, "take", "take")
            timer.wrap(index, "commit", "commit")
        stores: list[float] = []
        lookups_hold: list[float] = []
        lookups_latency: list[float] = []
        seen: list[tuple[int, Any, list[Any]]] = []  # matched after the churn, off its clock
        old_picks = rng.choice(np.arange(churn, size), churn, replace=True)
        queries = [paraphrase(texts[k]) for pair in zip(new, old_picks, strict=True)
                   for k in pair]
        query_fps = [embedder.fingerprint(q) for q in queries]  # outside the clock
        lags: list[float] = []
        nursery.start_soon(lag_probe, lags)
        await trio.sleep(0.05)
        lags.clear()
        buffered = 0
        for step, key in enumerate(new):
            started = time.perf_counter()
            index.remove(key - size)
            index.add(key, vectors[key])
            if writer is not None:
                writer.notice(index)
            stores.append(time.perf_counter() - started)
            buffered = max(buffered, getattr(index, "buffered", 0))
            await trio.sleep(interval / 2)
            target = key if step % 2 == 0 else int(old_picks[step])
            query = query_fps[2 * step + (step % 2)]
            asked = time.perf_counter()
            if writer is not None:
                await writer.hold()
                held = time.perf_counter()
                candidates = index.search(query.vector, 4)
                searched = time.perf_counter()
                writer.lock.release()
            else:
                held = time.perf_counter()
                candidates = index.search(query.vector, 4)
                searched = time.perf_counter()
            lookups_hold.append(searched - held)
            lookups_latency.append(searched - asked)
            seen.append((target, query, [k for k, _ in candidates]))
            await trio.sleep(interval / 2)
        lag = np.asarray(lags)
        if writer is not None:
            await drain(writer, index)
        nursery.cancel_scope.cancel()
    found = [any(k == target and match(query, fp(k))[0] for k in keys)
             for target, query, keys in seen]
    # recall after churn: paraphrases of live entries
    live = np.arange(churn, size + churn)
    picks = rng.choice(live, min(QUERIES, len(live)), replace=False)
    recall = []
    for i in picks:
        query = embedder.fingerprint(paraphrase(texts[i]))
        recall.append(any(k == i and match(query, fp(k))[0]
                          for k, _ in index.search(query.vector, 4)))
    move = (f"{move_hold * 1e3:.2f} / {move_thread * 1e3:.0f}" if size > 2048 else "none")
    writer_hold = [a + b for a, b in zip(timer.times.get("take", []),
                                         timer.times.get("commit", []), strict=False)]
    return (f"| {size:,} | {'deferred' if DEFERRED else 'inline'} | {us(stores)} |"
            f" {us(writer_hold) if writer_hold else 'none'} |"
            f" {move} | {us(lookups_hold)} |"
            f" {us(lookups_latency)} | {np.mean(found):.3f} | {np.mean(recall):.3f} |"
            f" {np.percentile(lag, 99) * 1e6:.0f} / {lag.max() * 1e6:.0f} | {buffered} |"
            f" {fill_s:.0f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("LLM_ROUTER_EVAL_DATA") or None,
                        help="the evaluation data folder (default: $LLM_ROUTER_EVAL_DATA)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--interval", type=float, default=0.002,
                        help="seconds between stores (default 0.002: 500 misses a second)")
    parser.add_argument("--expansion-add", type=int, default=None,
                        help="the graph's expansion_add (default: VectorIndex's)")
    args = parser.parse_args()
    if args.data is None:
        parser.error("give --data DIR or set LLM_ROUTER_EVAL_DATA")
    largest = max(args.sizes)
    texts = corpus(args.data, largest + 2000)
    embedder = Embedder()
    vectors = embedder.embed(texts)
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}\n")
    print("| entries | graph work | store hold median / p99 / max (us) | writer take+commit"
          " median / p99 / max (us) | move into the graph: loop hold (ms) / thread (ms) |"
          " lookup search hold median / p99 / max (us) | lookup latency median / p99 / max (us) |"
          " found during churn | recall after churn | loop lag p99 / max (us) | buffer max |"
          " fill |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    run: Callable[..., Any] = trio.run
    for size in sorted(args.sizes):
        print(run(measure, embedder, vectors, texts, size, args.interval, args.expansion_add),
              flush=True)


if __name__ == "__main__":
    main()
