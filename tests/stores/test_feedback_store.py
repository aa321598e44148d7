"""The feedback database (SQLite): the tally calibration reads. However the reports arrive
(with thresholds moving in between, the store closed and opened again, another config's
thresholds, a database written before the tally was kept), the store's tally holds exactly the
unspent reports of the read windows, at the windows' edges too, and its summary the totals of
every report."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

from engine.core.routing.calibration import (
    THRESHOLD_TIERS,
    Adjustment,
    Report,
    Tally,
    calibrate,
    read_windows,
)
from engine.stores.feedback import FeedbackStore

# Scores on and around the edges of the windows of thresholds 30 / 70 (band 15, step 5),
# some of which the 0-100 scale cannot write exactly (0.28 * 100 != 28).
EDGES = [0.14, 0.15, 0.150001, 0.28, 0.3, 0.35, 0.350001, 0.36, 0.54, 0.55, 0.56, 0.7, 0.75,
         0.750001, 0.76]
SETTINGS = [(30, 70, 5, 15), (28, 31, 3, 40), (0, 100, 10, 1), (50, 50, 50, 100)]


def random_report(rng: random.Random, i: int) -> Report:
    score = rng.choice(EDGES) if i % 3 == 0 else rng.random()
    return Report(score, rng.choice((1, 2, 3)), rng.choice((0.6, 0.9, 1.0, rng.random())))


async def unspent(store: FeedbackStore) -> list[Report]:
    spent = await store.spent(tuple(THRESHOLD_TIERS))
    return await store.reports(after={THRESHOLD_TIERS[n]: spent[n] for n in spent},
                               limit=1_000_000)


async def assert_tally_is_the_unspent_reports(store: FeedbackStore) -> None:
    reports = await unspent(store)
    for t1, t2, step, band in SETTINGS:
        windows = read_windows(tier1_max=t1, tier2_max=t2, max_step=step, band=band)
        tally = await store.tally(windows)
        assert tally == Tally.of(reports).within(windows)
        for target in (0.8, 0.85):
            settings = {"tier1_max": t1, "tier2_max": t2, "target": target,
                        "min_samples": 20, "max_step": step, "band": band}
            assert calibrate(tally, **settings) == calibrate(reports, **settings)


async def test_the_tally_holds_the_unspent_reports(tmp_path: Path) -> None:
    path = tmp_path / "feedback.db"
    rng = random.Random(3)
    store = FeedbackStore(path, base=(30, 70))
    await store.open()
    try:
        for i in range(1500):
            await store.add(random_report(rng, i), request_id=None, model="m")
            if i % 97 == 0:
                await store.tally(read_windows(tier1_max=30, tier2_max=70, max_step=5, band=15))
            if i in (400, 900):  # a threshold moves: what was stored so far is spent on it
                await store.record_changes([Adjustment("tier1_max", 30, 35, 20, 0.9, "test")])
            if i == 1200:
                await store.record_changes([Adjustment("tier2_max", 70, 65, 20, 0.5, "test")])
        await assert_tally_is_the_unspent_reports(store)
    finally:
        await store.close()
    # Reports added by a store that never calibrated are counted when the next one reads.
    writer = FeedbackStore(path, base=(30, 70))
    await writer.open()
    try:
        for i in range(300):
            await writer.add(random_report(rng, i), request_id=None, model="m")
    finally:
        await writer.close()
    store = FeedbackStore(path, base=(30, 70))
    await store.open()
    try:
        await assert_tally_is_the_unspent_reports(store)
        # Another config's thresholds: their own tally, of every report (none spent on them).
        other = FeedbackStore(path, base=(20, 60))
        await other.open()
        try:
            await other.count_backlog()
            assert len(await unspent(other)) == 1800
            await assert_tally_is_the_unspent_reports(other)
        finally:
            await other.close()
        await assert_tally_is_the_unspent_reports(store)
    finally:
        await store.close()


async def test_a_database_written_before_the_tally_is_counted_once(tmp_path: Path) -> None:
    path = tmp_path / "feedback.db"
    rng = random.Random(5)
    reports = [random_report(rng, i) for i in range(700)]
    db = sqlite3.connect(path)  # the tables of a router that kept no tally and no totals
    db.executescript("""
        CREATE TABLE feedback (id INTEGER PRIMARY KEY, at REAL NOT NULL, request_id TEXT,
            score REAL NOT NULL, tier INTEGER NOT NULL, quality REAL NOT NULL, model TEXT);
        CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL);""")
    db.executemany("INSERT INTO feedback (at, score, tier, quality) VALUES (0, ?, ?, ?)",
                   [(r.score, r.tier, r.quality) for r in reports])
    db.execute("INSERT INTO state VALUES ('spent:30,70:tier1_max', '250')")
    db.commit()
    db.close()
    store = FeedbackStore(path, base=(30, 70))
    await store.open()
    try:
        expected = {
            str(tier): {"reports": len(mine), "mean_quality": round(
                sum(r.quality for r in mine) / len(mine), 4)}
            for tier in (1, 2, 3) if (mine := [r for r in reports if r.tier == tier])}
        # only read so far (as `workflow plan` reads it): the summary comes from the reports
        assert (await store.summary())["by_tier"] == expected
        await store.count_backlog()
        assert (await store.summary()) == {"total": 700, "by_tier": expected}
        assert len(await unspent(store)) == 700 - sum(1 for r in reports[:250] if r.tier == 1)
        await assert_tally_is_the_unspent_reports(store)
        await store.count_backlog()  # counted once: a second pass adds nothing
        await assert_tally_is_the_unspent_reports(store)
        await store.add(Report(0.5, 2, 0.25), request_id=None, model="m")
        summary = await store.summary()
        assert summary["total"] == 701 and summary["by_tier"]["2"]["reports"] == len(
            [r for r in reports if r.tier == 2]) + 1
    finally:
        await store.close()


async def test_reports_older_than_the_retention_go_once_counted(tmp_path: Path) -> None:
    """The feedback table keeps ``retention`` of reports: older ones, already counted in the
    totals and the tally, are deleted, and calibration and the summary read the same."""
    path = tmp_path / "feedback.db"
    now = [1_780_000_000.0]
    store = FeedbackStore(path, base=(30, 70), retention_sec=90 * 86400, clock=lambda: now[0])
    rng = random.Random(5)
    await store.open()
    try:
        for i in range(300):
            await store.add(random_report(rng, i), request_id=None, model="m")
        summary = await store.summary()
        windows = read_windows(tier1_max=30, tier2_max=70, max_step=5, band=15)
        tally = await store.tally(windows)
        now[0] += 91 * 86400
        newest = random_report(rng, 300)
        await store.add(newest, request_id=None, model="m")  # prunes the 300 (an hour passed)

        def rows() -> int:
            with sqlite3.connect(path) as db:
                return int(db.execute("SELECT COUNT(*) FROM feedback").fetchone()[0])

        assert rows() == 1
        after = await store.summary()
        assert after["total"] == summary["total"] + 1
        tally.add(newest)
        assert await store.tally(windows) == tally.within(windows)
        # a report after everything was pruned is counted as any other
        now[0] += 86400
        latest = random_report(rng, 301)
        await store.add(latest, request_id=None, model="m")
        tally.add(latest)
        assert await store.tally(windows) == tally.within(windows)
        assert (await store.summary())["total"] == summary["total"] + 2
    finally:
        await store.close()
