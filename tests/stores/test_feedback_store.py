"""The feedback database (SQLite): the reports calibration reads. With read windows it picks
only those of the tiers and scores a calibration can read, and calibrating on them moves the
thresholds exactly as calibrating on every report does, at the windows' edges too."""

from __future__ import annotations

import random
from pathlib import Path

from engine.core.routing.calibration import Report, calibrate, read_windows
from engine.stores.feedback import FeedbackStore

# Scores on and around the edges of the windows of thresholds 30 / 70 (band 15, step 5),
# some of which the 0-100 scale cannot write exactly (0.28 * 100 != 28).
EDGES = [0.14, 0.15, 0.150001, 0.28, 0.3, 0.35, 0.350001, 0.36, 0.54, 0.55, 0.56, 0.7, 0.75,
         0.750001, 0.76]


async def test_windowed_reads_calibrate_as_every_report_does(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "feedback.db", base=(30, 70))
    await store.open()
    try:
        rng = random.Random(3)
        for i in range(3000):
            score = rng.choice(EDGES) if i % 3 == 0 else rng.random()
            await store.add(Report(score, rng.choice((1, 2, 3)), rng.choice((0.6, 0.9, 1.0))),
                            request_id=None, model="m")
        for t1, t2, step, band, after in [(30, 70, 5, 15, {}), (30, 70, 5, 15, {1: 1200}),
                                          (28, 31, 3, 40, {2: 2500}), (0, 100, 10, 1, {}),
                                          (50, 50, 50, 100, {1: 10, 2: 2999})]:
            windows = read_windows(tier1_max=t1, tier2_max=t2, max_step=step, band=band)
            every = await store.reports(after=after)
            read = await store.reports(after=after, windows=windows)
            assert len(read) < len(every) or band == 100
            settings = {"tier1_max": t1, "tier2_max": t2, "target": 0.85, "min_samples": 20,
                        "max_step": step, "band": band}
            assert calibrate(read, **settings) == calibrate(every, **settings)
            # and a calibration that moves something, on the same reports
            settings["target"] = 0.8
            assert calibrate(read, **settings) == calibrate(every, **settings)
    finally:
        await store.close()
