"""The embedded run store: workflow runs in an SQLite file (nothing to install).

Implements :class:`~engine.stores.runs.RunStore`. One connection, used from a worker thread one
call at a time (``trio.to_thread.run_sync`` with a ``CapacityLimiter(1)``); every write is one
``BEGIN IMMEDIATE`` transaction, so several processes may share the file (SQLite locks it for
each write; a writer waits up to 5 s for another's lock), and a read of runs with their ops is
one read transaction (a record is never half from before another process's commit and half
from after). WAL with ``synchronous=NORMAL``: a committed transaction survives the process
being killed (SIGKILL); only an operating-system crash or power loss may lose the last few.
``sqlite3`` is used here and in the feedback store only, and its errors become
:class:`~engine.errors.StoreUnavailable` here.

Tables: ``runs`` (one row per run: the columns it is found by, its spec and the rest of its
record as JSON), ``ops`` (one row per op of a run, in the workflow's order), ``events`` (each
run's events by ``seq``), ``memos`` (memoized op answers by key).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson
import trio

from engine.core.workflow.runs import OpState, RunChange, RunEvent, RunRecord, RunSpec
from engine.errors import NotFound, StoreUnavailable

from .runs import Memo

__all__ = ["SqliteRunStore"]

log = logging.getLogger("llm_router")

T = TypeVar("T")

_VERSION = 1
_CHECKPOINT_FRAMES = 10_000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, idem_key TEXT, status TEXT NOT NULL,
    created_at REAL NOT NULL, finished_at REAL, owner TEXT, lease_until REAL NOT NULL DEFAULT 0,
    cancel_by BLOB, spec BLOB NOT NULL, fields BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS runs_idem ON runs (tenant, idem_key)
    WHERE idem_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS runs_listed ON runs (tenant, created_at);
CREATE INDEX IF NOT EXISTS runs_open ON runs (status, lease_until)
    WHERE status IN ('queued', 'running');
CREATE INDEX IF NOT EXISTS runs_ended ON runs (finished_at) WHERE finished_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS ops (
    run_id TEXT NOT NULL, name TEXT NOT NULL, ord INTEGER NOT NULL, state BLOB NOT NULL,
    PRIMARY KEY (run_id, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, name TEXT NOT NULL, data BLOB NOT NULL,
    at REAL NOT NULL, PRIMARY KEY (run_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS memos (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL NOT NULL) WITHOUT ROWID;
"""
# The record's attributes kept in the ``fields`` JSON (the rest have columns or tables).
_FIELDS = ("started_at", "cost_usd", "final_output", "error", "cancelled_by", "result",
           "starts")
_COLUMNS = "run_id, tenant, idem_key, status, created_at, finished_at, spec, fields"


class _Pending:
    """One change waiting in a group commit; ``outcome`` is its event's seq or its error."""

    __slots__ = ("change", "now", "outcome", "run_id", "written")

    def __init__(self, run_id: str, change: RunChange, now: float) -> None:
        self.run_id, self.change, self.now = run_id, change, now
        self.written = False
        self.outcome: int | BaseException | None = None


def _commit_all(db: sqlite3.Connection, batch: Sequence[_Pending]) -> None:
    for number, item in enumerate(batch):
        db.execute(f"SAVEPOINT change_{number}")
        try:
            item.outcome = _commit_one(db, item.run_id, item.change, item.now)
        except NotFound as exc:
            db.execute(f"ROLLBACK TO change_{number}")
            item.outcome = exc
        db.execute(f"RELEASE change_{number}")


