"""Durable workflow runs over HTTP: submit (async, idempotent), watch (record, list, events
with resume), cancel, memoize, bounds and tenants, against the fake upstream.

Restart and crash recovery, where a second router process takes over, are in
tests/e2e/test_run_recovery.py.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import trio
import yaml
from support_routing import model_entry, wait_for
from support_workflows import WorkflowClient, open_workflow_router, sse_events
from workflow_cases import CHAIN

from engine.testing.fake_upstream import Behaviour, FakeUpstream

ASYNC = {"prefer": "respond-async"}


def pinned(fake: FakeUpstream, *names: str) -> list[dict[str, Any]]:
    return [model_entry(fake, name, tier=1, cost_per_1k_in=0.001, cost_per_1k_out=0.002)
            for name in names]


async def submit(client: WorkflowClient, workflow: str = CHAIN, input: str = "x",
                 headers: dict[str, str] | None = None, **fields: Any) -> httpx.Response:
    body = {"input": input, "workflow": workflow, **fields}
    return await client.http.post(client.router.v1 + "/workflows", json=body,
                                  headers={**ASYNC, **(headers or {})})


async def record(client: WorkflowClient, run_id: str, **headers: str) -> httpx.Response:
    return await client.http.get(f"{client.router.v1}/workflows/runs/{run_id}",
                                 headers=headers)


async def until_status(client: WorkflowClient, run_id: str, *statuses: str,
                       timeout: float = 5.0) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def reached() -> bool:
        found.update((await record(client, run_id)).json())
        return found["status"] in statuses

    await wait_for(reached, timeout=timeout, poll=0.02)
    return found


async def events(client: WorkflowClient, run_id: str, query: str = "", **headers: str
                 ) -> tuple[httpx.Response, list[tuple[int, str, Any]]]:
    """The run's events endpoint read to its end: ``(id, event, data)`` triples."""
    url = f"{client.router.v1}/workflows/runs/{run_id}/events{query}"
    async with client.http.stream("GET", url, headers=headers) as response:
        raw = (await response.aread()).decode()
    ids = [int(line[4:]) for line in raw.splitlines() if line.startswith("id: ")]
    named = sse_events(raw)
    return response, [(i, name, data) for i, (name, data) in zip(ids, named, strict=True)]


# ---- submit -------------------------------------------------------------------------------------


async def test_an_async_submission_answers_at_once_and_the_run_completes(
    fake_upstream: FakeUpstream,
) -> None:
    fake = fake_upstream
    fake.script("mb", Behaviour(latency=1.0))
    async with open_workflow_router(pinned(fake, "ma", "mb", "mc")) as client:
        response = await submit(client)
        assert response.status_code == 202
        assert (await record(client, response.json()["run_id"])).json()["status"] in (
            "queued", "running")  # answered while the run goes on
        body = response.json()
        run_id = body["run_id"]
        assert run_id.startswith("run_") and body["status"] in ("queued", "running")
        assert body["status_url"] == f"/v1/workflows/runs/{run_id}"
        assert response.headers["location"] == body["status_url"]
        assert response.headers["x-llm-router-run-id"] == run_id

        done = await until_status(client, run_id, "succeeded")
        assert done["workflow"] == "chain" and done["error"] is None
        assert list(done["ops"]) == ["a", "b", "c"]
        for name, op in done["ops"].items():
            assert op["status"] == "succeeded" and op["model"] == f"m{name}"
            assert op["tier"] == 1 and op["cost_usd"] > 0
        assert done["ops"]["c"]["output"] == done["final_output"]
        assert done["final_output"].startswith("[mc] Step c.")
        assert done["cost_usd"] == round(sum(op["cost_usd"] for op in done["ops"].values()), 8)
        assert done["created_at"] <= done["started_at"] <= done["finished_at"]
        assert done["starts"] == 1
        for at in ("created_at", "started_at", "finished_at"):  # as the contract writes them
            assert time.strptime(done[at], "%Y-%m-%dT%H:%M:%SZ"), done[at]

        # The body's "async": true is the same request.
        body_async = await client.http.post(client.router.v1 + "/workflows", json={
            "input": "y", "workflow": CHAIN, "async": True})
        assert body_async.status_code == 202
        await until_status(client, body_async.json()["run_id"], "succeeded")
    assert len(fake.requests("ma")) == len(fake.requests("mc")) == 2


