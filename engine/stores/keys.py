"""Where client keys are kept: the ``KeyStore`` interface and its embedded implementation.

A store keeps each key's record (its settings, the digest of its secret, never the secret)
and what each key has spent in each budget period: ``total`` for ever, a day, week or month
until ``SPEND_KEPT_SEC`` after it ends (only the current period's is read). Rate-limit state
and reservations of
requests in flight are not here: the runtime keeps them (in memory for one process; in Redis,
atomically, when processes share them).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import orjson

from engine.core.keys import SPEND_KEPT_SEC, KeyRecord, KeySettings, period_end

from .sqlite import Database

__all__ = ["KeyStore", "SqliteKeyStore"]


class KeyStore(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def create(self, record: KeyRecord) -> None: ...

    async def get(self, key_id: str) -> KeyRecord | None: ...

    async def by_digest(self, digest: str) -> KeyRecord | None: ...

    async def list(self) -> Sequence[KeyRecord]:
        """Every key, revoked ones included, oldest first."""
        ...

    async def update(self, key_id: str, settings: KeySettings) -> KeyRecord | None: ...

    async def revoke(self, key_id: str, *, at: float) -> KeyRecord | None:
        """Revoke (once: a second call keeps the first time); None for an unknown id."""
        ...

    async def add_spend(self, spends: Mapping[tuple[str, str], tuple[float, int, int]]
                        ) -> None:
        """Add ``(cost_usd, requests, tokens)`` to each ``(key id, period key)``."""
        ...

    async def spend(self, key_id: str, period: str) -> tuple[float, int, int]: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL,
    settings BLOB NOT NULL, created_at REAL NOT NULL, revoked_at REAL);
CREATE TABLE IF NOT EXISTS spend (
    key_id TEXT NOT NULL, period TEXT NOT NULL, cost_usd REAL NOT NULL DEFAULT 0,
    requests INTEGER NOT NULL DEFAULT 0, tokens INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, period)) WITHOUT ROWID;
"""
_COLUMNS = "id, digest, prefix, settings, created_at, revoked_at"
_PRUNE_SEC = 3600.0  # how often, at most, the spend of ended periods is looked for


class SqliteKeyStore:
    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.database = Database(path, what="key store")
        self._clock = clock
        self._pruned_at: float | None = None

    async def open(self) -> None:
        await self.database.open(_SCHEMA)

    async def close(self) -> None:
        await self.database.close()

    async def create(self, record: KeyRecord) -> None:
        await self.database.write(lambda db: db.execute(
            f"INSERT INTO keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (record.id, record.digest, record.prefix, _settings(record.settings),
             record.created_at, record.revoked_at)))

    async def get(self, key_id: str) -> KeyRecord | None:
        return await self._one("id", key_id)

    async def by_digest(self, digest: str) -> KeyRecord | None:
        return await self._one("digest", digest)

    async def _one(self, column: str, value: str) -> KeyRecord | None:
        row = await self.database.read(lambda db: db.execute(
            f"SELECT {_COLUMNS} FROM keys WHERE {column} = ?", (value,)).fetchone())
        return _record(row) if row is not None else None

    async def list(self) -> Sequence[KeyRecord]:
        rows = await self.database.read(lambda db: db.execute(
            f"SELECT {_COLUMNS} FROM keys ORDER BY created_at, id").fetchall())
        return [_record(row) for row in rows]

    async def update(self, key_id: str, settings: KeySettings) -> KeyRecord | None:
        await self.database.write(lambda db: db.execute(
            "UPDATE keys SET settings = ? WHERE id = ?", (_settings(settings), key_id)))
        return await self.get(key_id)

    async def revoke(self, key_id: str, *, at: float) -> KeyRecord | None:
        await self.database.write(lambda db: db.execute(
            "UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (at, key_id)))
        return await self.get(key_id)

    async def add_spend(self, spends: Mapping[tuple[str, str], tuple[float, int, int]]
                        ) -> None:
        rows = [(key_id, period, cost, requests, tokens)
                for (key_id, period), (cost, requests, tokens) in spends.items()]
        now = self._clock()
        prune = self._pruned_at is None or now - self._pruned_at >= _PRUNE_SEC

        def write(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT INTO spend (key_id, period, cost_usd, requests, tokens) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key_id, period) DO UPDATE SET "
                "cost_usd = cost_usd + excluded.cost_usd, "
                "requests = requests + excluded.requests, tokens = tokens + excluded.tokens",
                rows)
            if prune:
                _prune_spend(db, now)

        await self.database.write(write)
        if prune:
            self._pruned_at = now

    async def spend(self, key_id: str, period: str) -> tuple[float, int, int]:
        row = await self.database.read(lambda db: db.execute(
            "SELECT cost_usd, requests, tokens FROM spend WHERE key_id = ? AND period = ?",
            (key_id, period)).fetchone())
        return (float(row[0]), int(row[1]), int(row[2])) if row else (0.0, 0, 0)


def _prune_spend(db: sqlite3.Connection, now: float) -> None:
    """Delete the spend of periods that ended over ``SPEND_KEPT_SEC`` ago (in a write
    transaction). Once pruned, the table holds about one row per key and running period."""
    periods = [row[0] for row in db.execute("SELECT DISTINCT period FROM spend")]
    for period in periods:
        end = period_end(period)
        if end is not None and end + SPEND_KEPT_SEC < now:
            db.execute("DELETE FROM spend WHERE period = ?", (period,))


def _settings(settings: KeySettings) -> bytes:
    return orjson.dumps(settings.model_dump(mode="json"))


def _record(row: tuple[object, ...]) -> KeyRecord:
    key_id, digest, prefix, settings, created_at, revoked_at = row
    assert isinstance(settings, bytes)
    return KeyRecord(id=str(key_id), digest=str(digest), prefix=str(prefix),
                     settings=KeySettings.model_validate(orjson.loads(settings)),
                     created_at=float(created_at),  # type: ignore[arg-type]
                     revoked_at=float(revoked_at) if revoked_at is not None else None)  # type: ignore[arg-type]
