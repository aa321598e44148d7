"""The embedded run store when its file fails it: corrupt, of a newer schema, read-only, in a
place that cannot hold it, or full. Each is a :class:`StoreUnavailable` naming the file and
the cause (``health()`` says it too), never a crash; a failed write leaves nothing half done,
and the store works again once the cause is gone.

Also: a read sees another process's commit whole or not at all.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio
from support_run_store import make_record, open_run_store, read_only

from engine.core.workflow.runs import OpState, RunChange
from engine.errors import StoreUnavailable
from engine.stores import Memo, SqliteRunStore

LEASE = 15.0


async def make_store_file(path: Path, runs: int = 30) -> None:
    """A closed store with some pages to damage."""
    async with open_run_store(path) as store:
        for i in range(runs):
            record = make_record(f"run_{i}", created_at=float(i), workflow_text="ops: {}" * 200)
            await store.create(record, owner="me", lease_sec=LEASE, now=0.0)


async def assert_unavailable(path: Path, *words: str) -> str:
    """Opening ``path`` fails with a StoreUnavailable naming it and ``words``; its message."""
    store = SqliteRunStore(path)
    with pytest.raises(StoreUnavailable) as caught:
        await store.open()
    message = caught.value.message
    head = f"run store {path}: "
    assert message.startswith(head)
    for word in words:
        assert word in message.removeprefix(head)  # the cause, not the path (a test's name)
    assert "\n" not in message
    assert store.health() == {"status": "error", "error": message, "kind": "sqlite",
                              "path": str(path)}
    with pytest.raises(StoreUnavailable, match="not open"):
        await store.get("run_0", tenant=None)
    return message


@pytest.fixture
async def run_store(tmp_path: Path) -> AsyncIterator[SqliteRunStore]:
    """The embedded store alone (the shared fixture gives each kind in turn)."""
    async with open_run_store(tmp_path / "state.db") as store:
        yield store


async def test_health_says_what_the_store_is(tmp_path: Path, run_store: SqliteRunStore) -> None:
    assert run_store.health() == {"status": "ok", "kind": "sqlite",
                                  "path": str(tmp_path / "state.db")}


# ---- opening --------------------------------------------------------------------------------


async def test_open_makes_the_folders_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.db"
    async with open_run_store(path) as store:
        assert store.health()["status"] == "ok"
    assert path.is_file()


async def test_an_empty_file_is_a_new_store(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"")
    async with open_run_store(path) as store:
        assert await store.list(tenant=None, status=None, limit=10) == []


async def test_a_store_not_open_is_unavailable(tmp_path: Path) -> None:
    store = SqliteRunStore(tmp_path / "state.db")
    with pytest.raises(StoreUnavailable, match="not open"):
        await store.list(tenant=None, status=None, limit=10)
    await store.open()
    await store.close()
    with pytest.raises(StoreUnavailable, match="not open"):
        await store.memo_get("k", now=0.0)
    await store.close()  # closing twice is harmless


def garbage(data: bytes) -> bytes:
    return random.Random(0).randbytes(len(data))


def text(data: bytes) -> bytes:
    return b"these are not the pages you are looking for\n" * 200


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def page_overwritten(data: bytes) -> bytes:
    page = 4096
    return data[: 3 * page] + b"\xff" * 2000 + data[3 * page + 2000:]


def schema_overwritten(data: bytes) -> bytes:
    """The first page past the 100-byte header: where the tables are described."""
    return data[:100] + b"\xff" * 3996 + data[4096:]


@pytest.mark.parametrize("damage", [garbage, text, truncated, page_overwritten,
                                    schema_overwritten])
async def test_a_corrupt_file_is_refused_and_left_alone(
        tmp_path: Path, damage: Callable[[bytes], bytes]) -> None:
    path = tmp_path / "state.db"
    await make_store_file(path)
    path.write_bytes(damage(path.read_bytes()))
    before = path.read_bytes()
    await assert_unavailable(path, "corrupt")
    assert path.read_bytes() == before


async def test_a_file_of_a_newer_schema_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    await make_store_file(path, runs=1)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=DELETE")  # as a future version might keep it
    db.execute("PRAGMA user_version=2")
    db.close()
    before = path.read_bytes()
    message = await assert_unavailable(path, "newer llm-router", "schema 2", "knows 1",
                                       "state.path")
    assert path.read_bytes() == before, message
    assert not Path(f"{path}-wal").exists()


async def test_a_file_of_this_schema_opens_again(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    await make_store_file(path, runs=3)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (1,)
    db.close()
    async with open_run_store(path) as store:
        assert len(await store.list(tenant=None, status=None, limit=10)) == 3


async def test_a_path_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "not-a-folder").write_text("x")
    await assert_unavailable(tmp_path / "not-a-folder" / "state.db", "not-a-folder")


async def test_a_folder_at_the_path_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state.db").mkdir()
    await assert_unavailable(tmp_path / "state.db", "unable to open")


async def test_a_read_only_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    with read_only(folder):
        await assert_unavailable(folder / "state.db", "unable to open")
    assert list(folder.iterdir()) == []


async def test_a_read_only_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    await make_store_file(path, runs=1)
    before = path.read_bytes()
    with read_only(path):
        await assert_unavailable(path, "readonly")
    assert path.read_bytes() == before


# ---- a full disk ----------------------------------------------------------------------------


def fill_up(store: SqliteRunStore) -> None:
    """No page more for the file: SQLite's own "database or disk is full" (SQLITE_FULL), as on
    a full disk. Set on the store's connection between two operations."""
    (pages,) = store.db.execute("PRAGMA page_count").fetchone()
    store.db.execute(f"PRAGMA max_page_count = {pages}")


