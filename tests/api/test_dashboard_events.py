"""``GET /stats/events``: the dashboard's figures pushed as server-sent events: a snapshot at
once, another when the figures change (chat traffic, a workflow op's state), heartbeats in
between, the runs for the admin key only, and nothing left running once the client leaves.

Every wait ends as soon as the awaited event arrives; none asserts how long it took.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
import trio
from router_harness import RunningRouter, make_config, open_router
from support_dashboard import events
from support_routing import model_entry, wait_for
from support_workflows import three_tiers

from api.http import dashboard_events
from engine.testing.fake_upstream import Behaviour, FakeUpstream

ADMIN = "admin-key-for-the-event-tests"
CLIENT = "client-key-for-the-event-tests"

CHAIN = """
name: chain
ops:
  draft: {prompt: "Draft: {{ input }}", tier: 1}
  review: {prompt: "Review: {{ ops.draft.output }}", tier: 2, input_ops: [draft]}
"""


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _streams(router: RunningRouter) -> int:
    assert router.app is not None
    return router.app.extensions["dashboard_feed"].streams


def _request_tasks() -> int:
    """The router's tasks serving an HTTP request now (Quart-Trio's, one pair a request)."""
    count, nurseries = 0, list(trio.lowlevel.current_root_task().child_nurseries)
    while nurseries:
        for task in nurseries.pop().child_tasks:
            count += task.name.startswith("quart_trio.")
            nurseries += task.child_nurseries
    return count


async def test_a_snapshot_at_once_and_another_when_traffic_moves_the_figures(
        fake_upstream: FakeUpstream) -> None:
    config = make_config({"models": three_tiers(fake_upstream), "cache": {"enabled": False},
                          "server": {"admin_key": ADMIN, "api_keys": [CLIENT]}})
    async with open_router(config) as router, httpx.AsyncClient(timeout=20) as http, \
            events(router.url, ADMIN) as stream:
        first = await stream.until(lambda s: True)
        assert set(first) == {"stats", "recent", "backends", "health", "routing", "runs", "run"}
        assert first["stats"]["total_requests"] == 0
        assert first["recent"]["window"]["requests"] == 0
        assert [b["name"] for b in first["backends"]] == ["t1", "t2", "t3"]
        assert first["health"]["status"] == "ok"
        assert first["runs"] == {"object": "list", "data": []} and first["run"] is None
        routing = (await http.get(router.url + "/v1/routing", headers=_bearer(ADMIN))).json()
        assert first["routing"] == dashboard_events.routing_summary(routing)
        assert first["routing"]["thresholds"] == routing["thresholds"]
        assert "cache" not in first["routing"]  # no tenant's threshold

        answer = await http.post(router.v1 + "/chat/completions", headers=_bearer(CLIENT),
                                 json={"model": "auto", "messages": [
                                     {"role": "user", "content": "a secret prompt"}]})
        assert answer.status_code == 200
        moved = await stream.until(lambda s: s["recent"]["window"]["requests"] == 1)
        assert moved["stats"]["total_requests"] == 1
        assert moved["recent"]["requests"][0]["model"] == "t1"
        assert b"secret" not in orjson.dumps(moved)

        # Feedback moves the routing panel's figures.
        reported = await http.post(router.v1 + "/feedback", headers=_bearer(CLIENT), json={
            "request_id": answer.headers["x-request-id"], "quality": 0.25})
        assert reported.status_code == 200, reported.text
        fed = await stream.until(lambda s: s["routing"].get("feedback", {}).get("total") == 1)
        assert fed["routing"]["feedback"]["by_tier"]["1"]["mean_quality"] == 0.25


async def test_a_running_workflows_op_states_come_through_the_stream(
        fake_upstream: FakeUpstream) -> None:
    fake_upstream.set_default("t2", Behaviour(hang=True))
    config = make_config({
        "models": [model_entry(fake_upstream, "t1", tier=1), model_entry(fake_upstream, "t2",
                                                                           tier=2)],
        "cache": {"enabled": False}, "server": {"admin_key": ADMIN, "api_keys": [CLIENT]}})
    async with open_router(config) as router, httpx.AsyncClient(timeout=20) as http, \
            events(router.url, ADMIN) as stream:
        await stream.until(lambda s: True)
        started = await http.post(router.v1 + "/workflows", headers=_bearer(CLIENT) | {
            "prefer": "respond-async"}, json={"workflow": CHAIN, "input": "a lamp"})
        run_id = started.json()["run_id"]

        def review(status: str) -> Callable[[dict[str, Any]], bool]:
            return lambda s: (s["run"] is not None and s["run"]["run_id"] == run_id
                              and s["run"]["ops"]["review"]["status"] == status)

        running = await stream.until(review("running"))  # the newest running run, followed
        assert running["run"]["ops"]["draft"]["status"] == "succeeded"
        assert running["run"]["edges"] == [["draft", "review"]]
        assert "output" not in running["run"]["ops"]["draft"]
        assert running["runs"]["data"][0]["ops"] == {"draft": "succeeded", "review": "running"}
        await http.post(f"{router.v1}/workflows/runs/{run_id}/cancel", headers=_bearer(CLIENT))
        cancelled = await stream.until(review("cancelled"))
        assert cancelled["run"]["status"] == "cancelled"


async def test_it_follows_the_run_asked_for(fake_upstream: FakeUpstream) -> None:
    config = make_config({"models": three_tiers(fake_upstream), "cache": {"enabled": False}})
    async with open_router(config) as router, httpx.AsyncClient(timeout=20) as http:
        ids = []
        for text in ("one", "two"):
            done = await http.post(router.v1 + "/workflows", json={
                "workflow": "ops:\n  only: {prompt: 'Hi {{ input }}'}\n", "input": text})
            ids.append(done.headers["x-llm-router-run-id"])
        async with events(router.url, "", run=ids[0]) as stream:
            shown = await stream.until(lambda s: True)
        assert shown["run"]["run_id"] == ids[0]
        async with events(router.url, "") as stream:
            shown = await stream.until(lambda s: True)
        assert shown["run"]["run_id"] == ids[1]  # none running: the newest


async def test_the_stream_needs_a_key_and_the_runs_the_admin_key(
        fake_upstream: FakeUpstream) -> None:
    config = make_config({"models": three_tiers(fake_upstream),
                          "server": {"admin_key": ADMIN, "api_keys": [CLIENT]}})
    async with open_router(config) as router, httpx.AsyncClient(timeout=20) as http:
        refused = await http.get(router.url + "/stats/events", headers=_bearer("wrong"))
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "authentication_error"
        assert ADMIN not in refused.text and CLIENT not in refused.text
        async with events(router.url, CLIENT) as stream:
            shown = await stream.until(lambda s: True)
        assert "admin key" in shown["runs"]["error"]["message"]
        assert shown["run"] is None and shown["stats"]["total_requests"] == 0


async def test_a_quiet_stream_sends_heartbeats(fake_upstream: FakeUpstream,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dashboard_events, "HEARTBEAT_SEC", 0.2)
    config = make_config({"models": three_tiers(fake_upstream)})
    async with open_router(config) as router, events(router.url, "") as stream:
        assert (await stream.next())[0] == "snapshot"
        with trio.fail_after(15):
            assert (await stream.next())[0] == "heartbeat"


async def test_a_client_that_leaves_leaves_nothing_running(
        fake_upstream: FakeUpstream) -> None:
    config = make_config({"models": three_tiers(fake_upstream)})
    async with open_router(config) as router:
        for _ in range(3):  # the page's tab closed: its connection goes with the stream
            async with events(router.url, "") as stream:
                await stream.until(lambda s: True)
                assert _streams(router) == 1 and _request_tasks() == 2

        async def all_gone() -> bool:
            return _streams(router) == 0 and _request_tasks() == 0

        await wait_for(all_gone, poll=0.02)