def _commit_one(db: sqlite3.Connection, run_id: str, change: RunChange, now: float) -> int:
    row = db.execute("SELECT fields FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is None:
        raise NotFound(f"no workflow run {run_id!r}")
    if change.fields:
        fields = orjson.loads(row[0])
        fields.update((k, v) for k, v in change.fields.items() if k in _FIELDS)
        db.execute("UPDATE runs SET fields = ? WHERE run_id = ?", (orjson.dumps(fields), run_id))
    if change.status is not None:
        db.execute("UPDATE runs SET status = ? WHERE run_id = ?", (change.status, run_id))
    if "finished_at" in change.fields:
        db.execute("UPDATE runs SET finished_at = ? WHERE run_id = ?",
                   (change.fields["finished_at"], run_id))
    for name, op in change.ops.items():
        db.execute("UPDATE ops SET state = ? WHERE run_id = ? AND name = ?",
                   (orjson.dumps(op.to_json()), run_id, name))
    if change.event is None:
        return 0
    (last,) = db.execute("SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = ?",
                         (run_id,)).fetchone()
    name, data = change.event
    db.execute("INSERT INTO events (run_id, seq, name, data, at) VALUES (?, ?, ?, ?, ?)",
               (run_id, last + 1, name, orjson.dumps(data), now))
    return int(last) + 1


class SqliteRunStore:
    """Open with :meth:`open`; every other method is async and runs in a worker thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._limiter = trio.CapacityLimiter(1)
        self._error: str | None = None
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpoint_limiter = trio.CapacityLimiter(1)
        self._commits = 0  # since the last checkpoint
        self._pending: list[_Pending] = []  # changes waiting for the next batch
        self._writing = False
        self._batch_written = trio.Event()

    # ---- plumbing ---------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            result = await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        except (sqlite3.Error, OSError) as exc:
            self._error = f"run store {self.path}: {_describe(exc)}"
            raise StoreUnavailable(self._error) from None
        self._error = None
        return result

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreUnavailable(f"run store {self.path}: not open")
        return self._db

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(db)
            db.commit()
            self._commits += 1
            if self._commits >= _CHECKPOINT_FRAMES:  # nobody calls tidy(): do it here
                self._commits = 0
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except BaseException:
            # A failed COMMIT (SQLITE_BUSY, an I/O error) may leave the transaction open: every
            # later BEGIN would then fail ("cannot start a transaction within a transaction").
            if db.in_transaction:
                db.rollback()
            raise
        return result

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn``'s queries on one snapshot: a run's row and its ops are read together,
        never half before and half after another process's commit."""
        db = self.db
        db.execute("BEGIN")
        try:
            return fn(db)
        finally:
            db.rollback()

    # ---- RunStore ---------------------------------------------------------------------------

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                 timeout=5.0)
            try:
                (check,) = db.execute("PRAGMA quick_check").fetchone()
                if check != "ok":
                    raise sqlite3.DatabaseError(
                        f"the file is corrupt ({' '.join(check.split())})")
                # Checked before anything is written: a file this version cannot read is
                # left exactly as it was (the journal mode is kept in the file).
                (version,) = db.execute("PRAGMA user_version").fetchone()
                if version > _VERSION:
                    raise sqlite3.DatabaseError(
                        f"it was written by a newer llm-router (schema {version}, this one "
                        f"knows {_VERSION}): upgrade, or set state.path to another file")
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                # Checkpoints (the write-ahead log copied into the file, with an fsync) run in
                # tidy(), on a connection of their own, not inside whichever commit crosses
                # SQLite's threshold (that put 5-8 ms into one op in about 125).
                db.execute("PRAGMA wal_autocheckpoint=0")
                db.executescript(_SCHEMA)
                db.execute(f"PRAGMA user_version={_VERSION}")
            except BaseException:
                db.close()
                raise
            return db

        self._db = await self._run(connect)

        def connect_checkpointer() -> sqlite3.Connection:
            return sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                   timeout=5.0)

        self._checkpointer = await self._run(connect_checkpointer)

    async def tidy(self) -> None:
        """Checkpoint the write-ahead log (``PASSIVE``: it never blocks a writer), on its
        own connection and thread, so commits never wait for the fsync. The runtime calls
        this every second or so; a log left unchecked past ``_CHECKPOINT_FRAMES`` commits is
        checkpointed by the commit that finds it so."""
        db = self._checkpointer
        if db is None:
            return
        self._commits = 0
        try:
            await trio.to_thread.run_sync(db.execute, "PRAGMA wal_checkpoint(PASSIVE)",
                                          limiter=self._checkpoint_limiter)
        except sqlite3.Error as exc:
            log.warning("run store %s: checkpoint failed: %s", self.path, _describe(exc))

    async def close(self) -> None:
        if self._checkpointer is not None:
            checkpointer, self._checkpointer = self._checkpointer, None
            await trio.to_thread.run_sync(checkpointer.close, limiter=self._checkpoint_limiter)
        if self._db is not None:
            db, self._db = self._db, None
            await self._run(db.close)

    def health(self) -> dict[str, Any]:
        state = {"status": "ok"} if self._error is None else {"status": "error",
                                                               "error": self._error}
        return state | {"kind": "sqlite", "path": str(self.path)}

    async def create(self, record: RunRecord, *, owner: str | None, lease_sec: float,
                     now: float) -> tuple[RunRecord, bool]:
        def insert(db: sqlite3.Connection) -> tuple[RunRecord, bool]:
            if record.idempotency_key is not None:
                row = db.execute(
                    f"SELECT {_COLUMNS} FROM runs WHERE tenant = ? AND idem_key = ?",
                    (record.spec.tenant, record.idempotency_key)).fetchone()
                if row is not None:
                    return _record(db, row), False
            db.execute(
                "INSERT INTO runs (run_id, tenant, idem_key, status, created_at, finished_at,"
                " owner, lease_until, spec, fields) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.run_id, record.spec.tenant, record.idempotency_key, record.status,
                 record.created_at, record.finished_at, owner,
                 now + lease_sec if owner is not None else 0.0,
                 orjson.dumps(record.spec.to_json()), _fields(record)))
            db.executemany(
                "INSERT INTO ops (run_id, name, ord, state) VALUES (?, ?, ?, ?)",
                [(record.run_id, name, i, orjson.dumps(op.to_json()))
                 for i, (name, op) in enumerate(record.ops.items())])
            return record, True

        return await self._run(self._write, insert)

    async def get(self, run_id: str, *, tenant: str | None) -> RunRecord | None:
        def read(db: sqlite3.Connection) -> RunRecord | None:
            row = db.execute(f"SELECT {_COLUMNS} FROM runs WHERE run_id = ?",
                             (run_id,)).fetchone()
            if row is None or (tenant is not None and row[1] != tenant):
                return None
            return _record(db, row)

        return await self._run(self._read, read)

    async def list(self, *, tenant: str | None, status: str | None,
                   limit: int) -> Sequence[RunRecord]:
        def read(db: sqlite3.Connection) -> list[RunRecord]:
            where, args = [], []
            if tenant is not None:
                where.append("tenant = ?")
                args.append(tenant)
            if status is not None:
                where.append("status = ?")
                args.append(status)
            clause = f"WHERE {' AND '.join(where)}" if where else ""
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM runs {clause} ORDER BY created_at DESC, run_id DESC "
                "LIMIT ?", (*args, limit)).fetchall()
            return [_record(db, row) for row in rows]

        return await self._run(self._read, read)

    async def commit(self, run_id: str, change: RunChange, *, now: float) -> int:
        """Group commit: changes that arrive while a batch is being written wait for the
        next one, and each batch is one transaction in one trip to the worker thread (the
        trip, ~0.2 ms, costs more than the writing). Each change still either happens whole
        or not at all (a savepoint each), in the order the calls were made."""
        item = _Pending(run_id, change, now)
        self._pending.append(item)
        try:
            while not item.written:
                if self._writing:
                    await self._batch_written.wait()
                else:
                    await self._write_pending()
        except BaseException:
            if item in self._pending:  # cancelled before its batch was taken: not written
                self._pending.remove(item)
            raise
        if isinstance(item.outcome, BaseException):
            raise item.outcome
        assert item.outcome is not None
        return item.outcome

    async def _write_pending(self) -> None:
        batch, self._pending = self._pending, []
        self._writing = True
        try:
            # Shielded: the batch holds other callers' changes, and the write is short (or
            # fails after the 5 s lock wait).
            with trio.CancelScope(shield=True):
                await self._run(self._write, lambda db: _commit_all(db, batch))
        except BaseException as exc:
            for item in batch:  # the transaction was rolled back: none of it happened
                item.outcome = exc
            raise
        finally:
            for item in batch:
                item.written = True
            self._writing = False
            self._batch_written.set()
            self._batch_written = trio.Event()

    async def events(self, run_id: str, *, after: int, limit: int) -> Sequence[RunEvent]:
        def read() -> list[RunEvent]:
            rows = self.db.execute(
                "SELECT seq, name, data FROM events WHERE run_id = ? AND seq > ? "
                "ORDER BY seq LIMIT ?", (run_id, after, limit)).fetchall()
            return [RunEvent(seq, name, orjson.loads(data)) for seq, name, data in rows]

        return await self._run(read)

    async def claim(self, *, owner: str, lease_sec: float, now: float,
                    alive: Callable[[str], bool], limit: int) -> Sequence[RunRecord]:
        def take(db: sqlite3.Connection) -> list[RunRecord]:
            rows = db.execute(
                f"SELECT {_COLUMNS}, owner, lease_until FROM runs "
                "WHERE status IN ('queued', 'running') ORDER BY created_at, run_id").fetchall()
            taken: list[RunRecord] = []
            for row in rows:
                if len(taken) >= limit:
                    break
                held_by, lease_until = row[-2], row[-1]
                if held_by == owner:
                    continue
                if held_by is not None and lease_until >= now and alive(held_by):
                    continue
                db.execute("UPDATE runs SET owner = ?, lease_until = ? WHERE run_id = ?",
                           (owner, now + lease_sec, row[0]))
                taken.append(_record(db, row[:-2]))
            return taken

        return await self._run(self._write, take)

    async def renew(self, *, owner: str, lease_sec: float, now: float) -> None:
        def write(db: sqlite3.Connection) -> None:
            db.execute("UPDATE runs SET lease_until = ? WHERE owner = ? AND status IN "
                       "('queued', 'running')", (now + lease_sec, owner))

        await self._run(self._write, write)

    async def release(self, *, owner: str) -> None:
        def write(db: sqlite3.Connection) -> None:
            db.execute("UPDATE runs SET owner = NULL, lease_until = 0 WHERE owner = ? AND "
                       "status IN ('queued', 'running')", (owner,))

        await self._run(self._write, write)

    async def request_cancel(self, run_id: str, *, tenant: str | None,
                             by: Mapping[str, Any]) -> RunRecord | None:
        def write(db: sqlite3.Connection) -> RunRecord | None:
            row = db.execute(f"SELECT {_COLUMNS} FROM runs WHERE run_id = ?",
                             (run_id,)).fetchone()
            if row is None or (tenant is not None and row[1] != tenant):
                return None
            db.execute("UPDATE runs SET cancel_by = ? WHERE run_id = ? AND cancel_by IS NULL "
                       "AND status IN ('queued', 'running')", (orjson.dumps(dict(by)), run_id))
            return _record(db, row)

        return await self._run(self._write, write)

    async def cancel_requests(self, *, owner: str) -> Sequence[tuple[str, Mapping[str, Any]]]:
        def read() -> list[tuple[str, Mapping[str, Any]]]:
            rows = self.db.execute(
                "SELECT run_id, cancel_by FROM runs WHERE owner = ? AND cancel_by IS NOT NULL "
                "AND status IN ('queued', 'running')", (owner,)).fetchall()
            return [(run_id, orjson.loads(by)) for run_id, by in rows]

        return await self._run(read)

    async def memo_get(self, key: str, *, now: float) -> Memo | None:
        def read() -> Memo | None:
            row = self.db.execute("SELECT value FROM memos WHERE key = ? AND expires_at > ?",
                                  (key, now)).fetchone()
            return None if row is None else Memo(**orjson.loads(row[0]))

        return await self._run(read)

    async def memo_put(self, key: str, memo: Memo, *, expires_at: float) -> None:
        value = orjson.dumps({name: getattr(memo, name) for name in memo.__slots__})

        def write(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO memos (key, value, expires_at) VALUES (?, ?, ?)",
                       (key, value, expires_at))

        await self._run(self._write, write)

    async def expire(self, *, finished_before: float, now: float) -> int:
        def write(db: sqlite3.Connection) -> int:
            gone = [row[0] for row in db.execute(
                "SELECT run_id FROM runs WHERE finished_at IS NOT NULL AND finished_at < ? "
                "AND status NOT IN ('queued', 'running')", (finished_before,))]
            for table in ("events", "ops", "runs"):
                db.executemany(f"DELETE FROM {table} WHERE run_id = ?", [(r,) for r in gone])
            db.execute("DELETE FROM memos WHERE expires_at <= ?", (now,))
            return len(gone)

        return await self._run(self._write, write)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return f"the file is corrupt or not a run store ({text})"
    return text


def _fields(record: RunRecord) -> bytes:
    return orjson.dumps({name: getattr(record, name) for name in _FIELDS})


def _record(db: sqlite3.Connection, row: Sequence[Any]) -> RunRecord:
    run_id, _tenant, idem_key, status, created_at, finished_at, spec, fields = row
    ops = {name: OpState.from_json(orjson.loads(state)) for name, state in db.execute(
        "SELECT name, state FROM ops WHERE run_id = ? ORDER BY ord", (run_id,))}
    return RunRecord(run_id=run_id, spec=RunSpec.from_json(orjson.loads(spec)),
                     created_at=created_at, status=status, ops=ops, finished_at=finished_at,
                     idempotency_key=idem_key, **orjson.loads(fields))
