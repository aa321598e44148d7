"""Support for the run store tests: records to store, a store opened on a file, and a file
made read-only even for root (who ignores permission bits: the immutable attribute instead).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest

from engine.core.workflow.runs import OpState, RunRecord, RunSpec
from engine.stores import SqliteRunStore

__all__ = ["make_record", "open_run_store", "read_only"]


def make_record(run_id: str, *, tenant: str = "", created_at: float = 0.0,
                ops: Sequence[str] = ("a", "b"), key: str | None = None,
                workflow_text: str = "ops: {}") -> RunRecord:
    """A queued run as ``Runs.submit`` records it: every op pending."""
    spec = RunSpec(workflow_text=workflow_text, input=f"input of {run_id}",
                   variables={"n": 1, "list": [1, "two"]}, workflow_name="wf", title="title",
                   tenant=tenant, cache_read=False, cache_write=True)
    return RunRecord(run_id=run_id, spec=spec, created_at=created_at,
                     ops={name: OpState() for name in ops}, idempotency_key=key)


@asynccontextmanager
async def open_run_store(path: Path) -> AsyncIterator[SqliteRunStore]:
    store = SqliteRunStore(path)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


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