async def test_the_synchronous_and_streaming_forms_are_runs_too(
    fake_upstream: FakeUpstream,
) -> None:
    async with open_workflow_router(pinned(fake_upstream, "ma", "mb", "mc")) as client:
        answer = await client.run(CHAIN, "x")
        assert answer.status_code == 200
        run_id = answer.json()["run_id"]
        assert answer.headers["x-llm-router-run-id"] == run_id
        stored = (await record(client, run_id)).json()
        assert stored["status"] == "succeeded"
        assert stored["final_output"] == answer.json()["final_output"]

        response, streamed = await client.stream(CHAIN, "y")
        names = [name for name, _ in streamed]
        assert names[0] == "run_started" and names[-1] == "result"
        assert names.count("op_finished") == 3
        streamed_id = response.headers["x-llm-router-run-id"]
        assert streamed[-1][1]["run_id"] == streamed_id
        assert (await record(client, streamed_id)).json()["status"] == "succeeded"


async def test_an_idempotency_key_returns_the_same_run(fake_upstream: FakeUpstream) -> None:
    fake = fake_upstream
    async with open_workflow_router(pinned(fake, "ma", "mb", "mc")) as client:
        key = {"idempotency-key": "order-42"}
        first = await submit(client, headers=key)
        again = await submit(client, headers=key)
        assert first.status_code == again.status_code == 202
        assert again.json()["run_id"] == first.json()["run_id"]
        assert again.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        await until_status(client, first.json()["run_id"], "succeeded")
        assert len(fake.requests("ma")) == 1  # run once

        # The synchronous form with the same key answers with that run's result.
        sync = await client.http.post(client.router.v1 + "/workflows", headers=key,
                                      json={"input": "x", "workflow": CHAIN})
        assert sync.status_code == 200 and sync.json()["run_id"] == first.json()["run_id"]

        # The same key for a different request is a mistake, said so.
        other = await submit(client, input="different", headers=key)
        assert other.status_code == 409
        assert "Idempotency-Key" in other.json()["error"]["message"]

        # Another tenant's key space is its own.
        theirs = await submit(client, headers={**key, "authorization": "Bearer someone"})
        assert theirs.status_code == 202 and theirs.json()["run_id"] != first.json()["run_id"]

        bad = await submit(client, headers={"idempotency-key": "x" * 300})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "Idempotency-Key"


# ---- watch --------------------------------------------------------------------------------------


async def test_runs_queue_beyond_max_concurrent_runs_and_move_through_their_states(
    fake_upstream: FakeUpstream,
) -> None:
    fake = fake_upstream
    fake.set_default("ma", Behaviour(latency=0.4))
    single = "ops:\n  a: {prompt: 'Only.', model: ma}\n"
    async with open_workflow_router(pinned(fake, "ma"),
                                    workflows={"max_concurrent_runs": 1}) as client:
        first = (await submit(client, single, input="1")).json()["run_id"]
        second = (await submit(client, single, input="2")).json()["run_id"]

        async def first_calling() -> bool:
            ops = (await record(client, first)).json()["ops"]
            return ops["a"]["status"] == "running"

        await wait_for(first_calling)
        assert (await record(client, first)).json()["status"] == "running"
        waiting = (await record(client, second)).json()
        assert waiting["status"] == "queued" and waiting["started_at"] is None
        assert waiting["ops"] == {"a": {"status": "pending"}}
        await until_status(client, first, "succeeded")
        await until_status(client, second, "succeeded")

        listed = (await client.http.get(client.router.v1 + "/workflows/runs")).json()
        assert [r["run_id"] for r in listed["data"]] == [second, first]  # newest first
        assert listed["data"][0]["ops"] == {"a": "succeeded"} and not listed["has_more"]
        one = (await client.http.get(client.router.v1 + "/workflows/runs?limit=1")).json()
        assert [r["run_id"] for r in one["data"]] == [second] and one["has_more"]
        failed = (await client.http.get(client.router.v1 + "/workflows/runs?status=failed"))
        assert failed.json()["data"] == []
        wrong = await client.http.get(client.router.v1 + "/workflows/runs?status=succeded")
        assert wrong.status_code == 400 and "succeeded" in wrong.json()["error"]["message"]
        unknown = await record(client, "run_" + "0" * 24)
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"


