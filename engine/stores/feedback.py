"""Durable quality feedback and calibrated thresholds, in an embedded SQLite database.

The file is an :class:`engine.stores.sqlite.Database` (one connection from worker threads, WAL,
writes in ``BEGIN IMMEDIATE`` transactions, errors as ``StoreUnavailable``), so a crash never
loses committed feedback and never leaves a count half made.

Tables:

* ``feedback``: the reports (with ``retention_sec``, those of that long ago, and any not yet
  counted: see *Retention*);
* ``totals``: per tier, the reports and their summed quality, kept with every report (the
  summary ``GET /v1/routing`` shows);
* ``changes``: every threshold move, with its evidence and the config thresholds it was made
  from (when the config's own values change, earlier calibration no longer applies and is set
  aside);
* ``tally``: per config thresholds, tier and score point, the unspent reports counted for
  calibration (``engine.core.routing.calibration.Tally``);
* ``state``: for each threshold, the last report already spent on moving it (a step is never
  taken twice on the same evidence); the last report counted in the tally; and, as
  ``online``, what online learning has taught the trained router, as JSON.

The tally is brought up to date when it is read (:meth:`FeedbackStore.tally`): the reports
added since are counted then, normally the one just added, so a calibration reads a few dozen
rows however many reports the database holds. :meth:`FeedbackStore.count_backlog` (the
router calls it as it starts) counts any backlog at once: a database written before the tally
existed, or thresholds changed in the config.

Retention: with ``retention_sec`` (``learned.feedback_retention_days``), a report older than
that is deleted once it is counted in the totals and the config thresholds' tally (routing
reads nothing else of it), at start-up and then at most once every :data:`PRUNE_SEC`, as a
report is added. The newest report always stays, so ids keep growing (SQLite reuses the
largest id once it is deleted) and one never reads as counted before it is. Reports deleted
are missing from a tally of other thresholds made later (the config's thresholds changed):
that calibration starts from the reports kept.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.core.routing.calibration import (
    THRESHOLD_TIERS,
    Adjustment,
    Report,
    Tally,
    Windows,
    millionths,
    point,
)

from .sqlite import Database

__all__ = ["FeedbackStore"]

_FOLD_ROWS = 10_000  # reports counted into the tally per read of the backlog
#: How often, at most, reports past their retention are deleted (as one is added).
PRUNE_SEC = 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, request_id TEXT, score REAL NOT NULL,
    tier INTEGER NOT NULL, quality REAL NOT NULL, model TEXT);
CREATE TABLE IF NOT EXISTS changes (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, name TEXT NOT NULL, old INTEGER NOT NULL,
    new INTEGER NOT NULL, samples INTEGER NOT NULL, quality REAL, reason TEXT NOT NULL,
    base TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS totals (
    tier INTEGER PRIMARY KEY, n INTEGER NOT NULL, quality REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tally (
    base TEXT NOT NULL, tier INTEGER NOT NULL, point INTEGER NOT NULL, n INTEGER NOT NULL,
    quality INTEGER NOT NULL, PRIMARY KEY (base, tier, point)) WITHOUT ROWID;
"""


