"""One SQLite file as the embedded stores use it: one connection, used from a worker thread one
call at a time (``trio.to_thread.run_sync`` with a ``CapacityLimiter(1)``), WAL with
``synchronous=NORMAL`` (a committed transaction survives the process being killed), writes in
``BEGIN IMMEDIATE`` transactions (several processes may share the file), and every
``sqlite3`` or OS error turned into :class:`~engine.errors.StoreUnavailable` naming the file."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import trio

from engine.errors import StoreUnavailable

__all__ = ["Database"]

T = TypeVar("T")


class Database:
    def __init__(self, path: Path, *, what: str) -> None:
        self.path = path
        self.what = what  # "key store": how messages name it
        self._db: sqlite3.Connection | None = None
        self._limiter = trio.CapacityLimiter(1)
        self.error: str | None = None  # the last failure, until a call succeeds

    async def open(self, schema: str) -> None:
        def connect() -> sqlite3.Connection:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                 timeout=5.0)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(schema)
            except BaseException:
                db.close()
                raise
            return db

        self._db = await self.run(connect)

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await self.run(db.close)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            result = await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        except (sqlite3.Error, OSError) as exc:
            self.error = f"{self.what} {self.path}: {exc}"
            raise StoreUnavailable(self.error) from None
        self.error = None
        return result

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.run(lambda: fn(self.db))

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` in one ``BEGIN IMMEDIATE`` transaction: all of it or none."""

        def transaction() -> T:
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(db)
                db.commit()
            except BaseException:
                if db.in_transaction:
                    db.rollback()
                raise
            return result

        return await self.run(transaction)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise sqlite3.OperationalError("not open")
        return self._db