def make_room(store: SqliteRunStore) -> None:
    store.db.execute("PRAGMA max_page_count = 1073741823")


async def test_a_full_disk_fails_a_commit_whole_until_there_is_room(
        run_store: SqliteRunStore) -> None:
    await run_store.create(make_record("run_1"), owner="me", lease_sec=LEASE, now=0.0)
    change = RunChange(status="running", ops={"a": OpState(status="running", started_at=1.0)},
                       fields={"started_at": 1.0, "starts": 1},
                       event=("op_started", {"op": "a", "padding": "x" * 100_000}))
    fill_up(run_store)
    with pytest.raises(StoreUnavailable, match="full") as caught:
        await run_store.commit("run_1", change, now=1.0)
    assert caught.value.message.startswith(f"run store {run_store.path}: ")
    assert run_store.health()["status"] == "error"
    assert run_store.health()["error"] == caught.value.message
    found = await run_store.get("run_1", tenant=None)  # reads still work, and saw nothing
    assert found is not None
    assert (found.status, found.started_at, found.starts) == ("queued", None, 0)
    assert found.ops["a"] == OpState()
    assert await run_store.events("run_1", after=0, limit=10) == []
    assert run_store.health()["status"] == "ok"  # the last operation worked

    make_room(run_store)
    assert await run_store.commit("run_1", change, now=1.0) == 1
    found = await run_store.get("run_1", tenant=None)
    assert found is not None and found.status == "running" and found.ops["a"].status == "running"


async def test_a_full_disk_fails_a_submission_without_a_trace(run_store: SqliteRunStore
                                                              ) -> None:
    fill_up(run_store)
    big = make_record("run_1", workflow_text="ops: {}" * 20_000, key="k")
    with pytest.raises(StoreUnavailable, match="full"):
        await run_store.create(big, owner="me", lease_sec=LEASE, now=0.0)
    with pytest.raises(StoreUnavailable, match="full"):
        await run_store.memo_put("k", Memo("x" * 100_000, None, "m", 1, 1, 1, 0.0),
                                 expires_at=9.0)
    assert await run_store.get("run_1", tenant=None) is None
    assert await run_store.memo_get("k", now=0.0) is None
    make_room(run_store)
    _, created = await run_store.create(big, owner="me", lease_sec=LEASE, now=0.0)
    assert created  # the key was not taken by the failed attempt


# ---- reading while another process writes ----------------------------------------------------


@pytest.mark.parametrize("read", ["get", "list"])
async def test_a_read_sees_another_process_commit_whole_or_not_at_all(tmp_path: Path,
                                                                      read: str) -> None:
    """The other process commits the run's status and an op between this store's reading the
    run's row and its ops (SQLite's trace hook runs it there): the record read is the one
    from before that commit, not half of each."""
    path = tmp_path / "state.db"
    async with open_run_store(path) as reader, open_run_store(path) as writer:
        await reader.create(make_record("run_1", ops=("a",)), owner="me", lease_sec=LEASE,
                            now=0.0)
        done = RunChange(status="succeeded", ops={"a": OpState(status="succeeded", output="o")},
                         fields={"finished_at": 2.0}, event=("result", {}))
        committed: list[int] = []

        async def commit_done() -> int:
            return await writer.commit("run_1", done, now=2.0)

        def between(sql: str) -> None:
            if sql.startswith("SELECT name, state FROM ops") and not committed:
                committed.append(trio.from_thread.run(commit_done))

        reader.db.set_trace_callback(between)
        try:
            if read == "get":
                found = await reader.get("run_1", tenant=None)
            else:
                (found,) = await reader.list(tenant=None, status=None, limit=10)
        finally:
            reader.db.set_trace_callback(None)
        assert committed == [1]
        assert found is not None
        assert (found.status, found.ops["a"].status, found.finished_at) == (
            "queued", "pending", None)
        after = await reader.get("run_1", tenant=None)
        assert after is not None
        assert (after.status, after.ops["a"].status, after.finished_at) == (
            "succeeded", "succeeded", 2.0)


# ---- checkpoints ----------------------------------------------------------------------------


async def test_commits_stay_in_the_log_until_tidy_checkpoints_it(tmp_path: Path) -> None:
    database = tmp_path / "state.db"
    async with open_run_store(database) as store:
        before = database.stat().st_size
        for i in range(40):
            await store.create(make_record(f"run_{i}", created_at=i), owner="me",
                               lease_sec=15, now=0)
            await store.commit(f"run_{i}", RunChange(status="running"), now=0)
        assert database.stat().st_size == before  # no commit checkpointed on its own
        await store.tidy()
        assert database.stat().st_size > before
        assert len(await store.list(tenant=None, status="running", limit=100)) == 40
