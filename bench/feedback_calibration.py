"""What filing and calibrating one feedback report costs as the feedback grows.

Usage: .venv/bin/python bench/feedback_calibration.py [--sizes 1000,100000,1000000]
                                                      [--redis redis://127.0.0.1:6379/0]

Each ``POST /v1/feedback`` (with ``learned.calibrate`` on, the default) stores the report, then
calibrates on the tally of the unspent reports (``engine.core.routing.calibration.Tally``),
which the store brings up to date first: normally by counting the one report just added.

For each size this fills a feedback database (``FeedbackStore``, SQLite, in a scratch folder)
with random reports up to that size (written straight into its table: filling is not what
is measured), counts the backlog once as a router does when it starts (``count_backlog``,
timed), then times what the router does per report, 200 times: ``add`` + ``tally`` +
``calibrate``, and reports the median and p99. With ``--redis`` (a scratch Redis: its feedback
keys are deleted first) it does the same through ``SharedFeedback``: the stream is filled
with ``XADD`` in pipelines, the first calibration counts the backlog, then ``add`` +
``calibrate`` per report. Prints Markdown.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import trio

from engine.core.redis_address import RedisAddress
from engine.core.routing.calibration import Adjustment, Report, Tally, calibrate, read_windows
from engine.runtime import shared_feedback
from engine.runtime.shared import open_shared
from engine.runtime.shared_feedback import SharedFeedback
from engine.stores.feedback import FeedbackStore

ROUNDS = 200
SETTINGS = {"target": 0.8, "min_samples": 20, "max_step": 5, "band": 15}


def random_report(rng: random.Random) -> Report:
    return Report(rng.random(), rng.choice((1, 2, 3)), rng.random())


def step(tally: Tally, saved: dict[str, int]) -> list[Adjustment]:
    return calibrate(tally, tier1_max=saved.get("tier1_max", 30),
                     tier2_max=saved.get("tier2_max", 70), **SETTINGS)


def row(store: str, size: int, backlog: float, times: list[float]) -> str:
    times.sort()
    return (f"| {store} | {size:,} | {backlog * 1000:,.0f} ms | "
            f"{statistics.median(times) * 1000:.2f} ms | "
            f"{times[int(len(times) * 0.99) - 1] * 1000:.2f} ms |")


async def sqlite_rows(sizes: list[int], rng: random.Random) -> None:
    for size in sizes:
        path = Path(tempfile.mkdtemp(prefix="llmr-fb-")) / "feedback.db"
        store = FeedbackStore(path, base=(30, 70))
        await store.open()
        await store.close()
        db = sqlite3.connect(path)
        db.executemany("INSERT INTO feedback (at, score, tier, quality) VALUES (0, ?, ?, ?)",
                       [(r.score, r.tier, r.quality)
                        for r in (random_report(rng) for _ in range(size))])
        db.commit()
        db.close()
        await store.open()
        started = time.perf_counter()
        await store.count_backlog()
        backlog = time.perf_counter() - started
        windows = read_windows(tier1_max=30, tier2_max=70, max_step=5, band=15)
        times = []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            await store.add(random_report(rng), request_id=None, model="m")
            tally = await store.tally(windows)
            step(tally, {})  # the thresholds are not moved: every report calibrates alike
            times.append(time.perf_counter() - started)
        await store.close()
        print(row("SQLite", size, backlog, times))


async def redis_rows(sizes: list[int], rng: random.Random, url: str) -> None:
    async with open_shared(RedisAddress.from_url(url), timeout=30.0) as shared:
        for size in sizes:
            keys = await shared.redis.call("KEYS", "llmr:feedback:*")
            if keys:
                await shared.redis.call("DEL", *keys)
            for start in range(0, size, 1000):
                await shared.redis.pipeline([
                    ["XADD", shared_feedback.REPORTS, "*", "score", repr(r.score), "tier",
                     r.tier, "quality", repr(r.quality)]
                    for r in (random_report(rng) for _ in range(min(1000, size - start)))])
            feedback = SharedFeedback(shared, base=(30, 70), on_thresholds=lambda _: None)
            started = time.perf_counter()
            await feedback.calibrate(lambda tally, saved: [])  # counts the backlog
            backlog = time.perf_counter() - started
            times = []
            for _ in range(ROUNDS):
                started = time.perf_counter()
                await feedback.add(random_report(rng), request_id=None, model="m")
                await feedback.calibrate(lambda tally, saved: step(tally, saved) and [])
                times.append(time.perf_counter() - started)
            print(row("Redis", size, backlog, times))


async def main(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = random.Random(1)
    print("| store | reports stored | counting the backlog (once, at start) "
          "| add + calibrate, median | p99 |")
    print("|---|---:|---:|---:|---:|")
    await sqlite_rows(sizes, rng)
    if args.redis:
        await redis_rows([s for s in sizes if s <= 100_000], rng, args.redis)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--redis", help="a scratch Redis (its llmr:feedback:* keys go)")
    trio.run(main, parser.parse_args())