async def test_events_have_ids_and_last_event_id_resumes_without_repeats(
    fake_upstream: FakeUpstream,
) -> None:
    fake = fake_upstream
    async with open_workflow_router(pinned(fake, "ma", "mb", "mc")) as client:
        run_id = (await submit(client)).json()["run_id"]
        await until_status(client, run_id, "succeeded")
        response, seen = await events(client, run_id)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert [i for i, _, _ in seen] == list(range(1, len(seen) + 1))
        assert [name for _, name, _ in seen] == [
            "run_started", "op_started", "op_finished", "op_started", "op_finished",
            "op_started", "op_finished", "result"]
        assert seen[-1][2]["final_output"].startswith("[mc]")

        _, rest = await events(client, run_id, **{"last-event-id": "3"})
        assert rest == seen[3:]
        _, by_query = await events(client, run_id, "?after=6")
        assert by_query == seen[6:]
        bad = await client.http.get(f"{client.router.v1}/workflows/runs/{run_id}/events",
                                    headers={"last-event-id": "abc"})
        assert bad.status_code == 400
        for huge in ("9" * 30, str(2**63)):  # beyond any id: a 400, not a broken stream
            beyond = await client.http.get(
                f"{client.router.v1}/workflows/runs/{run_id}/events",
                headers={"last-event-id": huge})
            assert beyond.status_code == 400, beyond.text
            assert beyond.json()["error"]["param"] == "Last-Event-ID"


async def test_a_late_watcher_gets_the_history_then_live_events(
    fake_upstream: FakeUpstream,
) -> None:
    fake = fake_upstream
    fake.set_default("mb", Behaviour(latency=0.5))
    async with open_workflow_router(pinned(fake, "ma", "mb", "mc")) as client:
        run_id = (await submit(client)).json()["run_id"]

        async def b_started() -> bool:
            ops = (await record(client, run_id)).json()["ops"]
            return ops["b"]["status"] == "running"

        await wait_for(b_started)
        _, seen = await events(client, run_id)  # joins mid-run, reads until the end
        names = [name for _, name, _ in seen]
        assert names[:4] == ["run_started", "op_started", "op_finished", "op_started"]
        assert names[-1] == "result" and names.count("op_finished") == 3
        assert [i for i, _, _ in seen] == list(range(1, len(seen) + 1))


# ---- cancel -------------------------------------------------------------------------------------


async def test_cancel_closes_the_running_call_and_later_ops_never_start(
    fake_upstream: FakeUpstream,
) -> None:
    fake = fake_upstream
    fake.set_default("mb", Behaviour(hang=True))
    async with open_workflow_router(pinned(fake, "ma", "mb", "mc")) as client:
        run_id = (await submit(client)).json()["run_id"]

        async def b_called() -> bool:
            return len(fake.requests("mb")) == 1

        await wait_for(b_called)
        cancel_url = f"{client.router.v1}/workflows/runs/{run_id}/cancel"
        cancelled = await client.http.post(cancel_url, json={"reason": "changed my mind"})
        assert cancelled.status_code == 200
        body = cancelled.json()
        assert body["status"] == "cancelled" and body["finished_at"] is not None
        assert body["cancelled_by"]["reason"] == "changed my mind"
        assert body["cancelled_by"]["request_id"] == cancelled.headers["x-request-id"]
        assert body["ops"]["a"]["status"] == "succeeded"
        assert body["ops"]["b"]["status"] == "cancelled"
        assert body["ops"]["c"] == {"status": "skipped", "reason": "run_cancelled"}
        with trio.fail_after(3):
            await fake.wait_until_idle()
        (call,) = fake.requests("mb")
        assert call.cancelled and not call.completed  # the upstream connection was closed
        await trio.sleep(0.2)
        assert fake.requests("mc") == []  # never called
        assert body["cost_usd"] == body["ops"]["a"]["cost_usd"]  # nothing more was paid

        _, seen = await events(client, run_id)
        assert seen[-1][1] == "cancelled"
        assert seen[-1][2]["cancelled_by"]["reason"] == "changed my mind"
        again = await client.http.post(cancel_url)
        assert again.status_code == 409 and "cancelled" in again.json()["error"]["message"]
        missing = await client.http.post(
            f"{client.router.v1}/workflows/runs/run_{'0' * 24}/cancel")
        assert missing.status_code == 404


