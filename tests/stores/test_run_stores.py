"""Both run stores, the embedded one (``RunStore``) and the shared one
(``RedisRunStore``, on a real ``redis-server``), keep the ``RunStore`` rules, called the way
``engine.runtime.runs`` calls them: create (with ``Idempotency-Key``), get and list, commit and
events, claim / renew / release of leases, cancel requests, memos, expiry, and a second store
on the same data (a second router process) seeing the same runs. Every test here runs on both
(the ``run_store`` fixture).

Times are explicit (``now=``); nothing here waits on a clock. What is particular to one store
is in test_sqlite_runs_failures.py (a corrupt, read-only or full file) and
test_redis_runs.py (Redis going away, its keys).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest
import trio
from support_run_store import TRACEPARENT, leftovers, make_record, open_another

from engine.core.workflow.runs import OpState, RunChange, RunRecord, memo_key
from engine.errors import NotFound
from engine.stores import Memo, RunStore

LEASE = 15.0


def everyone_alive(owner: str) -> bool:
    return True


def alive_except(*dead: str) -> Callable[[str], bool]:
    return lambda owner: owner not in dead


async def add(store: RunStore, record: RunRecord, *, owner: str | None = "me",
              now: float = 0.0) -> RunRecord:
    stored, created = await store.create(record, owner=owner, lease_sec=LEASE, now=now)
    assert created
    return stored


async def set_status(store: RunStore, run_id: str, status: str, *,
                     finished_at: float | None = None) -> None:
    fields = {} if finished_at is None else {"finished_at": finished_at}
    await store.commit(run_id, RunChange(status=status, fields=fields), now=0.0)


def ids(records: Iterable[RunRecord]) -> list[str]:
    return [r.run_id for r in records]


# ---- create ---------------------------------------------------------------------------------


async def test_create_stores_the_whole_record(run_store: RunStore) -> None:
    record = make_record("run_1", tenant="t1", created_at=12.5, ops=("z", "a", "m"), key="k")
    stored, created = await run_store.create(record, owner="me", lease_sec=LEASE, now=12.5)
    assert created and stored is record
    found = await run_store.get("run_1", tenant="t1")
    assert found == record
    assert found is not None and list(found.ops) == ["z", "a", "m"]  # the workflow's order
    assert found.spec.traceparent == TRACEPARENT
    async with open_another(run_store) as other:  # what a process resuming the run reads
        again = await other.get("run_1", tenant=None)
        assert again is not None and again.spec.traceparent == TRACEPARENT


async def test_an_idempotency_key_gives_the_tenants_run_back(run_store: RunStore) -> None:
    first = await add(run_store, make_record("run_1", tenant="t1", key="k", created_at=1))
    again, created = await run_store.create(make_record("run_2", tenant="t1", key="k"),
                                            owner="me", lease_sec=LEASE, now=2)
    assert not created and again == first
    other, created = await run_store.create(make_record("run_3", tenant="t2", key="k"),
                                            owner="me", lease_sec=LEASE, now=3)
    assert created and other.run_id == "run_3"
    for run_id in ("run_4", "run_5"):  # no key: always a new run
        await add(run_store, make_record(run_id, tenant="t1"))
    assert sorted(ids(await run_store.list(tenant="t1", status=None, limit=10))) == [
        "run_1", "run_4", "run_5"]
    assert await run_store.get("run_2", tenant=None) is None


async def test_one_key_submitted_at_once_by_two_processes_is_one_run(run_store: RunStore
                                                                     ) -> None:
    results: list[tuple[RunRecord, bool]] = []
    async with open_another(run_store) as b:
        a = run_store

        async def submit(store: RunStore, i: int) -> None:
            results.append(await store.create(make_record(f"run_{i}", key="k"), owner=f"p{i}",
                                              lease_sec=LEASE, now=i))

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(submit, a if i % 2 else b, i)
    assert sum(created for _, created in results) == 1
    assert len({record.run_id for record, _ in results}) == 1


# ---- get and list ---------------------------------------------------------------------------


async def test_get_sees_only_the_tenants_runs(run_store: RunStore) -> None:
    await add(run_store, make_record("run_t", tenant="t1"))
    await add(run_store, make_record("run_default"))  # the tenant of a router without keys: ""
    assert await run_store.get("run_unknown", tenant=None) is None
    assert await run_store.get("run_t", tenant="t2") is None
    assert await run_store.get("run_t", tenant="") is None
    assert await run_store.get("run_default", tenant="t1") is None
    for tenant in ("t1", None):
        found = await run_store.get("run_t", tenant=tenant)
        assert found is not None and found.spec.tenant == "t1"
    assert await run_store.get("run_default", tenant="") is not None


async def test_list_is_newest_first_filtered_and_limited(run_store: RunStore) -> None:
    for i in range(1, 6):
        await add(run_store, make_record(f"run_a{i}", tenant="t1", created_at=float(i)))
    await add(run_store, make_record("run_b1", tenant="t2", created_at=2.5))
    await add(run_store, make_record("run_b2", tenant="t2", created_at=9.0))
    await set_status(run_store, "run_a2", "running")
    await set_status(run_store, "run_a4", "succeeded", finished_at=10.0)

    assert ids(await run_store.list(tenant="t1", status=None, limit=100)) == [
        "run_a5", "run_a4", "run_a3", "run_a2", "run_a1"]
    assert ids(await run_store.list(tenant="t2", status=None, limit=100)) == ["run_b2", "run_b1"]
    assert ids(await run_store.list(tenant=None, status=None, limit=3)) == [
        "run_b2", "run_a5", "run_a4"]
    assert ids(await run_store.list(tenant="t1", status="queued", limit=100)) == [
        "run_a5", "run_a3", "run_a1"]
    assert ids(await run_store.list(tenant="t1", status="running", limit=100)) == ["run_a2"]
    assert ids(await run_store.list(tenant="t2", status="running", limit=100)) == []
    assert await run_store.list(tenant="nobody", status=None, limit=100) == []
    succeeded = await run_store.list(tenant="t1", status="succeeded", limit=100)
    assert [(r.status, r.finished_at) for r in succeeded] == [("succeeded", 10.0)]
    assert all(len(r.ops) == 2 for r in await run_store.list(tenant=None, status=None, limit=9))


async def test_has_more_is_read_with_one_run_past_the_limit(run_store: RunStore) -> None:
    """The API asks for ``limit + 1`` runs: one more than it shows means ``has_more``."""
    for i in range(3):
        await add(run_store, make_record(f"run_{i}", created_at=float(i)))
    for limit, has_more in ((1, True), (2, True), (3, False), (10, False)):
        found = await run_store.list(tenant="", status=None, limit=limit + 1)
        assert (len(found) > limit) is has_more
        assert ids(found[:limit]) == ["run_2", "run_1", "run_0"][:limit]


async def test_list_orders_runs_of_the_same_moment_by_id(run_store: RunStore) -> None:
    for run_id in ("run_b", "run_c", "run_a"):
        await add(run_store, make_record(run_id, created_at=5.0))
    assert ids(await run_store.list(tenant=None, status=None, limit=10)) == [
        "run_c", "run_b", "run_a"]


# ---- commit and events ----------------------------------------------------------------------


async def test_a_commit_writes_status_fields_ops_and_event(run_store: RunStore) -> None:
    await add(run_store, make_record("run_1", ops=("a", "b")))
    started = RunChange(status="running", fields={"started_at": 3.0, "starts": 1},
                        event=("run_started", {"run_id": "run_1", "starts": 1}))
    assert await run_store.commit("run_1", started, now=3.0) == 1
    op_a = OpState(status="succeeded", model="m", tier=2, cost_usd=0.25, output="é ✓",
                   value={"k": [1, None]}, attempts=1, ms=12.5, started_at=3.0,
                   finished_at=4.0)
    finished = RunChange(ops={"a": op_a}, fields={"cost_usd": 0.25},
                         event=("op_finished", {"op": "a", "output": "é ✓"}))
    assert await run_store.commit("run_1", finished, now=4.0) == 2
    result = {"run_id": "run_1", "status": "completed", "final_output": "done"}
    ended = RunChange(status="succeeded", fields={
        "finished_at": 5.0, "final_output": "done", "result": result, "error": None},
        event=("result", result))
    assert await run_store.commit("run_1", ended, now=5.0) == 3

    found = await run_store.get("run_1", tenant=None)
    assert found is not None
    assert (found.status, found.started_at, found.starts, found.finished_at) == (
        "succeeded", 3.0, 1, 5.0)
    assert (found.cost_usd, found.final_output, found.result) == (0.25, "done", result)
    assert found.ops == {"a": op_a, "b": OpState()}

    memory = make_record("run_1", ops=("a", "b"))
    for change in (started, finished, ended):
        change.apply(memory)
    assert found == memory  # what the runtime keeps in memory is what the store kept


async def test_event_seqs_count_from_one_for_each_run(run_store: RunStore) -> None:
    await add(run_store, make_record("run_a"))
    await add(run_store, make_record("run_b"))
    seqs = []
    for run_id in ("run_a", "run_b", "run_a", "run_a", "run_b"):
        seqs.append(await run_store.commit(run_id, RunChange(event=("e", {})), now=1.0))
    assert seqs == [1, 1, 2, 3, 2]
    assert await run_store.commit("run_a", RunChange(status="running"), now=1.0) == 0
    assert await run_store.commit("run_a", RunChange(event=("e", {})), now=1.0) == 4


async def test_concurrent_commits_from_two_processes_get_every_seq_once(run_store: RunStore
                                                                        ) -> None:
    async with open_another(run_store) as b:
        a = run_store
        await add(a, make_record("run_1"))
        seqs: list[int] = []

        async def commit(store: RunStore, i: int) -> None:
            seqs.append(await store.commit("run_1", RunChange(event=("e", {"i": i})), now=i))

        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(commit, a if i % 2 else b, i)
        events = await b.events("run_1", after=0, limit=100)
    assert sorted(seqs) == list(range(1, 41))
    assert [e.seq for e in events] == list(range(1, 41))
    assert sorted(e.data["i"] for e in events) == list(range(40))


async def test_events_resume_after_a_seq(run_store: RunStore) -> None:
    await add(run_store, make_record("run_1"))
    await add(run_store, make_record("run_2"))
    await run_store.commit("run_2", RunChange(event=("other", {})), now=0.0)
    data = [{"op": "a", "n": i, "nested": {"list": [i, "ü", None]}} for i in range(5)]
    for i, item in enumerate(data):
        await run_store.commit("run_1", RunChange(event=(f"event_{i}", item)), now=float(i))

    every = await run_store.events("run_1", after=0, limit=100)
    assert [(e.seq, e.name, e.data) for e in every] == [
        (i + 1, f"event_{i}", item) for i, item in enumerate(data)]
    assert [e.seq for e in await run_store.events("run_1", after=2, limit=100)] == [3, 4, 5]
    assert [e.seq for e in await run_store.events("run_1", after=2, limit=2)] == [3, 4]
    assert await run_store.events("run_1", after=5, limit=100) == []
    assert await run_store.events("run_unknown", after=0, limit=100) == []


async def test_a_commit_to_an_unknown_run_is_not_found(run_store: RunStore) -> None:
    await add(run_store, make_record("run_1"))
    with pytest.raises(NotFound, match="run_nope"):
        await run_store.commit("run_nope", RunChange(status="running", event=("e", {})),
                               now=0.0)
    assert await run_store.events("run_nope", after=0, limit=10) == []
    assert run_store.health()["status"] == "ok"  # the store itself is fine
    assert await run_store.commit("run_1", RunChange(event=("e", {})), now=0.0) == 1


# ---- leases: claim, renew, release -----------------------------------------------------------


async def test_claim_takes_unfinished_runs_of_dead_or_no_owners(run_store: RunStore
                                                                ) -> None:
    await add(run_store, make_record("run_dead_queued", created_at=1), owner="dead")
    await add(run_store, make_record("run_live", created_at=2), owner="live")
    await add(run_store, make_record("run_unowned", created_at=3), owner=None)
    await add(run_store, make_record("run_dead_running", created_at=4), owner="dead")
    await set_status(run_store, "run_dead_running", "running")
    for i, status in enumerate(("succeeded", "failed", "cancelled")):
        await add(run_store, make_record(f"run_{status}", created_at=5 + i), owner="dead")
        await set_status(run_store, f"run_{status}", status, finished_at=9.0)

    claimed = await run_store.claim(owner="me", lease_sec=LEASE, now=1.0,
                                    alive=alive_except("dead"), limit=100)
    assert ids(claimed) == ["run_dead_queued", "run_unowned", "run_dead_running"]
    assert [r.status for r in claimed] == ["queued", "queued", "running"]
    assert claimed[0] == make_record("run_dead_queued", created_at=1)
    # now leased to "me", alive: nobody else takes them, nor does "me" take its own again
    for owner in ("other", "me"):
        assert await run_store.claim(owner=owner, lease_sec=LEASE, now=2.0,
                                     alive=everyone_alive, limit=100) == []


async def test_claim_takes_runs_whose_lease_lapsed(run_store: RunStore) -> None:
    await add(run_store, make_record("run_1"), owner="slow", now=100.0)  # leased until 115
    for now in (100.0, 114.9, 115.0):
        assert await run_store.claim(owner="me", lease_sec=LEASE, now=now,
                                     alive=everyone_alive, limit=100) == []
    claimed = await run_store.claim(owner="me", lease_sec=LEASE, now=115.1,
                                    alive=everyone_alive, limit=100)
    assert ids(claimed) == ["run_1"]
    assert await run_store.claim(owner="slow", lease_sec=LEASE, now=120.0,
                                 alive=everyone_alive, limit=100) == []


async def test_claim_takes_the_oldest_runs_first_up_to_the_limit(run_store: RunStore
                                                                 ) -> None:
    for i in (3, 1, 4, 0, 2):
        await add(run_store, make_record(f"run_{i}", created_at=float(i)), owner="dead")
    dead = alive_except("dead")
    assert await run_store.claim(owner="me", lease_sec=LEASE, now=0.0, alive=dead,
                                 limit=0) == []
    assert ids(await run_store.claim(owner="me", lease_sec=LEASE, now=0.0, alive=dead,
                                     limit=2)) == ["run_0", "run_1"]
    assert ids(await run_store.claim(owner="other", lease_sec=LEASE, now=0.0, alive=dead,
                                     limit=100)) == ["run_2", "run_3", "run_4"]


async def test_two_processes_claiming_at_once_never_take_the_same_run(run_store: RunStore
                                                                       ) -> None:
    claims: dict[str, list[str]] = {}
    async with open_another(run_store) as b:
        a = run_store
        for i in range(30):
            await add(a, make_record(f"run_{i:02}", created_at=float(i)), owner="dead")

        async def claim(store: RunStore, owner: str) -> None:
            for _ in range(5):
                taken = await store.claim(owner=owner, lease_sec=LEASE, now=1.0,
                                          alive=alive_except("dead"), limit=4)
                claims.setdefault(owner, []).extend(ids(taken))
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(claim, a, "p1")
            nursery.start_soon(claim, b, "p2")
    taken = claims["p1"] + claims["p2"]
    assert sorted(taken) == [f"run_{i:02}" for i in range(30)]  # each run once


async def test_renew_extends_only_the_owners_unfinished_leases(run_store: RunStore
                                                               ) -> None:
    await add(run_store, make_record("run_mine", created_at=1), owner="me", now=0.0)
    await add(run_store, make_record("run_theirs", created_at=2), owner="them", now=0.0)
    await run_store.renew(owner="me", lease_sec=LEASE, now=10.0)  # leased until 25
    claimed = await run_store.claim(owner="new", lease_sec=LEASE, now=20.0,
                                    alive=everyone_alive, limit=100)
    assert ids(claimed) == ["run_theirs"]
    claimed = await run_store.claim(owner="new", lease_sec=LEASE, now=25.5,
                                    alive=everyone_alive, limit=100)
    assert ids(claimed) == ["run_mine"]


async def test_release_lets_another_process_claim_at_once(run_store: RunStore) -> None:
    await add(run_store, make_record("run_1", created_at=1), owner="me", now=0.0)
    await add(run_store, make_record("run_2", created_at=2), owner="me", now=0.0)
    await add(run_store, make_record("run_other", created_at=3), owner="other", now=0.0)
    await set_status(run_store, "run_2", "running")
    await run_store.release(owner="me")
    claimed = await run_store.claim(owner="next", lease_sec=LEASE, now=1.0,
                                    alive=everyone_alive, limit=100)
    assert ids(claimed) == ["run_1", "run_2"]


# ---- cancel requests ------------------------------------------------------------------------


async def test_the_first_cancel_request_is_kept_for_the_owner(run_store: RunStore
                                                             ) -> None:
    await add(run_store, make_record("run_1", tenant="t1"), owner="me")
    first = {"request_id": "req_1", "at": 5.0, "reason": "changed my mind"}
    found = await run_store.request_cancel("run_1", tenant="t1", by=first)
    assert found is not None and found.run_id == "run_1" and not found.finished
    again = await run_store.request_cancel("run_1", tenant=None, by={"request_id": "req_2"})
    assert again is not None
    assert await run_store.cancel_requests(owner="me") == [("run_1", first)]
    assert await run_store.cancel_requests(owner="someone") == []


async def test_a_cancel_request_for_another_tenant_is_not_recorded(run_store: RunStore
                                                                   ) -> None:
    await add(run_store, make_record("run_1", tenant="t1"), owner="me")
    assert await run_store.request_cancel("run_1", tenant="t2", by={"request_id": "x"}) is None
    assert await run_store.request_cancel("run_nope", tenant=None, by={"request_id": "x"}
                                          ) is None
    assert await run_store.cancel_requests(owner="me") == []


async def test_cancelling_a_finished_run_records_nothing(run_store: RunStore) -> None:
    await add(run_store, make_record("run_1"), owner="me")
    await set_status(run_store, "run_1", "succeeded", finished_at=2.0)
    found = await run_store.request_cancel("run_1", tenant=None, by={"request_id": "x"})
    assert found is not None and found.status == "succeeded" and found.finished
    assert await run_store.cancel_requests(owner="me") == []


async def test_a_cancel_request_follows_the_run_to_its_next_owner(run_store: RunStore
                                                                  ) -> None:
    await add(run_store, make_record("run_1"), owner="dead")
    by = {"request_id": "req_1"}
    await run_store.request_cancel("run_1", tenant=None, by=by)
    await run_store.claim(owner="me", lease_sec=LEASE, now=0.0, alive=alive_except("dead"),
                          limit=100)
    assert await run_store.cancel_requests(owner="me") == [("run_1", by)]
    assert await run_store.cancel_requests(owner="dead") == []
    await set_status(run_store, "run_1", "cancelled", finished_at=1.0)
    assert await run_store.cancel_requests(owner="me") == []


# ---- memos ----------------------------------------------------------------------------------


MEMO = Memo(output="the answer ✓", value={"parsed": [1, 2.5, None]}, model="m", tier=2,
            input_tokens=10, output_tokens=20, cost_usd=0.003)


async def test_a_memo_is_kept_until_it_expires(run_store: RunStore) -> None:
    await run_store.memo_put("k", MEMO, expires_at=100.0)
    assert await run_store.memo_get("k", now=99.9) == MEMO
    assert await run_store.memo_get("k", now=100.0) is None
    assert await run_store.memo_get("other", now=0.0) is None
    newer = Memo(output="newer", value=None, model="m2", tier=1, input_tokens=1,
                 output_tokens=1, cost_usd=0.0)
    await run_store.memo_put("k", newer, expires_at=200.0)
    assert await run_store.memo_get("k", now=150.0) == newer


async def test_memos_belong_to_their_tenant(run_store: RunStore) -> None:
    request = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    mine = memo_key(tenant="t1", op_route="tier:1", request=request)
    theirs = memo_key(tenant="t2", op_route="tier:1", request=request)
    await run_store.memo_put(mine, MEMO, expires_at=100.0)
    assert await run_store.memo_get(mine, now=0.0) == MEMO
    assert await run_store.memo_get(theirs, now=0.0) is None


# ---- expiry ---------------------------------------------------------------------------------


async def test_expire_deletes_only_runs_that_ended_before_the_cutoff(run_store: RunStore
                                                                     ) -> None:
    for run_id, status, at in (("run_succeeded", "succeeded", 10.0),
                               ("run_failed", "failed", 20.0),
                               ("run_cancelled", "cancelled", 99.0),
                               ("run_recent", "succeeded", 101.0)):
        await add(run_store, make_record(run_id))
        await run_store.commit(run_id, RunChange(event=("run_started", {})), now=0.0)
        await set_status(run_store, run_id, status, finished_at=at)
    # unfinished runs, however old, stay
    await add(run_store, make_record("run_queued"))
    await add(run_store, make_record("run_running"))
    await run_store.commit("run_running", RunChange(status="running", event=("e", {})),
                           now=0.0)
    # a finish time without a finished status (not one the runtime writes): still unfinished
    await add(run_store, make_record("run_odd"))
    await run_store.commit("run_odd", RunChange(status="running", fields={"finished_at": 1.0}),
                           now=0.0)

    assert await run_store.expire(finished_before=100.0, now=0.0) == 3
    gone = ("run_succeeded", "run_failed", "run_cancelled")
    for run_id in gone:
        assert await run_store.get(run_id, tenant=None) is None
        assert await run_store.events(run_id, after=0, limit=10) == []
    kept = ["run_odd", "run_running", "run_queued", "run_recent"]
    assert sorted(ids(await run_store.list(tenant=None, status=None, limit=100))) == sorted(kept)
    assert len(await run_store.events("run_running", after=0, limit=10)) == 1
    assert await leftovers(run_store, gone) == set()  # nothing of them is left behind
    assert await run_store.expire(finished_before=100.0, now=0.0) == 0


async def test_expire_deletes_memos_past_their_time(run_store: RunStore) -> None:
    for key, at in (("old", 50.0), ("due", 100.0), ("fresh", 150.0)):
        await run_store.memo_put(key, MEMO, expires_at=at)
    assert await run_store.expire(finished_before=0.0, now=100.0) == 0
    assert [await run_store.memo_get(key, now=0.0) for key in ("old", "due", "fresh")] == [
        None, None, MEMO]


# ---- the same data, another store ----------------------------------------------------------


async def test_another_store_on_the_same_data_has_everything(run_store: RunStore) -> None:
    first = run_store
    record = await add(first, make_record("run_1", tenant="t1", key="k"), owner="me")
    await first.commit("run_1", RunChange(status="running", event=("a", {"n": 1})), now=1)
    await first.commit("run_1", RunChange(ops={"a": OpState(status="succeeded",
                                                           output="out")},
                                          event=("b", {"n": 2})), now=2)
    await first.memo_put("key", MEMO, expires_at=100.0)
    await first.request_cancel("run_1", tenant=None, by={"request_id": "r"})
    before = await first.get("run_1", tenant=None)
    async with open_another(run_store) as second:
        assert await second.get("run_1", tenant="t1") == before
        assert [e.name for e in await second.events("run_1", after=0, limit=10)] == ["a", "b"]
        assert await second.memo_get("key", now=0.0) == MEMO
        assert await second.cancel_requests(owner="me") == [("run_1", {"request_id": "r"})]
        again, created = await second.create(make_record("run_2", tenant="t1", key="k"),
                                              owner="me", lease_sec=LEASE, now=3)
        assert not created and again.run_id == record.run_id
        assert await second.commit("run_1", RunChange(event=("c", {})), now=3) == 3