class FeedbackStore:
    """Open with :meth:`open`; every method is async and runs its queries in a worker thread.

    Raises (every method): StoreUnavailable: the file cannot be read or written.
    """

    def __init__(self, path: Path, *, base: tuple[int, int], retention_sec: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._base = f"{base[0]},{base[1]}"
        self._file = Database(path, what="feedback database")
        self._retention_sec = retention_sec
        self._clock = clock
        self._pruned_at: float | None = None

    async def open(self) -> None:
        """Open the file (only reading it, until something is written)."""
        await self._file.open(_SCHEMA)

    async def close(self) -> None:
        await self._file.close()

    async def count_backlog(self) -> None:
        """Bring the tally of the config's thresholds and the totals up to date now, however
        many reports that takes (at start-up: a feedback then costs the same as any other)."""
        await self._file.write(self._count_new)
        if self._retention_sec is not None:
            await self._file.write(self._prune)

    async def add(self, report: Report, *, request_id: str | None, model: str | None) -> None:
        def insert(db: sqlite3.Connection) -> None:
            self._sum_totals(db)
            db.execute(
                "INSERT INTO feedback (at, request_id, score, tier, quality, model) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (self._clock(), request_id, report.score, report.tier, report.quality, model),
            )
            db.execute(
                "INSERT INTO totals (tier, n, quality) VALUES (?, 1, ?) ON CONFLICT (tier) "
                "DO UPDATE SET n = n + 1, quality = quality + excluded.quality",
                (report.tier, report.quality),
            )

        await self._file.write(insert)
        if self._retention_sec is not None and (
                self._pruned_at is None or self._clock() - self._pruned_at >= PRUNE_SEC):
            await self._file.write(self._prune)

    def _prune(self, db: sqlite3.Connection) -> int:
        """Delete the reports past their retention that are counted (in a write transaction);
        how many went."""
        now = self._clock()
        self._pruned_at = now
        assert self._retention_sec is not None
        self._count_new(db)
        row = db.execute("SELECT value FROM state WHERE key = ?",
                         (f"tallied:{self._base}",)).fetchone()
        counted = int(row[0]) if row is not None else 0
        return db.execute(
            "DELETE FROM feedback WHERE at < ? AND id <= ? "
            "AND id < (SELECT MAX(id) FROM feedback)",
            (now - self._retention_sec, counted)).rowcount

    async def reports(self, *, after: Mapping[int, int] | None = None,
                      limit: int = 50_000) -> list[Report]:
        """The most recent ``limit`` reports; ``after`` maps a tier to the last report id to
        leave out for it (:meth:`spent`)."""
        after = dict(after or {})

        def select(db: sqlite3.Connection) -> list[Report]:
            rows = db.execute(
                "SELECT id, score, tier, quality FROM feedback ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
            return [Report(score, tier, quality) for id_, score, tier, quality in rows
                    if id_ > after.get(tier, 0)]

        return await self._file.read(select)

    async def tally(self, windows: Windows) -> Tally:
        """The unspent reports of the tiers and score points ``windows`` names
        (``engine.core.routing.calibration.read_windows``): all a calibration reads."""

        def select(db: sqlite3.Connection) -> Tally:
            self._count_new(db)
            tally = Tally()
            for tier, (low, high) in windows.items():
                for at, n, quality in db.execute(
                    "SELECT point, n, quality FROM tally WHERE base = ? AND tier = ? "
                    "AND point > ? AND point <= ?", (self._base, tier, low, high),
                ):
                    tally.count(tier, at, n, quality)
            return tally

        return await self._file.write(select)

    def _count_new(self, db: sqlite3.Connection) -> None:
        """Count the reports added since the tally was last brought up to date, each tier's
        only if its threshold has not moved since (in a write transaction)."""
        self._sum_totals(db)
        key = f"tallied:{self._base}"
        row = db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        counted = int(row[0]) if row is not None else 0
        spent = self._spent(db, THRESHOLD_TIERS)
        after = {THRESHOLD_TIERS[name]: spent[name] for name in THRESHOLD_TIERS}
        last = counted
        while True:
            rows = db.execute(
                "SELECT id, score, tier, quality FROM feedback WHERE id > ? ORDER BY id "
                "LIMIT ?", (last, _FOLD_ROWS),
            ).fetchall()
            if not rows:
                break
            cells: dict[tuple[int, int], list[int]] = {}
            for id_, score, tier, quality in rows:
                if tier in after and id_ > after[tier]:
                    cell = cells.setdefault((tier, point(score)), [0, 0])
                    cell[0] += 1
                    cell[1] += millionths(quality)
            db.executemany(
                "INSERT INTO tally (base, tier, point, n, quality) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (base, tier, point) DO UPDATE SET n = n + excluded.n, "
                "quality = quality + excluded.quality",
                [(self._base, tier, at, n, q) for (tier, at), (n, q) in cells.items()],
            )
            last = rows[-1][0]
        if last != counted:
            db.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)",
                       (key, str(last)))

    @staticmethod
    def _sum_totals(db: sqlite3.Connection) -> None:
        """Sum the totals once from the reports, in a database written before they were kept
        (in a write transaction)."""
        if db.execute("SELECT 1 FROM state WHERE key = 'totals'").fetchone() is None:
            db.execute("DELETE FROM totals")
            db.execute("INSERT INTO totals (tier, n, quality) "
                       "SELECT tier, COUNT(*), SUM(quality) FROM feedback GROUP BY tier")
            db.execute("INSERT INTO state (key, value) VALUES ('totals', 'kept')")

    async def summary(self) -> dict[str, Any]:
        def select(db: sqlite3.Connection) -> dict[str, Any]:
            if db.execute("SELECT 1 FROM state WHERE key = 'totals'").fetchone() is None:
                query = ("SELECT tier, COUNT(*), SUM(quality) FROM feedback GROUP BY tier "
                         "ORDER BY tier")  # not yet kept (an older file, only read)
            else:
                query = "SELECT tier, n, quality FROM totals WHERE n > 0 ORDER BY tier"
            rows = db.execute(query).fetchall()
            return {
                "total": sum(n for _, n, _ in rows),
                "by_tier": {str(t): {"reports": n, "mean_quality": round(q / n, 4)}
                            for t, n, q in rows},
            }

        return await self._file.read(select)

    async def record_changes(self, changes: list[Adjustment]) -> None:
        """Record threshold moves; the reports stored so far are spent on the moved ones (and
        leave the tally)."""

        def insert(db: sqlite3.Connection) -> None:
            (last,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM feedback").fetchone()
            for c in changes:
                db.execute(
                    "INSERT INTO changes (at, name, old, new, samples, quality, reason, "
                    "base) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (time.time(), c.name, c.old, c.new, c.samples, c.quality, c.reason,
                     self._base),
                )
                db.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)",
                           (self._spent_key(c.name), str(last)))
                db.execute("DELETE FROM tally WHERE base = ? AND tier = ?",
                           (self._base, THRESHOLD_TIERS[c.name]))

        await self._file.write(insert)

    def _spent_key(self, name: str) -> str:
        return f"spent:{self._base}:{name}"

    async def spent(self, names: Sequence[str]) -> dict[str, int]:
        """For each threshold in ``names``, the id of the last report already spent on moving
        it (0: none)."""
        return await self._file.read(lambda db: self._spent(db, names))

    def _spent(self, db: sqlite3.Connection, names: Iterable[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for name in names:
            row = db.execute(
                "SELECT value FROM state WHERE key = ?", (self._spent_key(name),)
            ).fetchone()
            out[name] = int(row[0]) if row is not None else 0
        return out

    async def thresholds(self) -> dict[str, int]:
        """The calibrated thresholds made from the current config's values (may be empty)."""

        def select(db: sqlite3.Connection) -> dict[str, int]:
            rows = db.execute(
                "SELECT name, new FROM changes WHERE base = ? ORDER BY id", (self._base,)
            ).fetchall()
            return dict(rows)

        return await self._file.read(select)

    async def recent_changes(self, limit: int = 20) -> list[dict[str, Any]]:
        def select(db: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = db.execute(
                "SELECT at, name, old, new, samples, quality, reason FROM changes "
                "WHERE base = ? ORDER BY id DESC LIMIT ?", (self._base, limit),
            ).fetchall()
            return [
                {"at": at, "name": name, "old": old, "new": new, "samples": samples,
                 "quality": None if quality is None else round(quality, 4), "reason": reason}
                for at, name, old, new, samples, quality, reason in rows
            ]

        return await self._file.read(select)

    # ---- online learning (``engine.core.routing.online``) -------------------------------------

    async def online_state(self) -> dict[str, Any] | None:
        """The online learning state last saved (its :meth:`OnlineState.to_dict`), if any."""

        def select(db: sqlite3.Connection) -> dict[str, Any] | None:
            row = db.execute("SELECT value FROM state WHERE key = 'online'").fetchone()
            return None if row is None else dict(json.loads(row[0]))

        return await self._file.read(select)

    async def save_online_state(self, state: dict[str, Any] | None) -> None:
        """Keep ``state`` (None: forget what was learned)."""

        def write(db: sqlite3.Connection) -> None:
            if state is None:
                db.execute("DELETE FROM state WHERE key = 'online'")
            else:
                db.execute("INSERT OR REPLACE INTO state (key, value) VALUES ('online', ?)",
                           (json.dumps(state),))

        await self._file.write(write)