async def test_a_queued_run_can_be_cancelled_before_it_starts(
    fake_upstream: FakeUpstream,
) -> None:
    fake = fake_upstream
    fake.set_default("ma", Behaviour(latency=0.3))
    single = "ops:\n  a: {prompt: 'Only.', model: ma}\n"
    async with open_workflow_router(pinned(fake, "ma"),
                                    workflows={"max_concurrent_runs": 1}) as client:
        first = (await submit(client, single, input="1")).json()["run_id"]
        second = (await submit(client, single, input="2")).json()["run_id"]
        cancelled = await client.http.post(
            f"{client.router.v1}/workflows/runs/{second}/cancel")
        assert cancelled.json()["status"] == "cancelled"
        assert cancelled.json()["started_at"] is None
        await until_status(client, first, "succeeded")
        assert len(fake.requests("ma")) == 1  # the cancelled run never called


async def test_a_client_leaving_does_not_stop_its_run(fake_upstream: FakeUpstream) -> None:
    fake = fake_upstream
    fake.set_default("mb", Behaviour(latency=0.3))
    async with open_workflow_router(pinned(fake, "ma", "mb", "mc")) as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run, CHAIN, "x")

            async def b_called() -> bool:
                return len(fake.requests("mb")) == 1

            await wait_for(b_called)
            nursery.cancel_scope.cancel()  # the client goes away mid-run
        listed = (await client.http.get(client.router.v1 + "/workflows/runs")).json()
        (run,) = listed["data"]
        done = await until_status(client, run["run_id"], "succeeded")
        assert done["final_output"].startswith("[mc]")


# ---- memoize, bounds, tenants --------------------------------------------------------------------


async def test_memoize_serves_a_deterministic_op_from_an_earlier_run(
    fake_upstream: FakeUpstream,
) -> None:
    fake = fake_upstream
    memoized = yaml.safe_dump({"memoize": True, "ops": {
        "a": {"prompt": "Fixed.", "model": "ma", "temperature": 0},
        "b": {"prompt": "Warm.", "model": "mb", "input_ops": ["a"]},
    }})
    async with open_workflow_router(pinned(fake, "ma", "mb")) as client:
        first = await client.run(memoized, "x")
        second = await client.run(memoized, "x")
        assert first.status_code == second.status_code == 200
        assert len(fake.requests("ma")) == 1  # temperature 0: memoized
        assert len(fake.requests("mb")) == 2  # no temperature: not deterministic, run again
        again = (await record(client, second.json()["run_id"])).json()
        assert again["ops"]["a"]["cache"] == "memo" and again["ops"]["a"]["cost_usd"] == 0
        assert again["ops"]["a"]["output"] == first.json()["outputs"]["a"]

        await client.run(memoized, "other input")  # a different request
        other_tenant = await client.http.post(
            client.router.v1 + "/workflows", headers={"authorization": "Bearer other"},
            json={"input": "x", "workflow": memoized})
        assert other_tenant.status_code == 200
        assert len(fake.requests("ma")) == 3

        plain = memoized.replace("memoize: true", "memoize: false")
        await client.run(plain, "x")
        assert len(fake.requests("ma")) == 4  # off by default


