"""Durable workflow runs shared through Redis (``state.redis_url``): a run submitted on one
router is seen, listed, watched (``Last-Event-ID`` included) and cancelled on another; a router
process killed mid-run has its run finished by another process, without calling again the ops
that had finished (counted at the fake upstream); and a Redis that is down makes submissions
503 ``store_unavailable`` while chat completions go on.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import trio
from support_processes import fake_model, router_process, write_router_config
from support_redis import RedisServer
from support_routing import model_entry, wait_for
from support_workflows import WorkflowClient, open_workflow_router, sse_events
from workflow_cases import CHAIN

from engine.testing.fake_upstream import Behaviour, FakeUpstream

ASYNC = {"prefer": "respond-async"}


def pinned(fake: FakeUpstream) -> list[dict[str, Any]]:
    return [model_entry(fake, name, tier=1, cost_per_1k_in=0.001, cost_per_1k_out=0.002)
            for name in ("ma", "mb", "mc")]


async def submit(client: WorkflowClient) -> httpx.Response:
    return await client.http.post(client.router.v1 + "/workflows", headers=ASYNC,
                                  json={"workflow": CHAIN, "input": "x"})


async def record(client: WorkflowClient, run_id: str) -> dict[str, Any]:
    response = await client.http.get(f"{client.router.v1}/workflows/runs/{run_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def events(client: WorkflowClient, run_id: str, **headers: str
                 ) -> list[tuple[int, str, Any]]:
    """The run's events endpoint read to its end: ``(id, event, data)`` triples."""
    url = f"{client.router.v1}/workflows/runs/{run_id}/events"
    async with client.http.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        raw = (await response.aread()).decode()
    ids = [int(line[4:]) for line in raw.splitlines() if line.startswith("id: ")]
    return [(i, name, data) for i, (name, data) in zip(ids, sse_events(raw), strict=True)]


async def test_a_run_on_one_router_is_seen_watched_and_cancelled_on_another(
    fake_upstream: FakeUpstream, redis_server: RedisServer,
) -> None:
    fake = fake_upstream
    fake.set_default("mb", Behaviour(hang=True))
    state = {"redis_url": redis_server.url}
    async with (open_workflow_router(pinned(fake), state=state) as a,
                open_workflow_router(pinned(fake), state=state) as b):
        submitted = await submit(a)
        assert submitted.status_code == 202
        run_id = submitted.json()["run_id"]

        async def b_called() -> bool:
            return len(fake.requests("mb")) == 1

        await wait_for(b_called)
        seen = await record(b, run_id)
        assert seen["status"] == "running" and seen["starts"] == 1
        assert seen["ops"]["a"]["status"] == "succeeded"
        assert seen["ops"]["a"]["output"].startswith("[ma] Step a.")
        assert seen["ops"]["b"]["status"] == "running"
        listed = (await b.http.get(b.router.v1 + "/workflows/runs")).json()
        assert [run["run_id"] for run in listed["data"]] == [run_id]
        health = (await b.http.get(b.router.url + "/health")).json()
        assert health["runs"]["kind"] == "redis" and health["runs"]["status"] == "ok"

        watched: list[tuple[int, str, Any]] = []

        async def watch_on_b() -> None:
            watched.extend(await events(b, run_id, **{"last-event-id": "1"}))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_on_b)
            cancel = await b.http.post(f"{b.router.v1}/workflows/runs/{run_id}/cancel",
                                       json={"reason": "from b"})
            assert cancel.status_code == 200, cancel.text

            async def cancelled() -> bool:
                return (await record(a, run_id))["status"] == "cancelled"

            await wait_for(cancelled, poll=0.05)

        every = await events(b, run_id)
        assert [i for i, _, _ in every] == list(range(1, len(every) + 1))
        assert every[0][1] == "run_started" and every[-1][1] == "cancelled"
        assert every[-1][2]["cancelled_by"]["reason"] == "from b"
        assert watched == every[1:]  # live on B from after event 1, nothing repeated
        assert await events(a, run_id, **{"last-event-id": "3"}) == every[3:]
        done = await record(b, run_id)
        assert done["ops"]["b"]["status"] == "cancelled"
        assert done["ops"]["c"] == {"status": "skipped", "reason": "run_cancelled"}
    fake.clear_default("mb")
    with trio.fail_after(5):
        await fake.wait_until_idle()
    assert fake.requests("mb")[0].cancelled  # A closed its call when B asked
    assert fake.requests("mc") == []


def write_config(folder: Path, fake: FakeUpstream, redis_url: str) -> Path:
    return write_router_config(folder, redis_url, [
        fake_model(fake, name, cost_per_1k_in=0.001, cost_per_1k_out=0.002)
        for name in ("ma", "mb", "mc")])


async def test_a_run_of_a_killed_process_is_finished_by_another_without_repeating_ops(
    fake_upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path,
) -> None:
    """Two ``llm-router`` processes, each with its own state file: only Redis joins them."""
    fake = fake_upstream
    fake.set_default("mb", Behaviour(hang=True))
    first = write_config(tmp_path / "first", fake, redis_server.url)
    second = write_config(tmp_path / "second", fake, redis_server.url)
    async with (router_process(second) as (_, url_b),
                httpx.AsyncClient(timeout=10) as http):
        async with router_process(first) as (process_a, url_a):
            submitted = await http.post(f"{url_a}/v1/workflows", headers=ASYNC,
                                        json={"workflow": CHAIN, "input": "x"})
            assert submitted.status_code == 202
            run_id = submitted.json()["run_id"]

            async def b_called() -> bool:
                return len(fake.requests("mb")) == 1

            await wait_for(b_called)
            fake.clear_default("mb")
            process_a.send_signal(signal.SIGKILL)
            with trio.fail_after(15):
                await process_a.wait()

        done: dict[str, Any] = {}

        async def finished() -> bool:
            done.update((await http.get(f"{url_b}/v1/workflows/runs/{run_id}")).json())
            return done["status"] in ("succeeded", "failed", "cancelled")

        await wait_for(finished, poll=0.1)
        raw = (await http.get(f"{url_b}/v1/workflows/runs/{run_id}/events")).text
    assert done["status"] == "succeeded" and done["starts"] == 2
    assert done["final_output"].startswith("[mc] Step c.")
    # Op a finished before the kill: not called again. Op b was cut: run again, whole.
    assert [len(fake.requests(m)) for m in ("ma", "mb", "mc")] == [1, 2, 1]
    assert "[ma] Step a." in str(fake.requests("mb")[1].body["messages"])
    names = [name for name, _ in sse_events(raw)]
    assert names.count("run_started") == 2 and names[-1] == "result"


