"""Durable quality feedback and calibrated thresholds, in an embedded SQLite database.

One connection, used from worker threads one call at a time (``trio.to_thread.run_sync`` with
a ``CapacityLimiter(1)``), in WAL mode so a crash never loses committed feedback. ``sqlite3``
is used here and only here.

Tables: ``feedback`` (every report), ``changes`` (every threshold move, with its evidence and
the config thresholds it was made from: when the config's own values change, earlier
calibration no longer applies and is set aside) and ``state`` (for each threshold, the last
report already spent on moving it: a step is never taken twice on the same evidence; and, as
``online``, what online learning has taught the trained router, as JSON).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from engine.core.routing.calibration import Adjustment, Report, Windows
from engine.errors import RouterError

__all__ = ["FeedbackStore"]

_MARGIN = 0.01  # score points each side of a read window (see ``reports``)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, request_id TEXT, score REAL NOT NULL,
    tier INTEGER NOT NULL, quality REAL NOT NULL, model TEXT);
CREATE TABLE IF NOT EXISTS changes (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, name TEXT NOT NULL, old INTEGER NOT NULL,
    new INTEGER NOT NULL, samples INTEGER NOT NULL, quality REAL, reason TEXT NOT NULL,
    base TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class FeedbackStore:
    """Open with :meth:`open`; every method is async and runs the query in a thread."""

    def __init__(self, path: Path, *, base: tuple[int, int]) -> None:
        self.path = path
        self._base = f"{base[0]},{base[1]}"
        self._db: sqlite3.Connection | None = None
        self._limiter = trio.CapacityLimiter(1)

    async def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        except (sqlite3.Error, OSError) as exc:
            raise RouterError(f"feedback database {self.path}: {exc}") from None

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            return db

        self._db = await self._run(connect)

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await self._run(db.close)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RouterError("the feedback database is not open")
        return self._db

    async def add(self, report: Report, *, request_id: str | None, model: str | None) -> None:
        def insert() -> None:
            with self.db:
                self.db.execute(
                    "INSERT INTO feedback (at, request_id, score, tier, quality, model) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (time.time(), request_id, report.score, report.tier, report.quality, model),
                )

        await self._run(insert)

    async def reports(self, *, after: Mapping[int, int] | None = None,
                      limit: int = 50_000, windows: Windows | None = None) -> list[Report]:
        """The most recent ``limit`` reports (calibration looks at these); ``after`` maps a
        tier to the last report id to leave out for it (:meth:`spent`). With ``windows``
        (``engine.core.routing.calibration.read_windows``), only those of the tiers and the
        scores a calibration reads (and a few just outside, which it ignores), picked by
        SQLite rather than built and dropped here: a fraction of the reports."""
        after = dict(after or {})

        def select() -> list[Report]:
            if windows is None:
                rows = self.db.execute(
                    "SELECT id, score, tier, quality FROM feedback ORDER BY id DESC LIMIT ?",
                    (limit,),
                ).fetchall()
                return [Report(score, tier, quality) for id_, score, tier, quality in rows
                        if id_ > after.get(tier, 0)]
            wanted: list[str] = []
            params: list[float] = [limit]
            for tier, (low, high) in windows.items():
                wanted.append("(tier = ? AND id > ? AND score * 100 > ? AND score * 100 <= ?)")
                # SQLite's float arithmetic is not calibration's rounding: a margin each side
                params += [tier, after.get(tier, 0), low - _MARGIN, high + _MARGIN]
            rows = self.db.execute(
                "SELECT score, tier, quality FROM (SELECT id, score, tier, quality FROM feedback"
                " ORDER BY id DESC LIMIT ?) WHERE " + " OR ".join(wanted), params,
            ).fetchall()
            return [Report(score, tier, quality) for score, tier, quality in rows]

        result: list[Report] = await self._run(select)
        return result

    async def summary(self) -> dict[str, Any]:
        def select() -> dict[str, Any]:
            rows = self.db.execute(
                "SELECT tier, COUNT(*), AVG(quality) FROM feedback GROUP BY tier ORDER BY tier"
            ).fetchall()
            return {
                "total": sum(n for _, n, _ in rows),
                "by_tier": {str(t): {"reports": n, "mean_quality": round(q, 4)}
                            for t, n, q in rows},
            }

        result: dict[str, Any] = await self._run(select)
        return result

    async def record_changes(self, changes: list[Adjustment]) -> None:
        """Record threshold moves; the reports stored so far are spent on the moved ones."""

        def insert() -> None:
            with self.db:
                (last,) = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM feedback").fetchone()
                for c in changes:
                    self.db.execute(
                        "INSERT INTO changes (at, name, old, new, samples, quality, reason, "
                        "base) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (time.time(), c.name, c.old, c.new, c.samples, c.quality, c.reason,
                         self._base),
                    )
                    self.db.execute(
                        "INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)",
                        (self._spent_key(c.name), str(last)),
                    )

        await self._run(insert)

    def _spent_key(self, name: str) -> str:
        return f"spent:{self._base}:{name}"

    async def spent(self, names: Sequence[str]) -> dict[str, int]:
        """For each threshold in ``names``, the id of the last report already spent on moving
        it (0: none)."""

        def select() -> dict[str, int]:
            out: dict[str, int] = {}
            for name in names:
                row = self.db.execute(
                    "SELECT value FROM state WHERE key = ?", (self._spent_key(name),)
                ).fetchone()
                out[name] = int(row[0]) if row is not None else 0
            return out

        result: dict[str, int] = await self._run(select)
        return result

    async def thresholds(self) -> dict[str, int]:
        """The calibrated thresholds made from the current config's values (may be empty)."""

        def select() -> dict[str, int]:
            rows = self.db.execute(
                "SELECT name, new FROM changes WHERE base = ? ORDER BY id", (self._base,)
            ).fetchall()
            return dict(rows)

        result: dict[str, int] = await self._run(select)
        return result

    async def recent_changes(self, limit: int = 20) -> list[dict[str, Any]]:
        def select() -> list[dict[str, Any]]:
            rows = self.db.execute(
                "SELECT at, name, old, new, samples, quality, reason FROM changes "
                "WHERE base = ? ORDER BY id DESC LIMIT ?", (self._base, limit),
            ).fetchall()
            return [
                {"at": at, "name": name, "old": old, "new": new, "samples": samples,
                 "quality": None if quality is None else round(quality, 4), "reason": reason}
                for at, name, old, new, samples, quality, reason in rows
            ]

        result: list[dict[str, Any]] = await self._run(select)
        return result

    # ---- online learning (``engine.core.routing.online``) -------------------------------------

    async def online_state(self) -> dict[str, Any] | None:
        """The online learning state last saved (its :meth:`OnlineState.to_dict`), if any."""

        def select() -> dict[str, Any] | None:
            row = self.db.execute("SELECT value FROM state WHERE key = 'online'").fetchone()
            return None if row is None else dict(json.loads(row[0]))

        result: dict[str, Any] | None = await self._run(select)
        return result

    async def save_online_state(self, state: dict[str, Any] | None) -> None:
        """Keep ``state`` (None: forget what was learned)."""

        def write() -> None:
            with self.db:
                if state is None:
                    self.db.execute("DELETE FROM state WHERE key = 'online'")
                else:
                    self.db.execute("INSERT OR REPLACE INTO state (key, value) "
                                    "VALUES ('online', ?)", (json.dumps(state),))

        await self._run(write)