async def test_an_answer_over_max_output_bytes_fails_its_op(fake_upstream: FakeUpstream) -> None:
    fake = fake_upstream
    fake.set_default("ma", Behaviour(text="y" * 3000))
    async with open_workflow_router(pinned(fake, "ma", "mb", "mc"),
                                    workflows={"max_output_bytes": 2048}) as client:
        answer = await client.run(CHAIN, "x")
        assert answer.status_code == 502
        error = answer.json()["error"]
        assert error["code"] == "output_too_large" and error["param"] == "a"
        assert "workflows.max_output_bytes" in error["message"]
        (run,) = (await client.http.get(client.router.v1 + "/workflows/runs")).json()["data"]
        assert run["status"] == "failed" and run["error"]["code"] == "output_too_large"
        assert run["ops"] == {"a": "failed", "b": "skipped", "c": "skipped"}
    assert fake.requests("mb") == []


async def test_finished_runs_are_deleted_after_retention_days(
    fake_upstream: FakeUpstream, tmp_path: Any,
) -> None:
    models = pinned(fake_upstream, "ma", "mb", "mc")
    state = {"path": str(tmp_path / "state.db")}
    async with open_workflow_router(models, state=state) as client:
        kept = (await client.run(CHAIN, "x")).json()["run_id"]
    async with open_workflow_router(models, state=state) as client:
        assert (await record(client, kept)).status_code == 200  # a restart keeps runs
    brief = {"retention_days": 0.000002}  # 0.17 s
    async with open_workflow_router(models, state=state, workflows=brief) as client:
        brief_run = (await client.run(CHAIN, "y")).json()["run_id"]
        assert (await record(client, brief_run)).status_code == 200
    await trio.sleep(0.3)
    async with open_workflow_router(models, state=state, workflows=brief) as client:
        # Deleted at start-up (and hourly): both had ended more than 0.17 s before.
        assert (await record(client, brief_run)).status_code == 404
        assert (await record(client, kept)).status_code == 404


async def test_a_tenant_sees_only_its_own_runs(fake_upstream: FakeUpstream) -> None:
    fake = fake_upstream
    fake.set_default("mb", Behaviour(hang=True))
    alice, bob = {"authorization": "Bearer alice"}, {"x-api-key": "bob"}
    async with open_workflow_router(pinned(fake, "ma", "mb", "mc")) as client:
        run_id = (await submit(client, headers=alice)).json()["run_id"]
        base = f"{client.router.v1}/workflows/runs"
        assert (await record(client, run_id, **alice)).status_code == 200
        assert (await record(client, run_id, **bob)).status_code == 404
        assert (await record(client, run_id)).status_code == 404  # no credential: a tenant too
        assert (await client.http.get(base, headers=bob)).json()["data"] == []
        assert len((await client.http.get(base, headers=alice)).json()["data"]) == 1
        events_bob = await client.http.get(f"{base}/{run_id}/events", headers=bob)
        assert events_bob.status_code == 404
        cancel_bob = await client.http.post(f"{base}/{run_id}/cancel", headers=bob)
        assert cancel_bob.status_code == 404
        assert (await record(client, run_id, **alice)).json()["status"] == "running"
        cancel = await client.http.post(f"{base}/{run_id}/cancel", headers=alice)
        assert cancel.json()["status"] == "cancelled"


async def test_health_reports_the_run_store(fake_upstream: FakeUpstream, tmp_path: Any) -> None:
    async with open_workflow_router(pinned(fake_upstream, "ma", "mb", "mc")) as client:
        health = (await client.http.get(client.router.url + "/health")).json()
        assert health["status"] == "ok" and health["runs"]["status"] == "ok"

    corrupt = tmp_path / "state.db"
    corrupt.write_bytes(b"this is not a database" * 200)
    async with open_workflow_router(pinned(fake_upstream, "ma", "mb", "mc"),
                                    state={"path": str(corrupt)}) as client:
        health = (await client.http.get(client.router.url + "/health")).json()
        assert health["status"] == "degraded" and health["runs"]["status"] == "error"
        assert str(corrupt) in health["runs"]["error"]
        refused = await client.run(CHAIN, "x")
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "store_unavailable"
        chat = await client.http.post(client.router.v1 + "/chat/completions", json={
            "model": "ma", "messages": [{"role": "user", "content": "still here"}]})
        assert chat.status_code == 200  # chat does not need the run store
    assert corrupt.read_bytes().startswith(b"this is not a database")  # left as it was