async def test_while_redis_is_down_submissions_are_503_and_chats_go_on(
    fake_upstream: FakeUpstream, redis_server: RedisServer,
) -> None:
    fake = fake_upstream
    async with open_workflow_router(pinned(fake), state={"redis_url": redis_server.url}) as a:
        assert (await submit(a)).status_code == 202
        redis_server.kill()

        async def refused() -> bool:
            response = await submit(a)
            assert response.status_code in (202, 503)
            return response.status_code == 503

        await wait_for(refused, poll=0.05)
        response = await submit(a)
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "store_unavailable" and "Redis" in error["message"]
        chat = await a.http.post(a.router.v1 + "/chat/completions", json={
            "model": "ma", "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 200
        health = (await a.http.get(a.router.url + "/health")).json()
        assert health["status"] == "degraded" and health["runs"]["status"] == "error"
        assert health["runs"]["kind"] == "redis"

        redis_server.start()

        async def accepted() -> bool:
            return (await submit(a)).status_code == 202

        await wait_for(accepted, poll=0.1)
        run_id = (await submit(a)).json()["run_id"]

        async def succeeded() -> bool:
            return (await record(a, run_id))["status"] == "succeeded"

        await wait_for(succeeded, poll=0.05)


async def test_a_redis_restarted_empty_mid_run_forgets_the_run_and_nothing_else(
    fake_upstream: FakeUpstream, redis_server: RedisServer,
) -> None:
    """A Redis without persistence loses its runs when it restarts: the process running one
    stops it (its record is gone) and goes on serving."""
    fake = fake_upstream
    # b takes long enough that Redis is restarted before it answers, on a loaded machine too
    fake.set_default("mb", Behaviour(latency=4.0))
    async with open_workflow_router(pinned(fake), state={"redis_url": redis_server.url}) as a:
        run_id = (await submit(a)).json()["run_id"]

        async def b_called() -> bool:
            return len(fake.requests("mb")) == 1

        await wait_for(b_called)
        redis_server.kill()
        redis_server.start()
        fake.clear_default("mb")

        async def forgotten() -> bool:
            response = await a.http.get(f"{a.router.v1}/workflows/runs/{run_id}")
            assert response.status_code in (200, 404, 503)
            return response.status_code == 404

        await wait_for(forgotten, poll=0.1)
        with trio.fail_after(10):
            await fake.wait_until_idle()
        chat = await a.http.post(a.router.v1 + "/chat/completions", json={
            "model": "ma", "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 200
        again = (await submit(a)).json()["run_id"]

        async def succeeded() -> bool:
            return (await record(a, again))["status"] == "succeeded"

        await wait_for(succeeded, poll=0.05)
    # The forgotten run went no further than its op b; the new one ran whole (and ma
    # answered the chat).
    assert [len(fake.requests(m)) for m in ("ma", "mb", "mc")] == [3, 2, 1]


async def test_a_run_stalled_by_a_hung_redis_goes_on_when_it_answers(
    fake_upstream: FakeUpstream, redis_server: RedisServer,
) -> None:
    """Redis stops answering (SIGSTOP: it keeps its data) while a run waits for an op: the
    run's next step cannot be recorded, so it stalls; once Redis answers it is resumed from
    what Redis holds and finishes."""
    fake = fake_upstream
    fake.set_default("mb", Behaviour(latency=1.0))
    async with open_workflow_router(pinned(fake), state={"redis_url": redis_server.url}) as a:
        run_id = (await submit(a)).json()["run_id"]

        async def b_called() -> bool:
            return len(fake.requests("mb")) == 1

        await wait_for(b_called)
        assert redis_server.process is not None
        redis_server.process.send_signal(signal.SIGSTOP)
        try:
            async def runs_down() -> bool:
                health = (await a.http.get(a.router.url + "/health")).json()
                return bool(health["runs"]["status"] == "error")

            await wait_for(runs_down, poll=0.05)
            with trio.fail_after(5):
                await fake.wait_until_idle()  # b answered meanwhile; its step is not recorded
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        fake.clear_default("mb")
        done: dict[str, Any] = {}

        async def finished() -> bool:
            response = await a.http.get(f"{a.router.v1}/workflows/runs/{run_id}")
            if response.status_code != 200:
                return False
            done.update(response.json())
            return done["status"] == "succeeded"

        await wait_for(finished, poll=0.1)
        every = await events(a, run_id)
    assert done["starts"] == 2 and done["final_output"].startswith("[mc] Step c.")
    assert [i for i, _, _ in every] == list(range(1, len(every) + 1))
    assert [name for _, name, _ in every].count("run_started") == 2
    # a is not called again; b is called again unless its answer's step, sent before Redis
    # hung, was carried out when it woke up.
    assert len(fake.requests("ma")) == len(fake.requests("mc")) == 1
    assert len(fake.requests("mb")) in (1, 2)
