"""What calibrating on one feedback report costs as the feedback database grows.

Usage: .venv/bin/python bench/feedback_calibration.py [--sizes 1000,10000,50000,100000]

Each ``POST /v1/feedback`` (with ``learned.calibrate`` on, the default) records the report
and then calibrates: it reads the spent marks, the most recent reports (up to 50,000) that
are not yet spent on moving a threshold, and runs ``calibrate`` over them. The store reads
only the reports of the scores calibration can read (``read_windows``); ``--every`` reads
every unspent report, as it did before. This fills a
feedback database (``FeedbackStore``, SQLite, in a scratch folder) with random reports up to
each size and times that read and calibration, median of 5, as the router does it for one
report. Prints Markdown.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import trio

from engine.core.routing.calibration import Report, calibrate, read_windows
from engine.stores.feedback import FeedbackStore


async def main(args: argparse.Namespace) -> None:
    store = FeedbackStore(Path(tempfile.mkdtemp(prefix="llmr-fb-")) / "feedback.db",
                          base=(30, 70))
    await store.open()
    rng = random.Random(1)
    had = 0
    print("| reports in the database | read + calibrate, per report (median of 5) |")
    print("|---:|---:|")
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            for _ in range(size - had):
                await store.add(Report(rng.random(), rng.choice((1, 2, 3)), rng.random()),
                                request_id=None, model="m")
            had = size
            times = []
            for _ in range(5):
                started = time.perf_counter()
                spent = await store.spent(("tier1_max", "tier2_max"))
                reports = await store.reports(
                    after={1: spent["tier1_max"], 2: spent["tier2_max"]},
                    windows=None if args.every else read_windows(
                        tier1_max=30, tier2_max=70, max_step=5, band=15))
                calibrate(reports, tier1_max=30, tier2_max=70, target=0.8, min_samples=20,
                          max_step=5, band=15)
                times.append(time.perf_counter() - started)
            print(f"| {size:,} | {statistics.median(times) * 1000:.1f} ms |")
    finally:
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,50000,100000")
    parser.add_argument("--every", action="store_true",
                        help="read every unspent report, as before read windows")
    trio.run(main, parser.parse_args())
