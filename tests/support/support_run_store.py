"""Support for the run store tests: records to store, a store of each kind (the embedded one
on a file, the shared one on a real ``redis-server``), another store on the same data (a
second router process), what a deleted run left behind, and a file made read-only even for
root (who ignores permission bits: the immutable attribute instead).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from support_stores import KINDS, StoreKinds

from engine.core.workflow.runs import OpState, RunRecord, RunSpec
from engine.stores import RunStore, SqliteRunStore
from engine.stores.redis import RedisRunStore

__all__ = ["STORE_KINDS", "TRACEPARENT", "leftovers", "make_record", "open_another",
           "open_redis_run_store", "open_run_store", "open_store_of", "read_only"]

STORE_KINDS = KINDS
#: The submitting request's span, kept with a run so every start of it is traced under it.
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def make_record(run_id: str, *, tenant: str = "", created_at: float = 0.0,
                ops: Sequence[str] = ("a", "b"), key: str | None = None,
                workflow_text: str = "ops: {}") -> RunRecord:
    """A queued run as ``Runs.submit`` records it: every op pending."""
    spec = RunSpec(workflow_text=workflow_text, input=f"input of {run_id}",
                   variables={"n": 1, "list": [1, "two"]}, workflow_name="wf", title="title",
                   tenant=tenant, cache_read=False, cache_write=True,
                   traceparent=TRACEPARENT)
    return RunRecord(run_id=run_id, spec=spec, created_at=created_at,
                     ops={name: OpState() for name in ops}, idempotency_key=key)


RUN_STORES = StoreKinds(SqliteRunStore, RedisRunStore, lambda store: Path(store.path))
open_run_store = RUN_STORES.open_embedded
open_redis_run_store = RUN_STORES.open_shared
open_store_of = RUN_STORES.open_of
open_another = RUN_STORES.open_another


async def leftovers(store: RunStore, run_ids: Sequence[str]) -> set[str]:
    """Where anything of ``run_ids`` is still kept: SQLite tables with rows of theirs, or
    Redis keys named after them or holding them (an index)."""
    wanted = set(run_ids)
    found: set[str] = set()
    if isinstance(store, SqliteRunStore):
        db = sqlite3.connect(store.path)
        try:
            for table in ("runs", "ops", "events"):
                rows = db.execute(f"SELECT DISTINCT run_id FROM {table}").fetchall()
                if {run_id for (run_id,) in rows} & wanted:
                    found.add(table)
        finally:
            db.close()
        return found
    assert isinstance(store, RedisRunStore)
    keys = await store.redis.call("KEYS", "llmr:*")
    assert isinstance(keys, list)
    for raw in keys:
        assert isinstance(raw, bytes)
        key = raw.decode()
        kind = await store.redis.call("TYPE", key)
        members: object = []
        if kind == b"zset":
            members = await store.redis.call("ZRANGE", key, 0, -1)
        elif kind == b"set":
            members = await store.redis.call("SMEMBERS", key)
        elif kind == b"string":
            members = [await store.redis.call("GET", key)]
        assert isinstance(members, list)
        if any(r in key for r in wanted) or {m.decode() for m in members} & wanted:
            found.add(key)
    return found


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` (a file or a folder) cannot be written while the block runs."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if shutil.which("chattr") is None:
        pytest.skip("root, and no chattr to make a file read-only")
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"root, and chattr +i does not work here: {done.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