async def test_a_cancelled_run_costs_what_its_parallel_ops_cost(
    fake_upstream: FakeUpstream,
) -> None:
    """Ops finishing together each add their cost to the run: none is lost to the other."""
    fake = fake_upstream
    parallel = ("ma", "mb", "mc", "md")
    for name in parallel:
        fake.set_default(name, Behaviour(latency=0.2))
    fake.set_default("me", Behaviour(hang=True))
    fan_in = yaml.safe_dump({"ops": {
        **{name: {"prompt": f"Part {name}.", "model": name} for name in parallel},
        "me": {"prompt": "Join.", "model": "me", "input_ops": list(parallel)},
    }}, sort_keys=False)
    async with open_workflow_router(pinned(fake, *parallel, "me")) as client:
        run_id = (await submit(client, fan_in)).json()["run_id"]

        async def joined() -> bool:
            return len(fake.requests("me")) == 1

        await wait_for(joined)
        running = (await record(client, run_id)).json()
        paid = round(sum(running["ops"][name]["cost_usd"] for name in parallel), 8)
        assert paid > 0 and running["cost_usd"] == paid
        cancelled = await client.http.post(f"{client.router.v1}/workflows/runs/{run_id}/cancel")
        assert cancelled.json()["status"] == "cancelled"
        assert cancelled.json()["cost_usd"] == paid
        listed = (await client.http.get(f"{client.router.v1}/workflows/runs")).json()["data"]
        assert [run["cost_usd"] for run in listed if run["run_id"] == run_id] == [paid]


async def test_a_failed_run_answers_with_its_id_and_no_op_routing_headers(
    fake_upstream: FakeUpstream,
) -> None:
    """The synchronous answer of a run that failed names the run, as a successful one does,
    so its record can be read; the routing headers of the op that failed are not the run's."""
    fake = fake_upstream
    fake.set_default("mb", Behaviour(status=500))
    async with open_workflow_router(pinned(fake, "ma", "mb", "mc")) as client:
        answer = await client.run(CHAIN, "x")
        assert answer.status_code >= 500 and answer.json()["error"]["param"] == "b"
        run_id = answer.headers["x-llm-router-run-id"]
        assert not [h for h in answer.headers if h.startswith("x-llm-router-")
                    and h not in ("x-llm-router-run-id", "x-llm-router-request-id")]
        stored = (await record(client, run_id)).json()
        assert stored["status"] == "failed" and stored["ops"]["b"]["status"] == "failed"
        assert stored["error"] == answer.json()["error"]


async def test_a_run_another_router_holds_is_cancelled_within_about_a_second(
    fake_upstream: FakeUpstream, tmp_path: Any,
) -> None:
    """Two routers on one SQLite store: a cancel asked of the one not running the run reaches
    the one running it within about a second, however recently that one started its run."""
    fake = fake_upstream
    fake.set_default("mb", Behaviour(hang=True))
    state = {"path": str(tmp_path / "runs.db")}
    async with (open_workflow_router(pinned(fake, "ma", "mb", "mc"), state=state) as a,
                open_workflow_router(pinned(fake, "ma", "mb", "mc"), state=state) as b):
        run_id = (await submit(a)).json()["run_id"]

        async def b_called() -> bool:
            return len(fake.requests("mb")) == 1

        await wait_for(b_called)
        asked = await b.http.post(f"{b.router.v1}/workflows/runs/{run_id}/cancel")
        assert asked.status_code == 200 and asked.json()["status"] == "running"
        done = await until_status(a, run_id, "cancelled", timeout=2.0)
        assert done["ops"]["b"]["status"] == "cancelled"
        assert (await record(b, run_id)).json()["status"] == "cancelled"
    assert fake.requests("mc") == []
