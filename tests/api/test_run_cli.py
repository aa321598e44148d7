"""``llm-router workflow run --async|status|watch|cancel|runs`` (api/cli/runs.py), run as the
real command against a router served by the test in front of the fake upstream; and the
pure parts in process: reading events with their ids, showing each once, describing a run.

A connection that drops mid-stream is a relay between the command and the router that cuts
the first connection after a chosen event (tests/support/support_cut_relay.py).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from support_cut_relay import open_cut_relay
from support_routing import model_entry, wait_for
from support_workflows import WorkflowClient, open_workflow_router
from workflow_cases import CHAIN

from api.cli.failure import CommandFailed
from api.cli.progress import Event, Follower, Progress, read_events
from api.cli.remote import open_router
from api.cli.runs import describe_run, follow_run
from engine.testing.fake_upstream import Behaviour, FakeUpstream, refused_url

LLM_ROUTER = str(Path(sys.executable).parent / "llm-router")

CHAIN_STEPS = [("run", "started"), ("started", "a"), ("done", "a"), ("started", "b"),
               ("done", "b"), ("started", "c"), ("done", "c")]


def pinned(fake: FakeUpstream) -> list[dict[str, Any]]:
    return [model_entry(fake, name, tier=1, cost_per_1k_in=0.001, cost_per_1k_out=0.002)
            for name in ("ma", "mb", "mc")]


async def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(30):
        return await trio.run_process(
            [LLM_ROUTER, "workflow", *args], cwd=cwd, env=dict(os.environ), check=False,
            capture_stdout=True, capture_stderr=True)


async def together(*calls: tuple[str, ...], cwd: Path) -> list[subprocess.CompletedProcess[bytes]]:
    """Several commands at once (each pays a Python start-up); their results in order."""
    results: list[Any] = [None] * len(calls)

    async def one(i: int, args: tuple[str, ...]) -> None:
        results[i] = await cli(*args, cwd=cwd)

    async with trio.open_nursery() as nursery:
        for i, args in enumerate(calls):
            nursery.start_soon(one, i, args)
    return results


def steps(stderr: bytes) -> list[tuple[str, str]]:
    """The progress lines as (what, op), the run's line as ("run", its detail's first word)."""
    found = []
    for line in stderr.decode().splitlines():
        if line.startswith("["):
            what, name, *detail = line.split("]", 1)[1].split(maxsplit=2)
            found.append((what, detail[0].split()[0]) if what == "run" else (what, name))
    return found


def one_line_error(done: subprocess.CompletedProcess[bytes]) -> str:
    err = done.stderr.decode()
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("llm-router: ")
    return err.strip()


async def record(client: WorkflowClient, run_id: str) -> dict[str, Any]:
    return (await client.http.get(f"{client.router.v1}/workflows/runs/{run_id}")).json()


# ---- submit, status, watch, runs ----------------------------------------------------------


async def test_async_run_prints_its_id_then_status_watch_and_runs_show_it(
    tmp_path: Path, fake_upstream: FakeUpstream,
) -> None:
    fake = fake_upstream
    (tmp_path / "chain.yaml").write_text(CHAIN)
    async with open_workflow_router(pinned(fake)) as client:
        url = client.router.url
        submit = ("run", "chain.yaml", "--input", "x", "--async", "--server", url)
        first, again = await together((*submit, "--idempotency-key", "k-1"),
                                      (*submit, "--idempotency-key", "k-1", "--json"),
                                      cwd=tmp_path)
        assert first.returncode == 0 and again.returncode == 0, first.stderr.decode()
        run_id = first.stdout.decode().strip()
        assert run_id.startswith("run_") and first.stdout.decode() == run_id + "\n"
        answer = json.loads(again.stdout)
        assert answer["run_id"] == run_id  # the same key: the same run, not another
        assert answer["events_url"] == f"/v1/workflows/runs/{run_id}/events"
        told = first.stderr.decode() + again.stderr.decode()
        assert f"llm-router workflow watch {run_id}" in told
        assert "the earlier run with this Idempotency-Key" in told

        watched = await cli("watch", run_id, "--server", url, cwd=tmp_path)
        assert watched.returncode == 0, watched.stderr.decode()
        final = (await record(client, run_id))["final_output"]
        assert final.startswith("[mc] Step c.")
        assert watched.stdout.decode() == final + "\n"
        assert steps(watched.stderr) == CHAIN_STEPS
        assert watched.stderr.decode().splitlines()[-1].startswith("completed: 3 of 3 ops")

        text, as_json, listed, listed_json = await together(
            ("status", run_id, "--server", url), ("status", run_id, "--json", "--server", url),
            ("runs", "--server", url), ("runs", "--json", "--limit", "5", "--server", url),
            cwd=tmp_path)
        stored = await record(client, run_id)
        page = (await client.http.get(f"{client.router.v1}/workflows/runs?limit=5")).json()
    assert len(fake.requests("ma")) == 1

    assert as_json.returncode == 0 and json.loads(as_json.stdout) == stored
    assert text.returncode == 0, text.stderr.decode()
    out = text.stdout.decode().splitlines()
    assert out[:3] == [f"run:       {run_id}", "workflow:  chain", "status:    succeeded"]
    assert f"cost:      ${stored['cost_usd']:.6f}" in out
    rows = out[out.index("ops:") + 1: out.index("final output:")]
    assert [row.split()[:4] for row in rows] == [
        [name, "succeeded", f"m{name}", "(tier"] for name in "abc"]
    assert all(f"${stored['ops'][row.split()[0]]['cost_usd']:.6f}" in row for row in rows)
    assert "\n".join(out[out.index("final output:") + 1:]) == final

    assert listed.returncode == 0 and listed_json.returncode == 0
    assert json.loads(listed_json.stdout) == page
    header, line = listed.stdout.decode().splitlines()
    assert header.split() == ["RUN", "STATUS", "WORKFLOW", "OPS", "DONE", "COST", "CREATED"]
    assert line.split() == [run_id, "succeeded", "chain", "3/3",
                            f"${stored['cost_usd']:.6f}", stored["created_at"]]


async def test_runs_filters_by_status_and_says_when_there_are_more(
    tmp_path: Path, fake_upstream: FakeUpstream,
) -> None:
    async with open_workflow_router(pinned(fake_upstream)) as client:
        older = (await client.run(CHAIN, "1")).json()["run_id"]
        newer = (await client.run(CHAIN, "2")).json()["run_id"]
        url = client.router.url
        one, failed, misspelt, out_of_range = await together(
            ("runs", "--limit", "1", "--server", url),
            ("runs", "--status", "failed", "--server", url),
            ("runs", "--status", "succeded", "--server", url),
            ("runs", "--limit", "0", "--server", url), cwd=tmp_path)

    assert one.returncode == 0
    assert [line.split()[0] for line in one.stdout.decode().splitlines()[1:]] == [newer]
    assert older not in one.stdout.decode()
    assert "raise --limit" in one_line_error(one)
    assert failed.returncode == 0 and failed.stdout.decode() == "no failed runs\n"
    assert misspelt.returncode == out_of_range.returncode == 2
    assert "(did you mean 'succeeded'?)" in one_line_error(misspelt)
    assert "limit must be an integer from 1 to 1000" in one_line_error(out_of_range)


# ---- cancel -------------------------------------------------------------------------------


async def test_cancel_shows_the_cancelled_run_and_watch_exits_3(
    tmp_path: Path, fake_upstream: FakeUpstream,
) -> None:
    fake = fake_upstream
    fake.set_default("mb", Behaviour(hang=True))
    (tmp_path / "chain.yaml").write_text(CHAIN)
    async with open_workflow_router(pinned(fake)) as client:
        url = client.router.url
        submitted = await cli("run", "chain.yaml", "--input", "x", "--async", "--server", url,
                              cwd=tmp_path)
        run_id = submitted.stdout.decode().strip()

        async def b_called() -> bool:
            return len(fake.requests("mb")) == 1

        await wait_for(b_called)
        cancelled = await cli("cancel", run_id, "--reason", "changed my mind", "--server", url,
                              cwd=tmp_path)
        watched, again, as_json = await together(
            ("watch", run_id, "--server", url), ("cancel", run_id, "--server", url),
            ("status", run_id, "--json", "--server", url), cwd=tmp_path)
    assert fake.requests("mc") == []

    assert cancelled.returncode == 0, cancelled.stderr.decode()
    assert cancelled.stderr == b""
    out = cancelled.stdout.decode().splitlines()
    assert "status:    cancelled" in out
    by = json.loads(as_json.stdout)["cancelled_by"]
    assert f"cancelled: by request {by['request_id']} at {by['at']}: changed my mind" in out
    rows = {row.split()[0]: row.split()[1:] for row in out[out.index("ops:") + 1:]
            if row.startswith("  ")}
    assert rows["a"][0] == "succeeded" and rows["b"] == ["cancelled"]
    assert rows["c"] == ["skipped", "run", "cancelled"]

    assert watched.returncode == 3  # cancelled: neither success (0) nor failure (1)
    assert steps(watched.stderr) == CHAIN_STEPS[:4]
    assert watched.stderr.decode().splitlines()[-1] == (
        f"llm-router: run {run_id} was cancelled at {by['at']}: changed my mind")
    assert watched.stdout == b""
    assert again.returncode == 2
    assert f"workflow run {run_id} has already cancelled" in one_line_error(again)


async def test_a_streamed_run_shows_its_id_and_exits_3_when_cancelled(
    tmp_path: Path, fake_upstream: FakeUpstream,
) -> None:
    fake = fake_upstream
    fake.set_default("mb", Behaviour(hang=True))
    (tmp_path / "chain.yaml").write_text(CHAIN)
    async with open_workflow_router(pinned(fake)) as client:
        results: list[subprocess.CompletedProcess[bytes]] = []

        async def run() -> None:
            results.append(await cli("run", "chain.yaml", "--input", "x", "--server",
                                     client.router.url, cwd=tmp_path))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)

            async def b_called() -> bool:
                return len(fake.requests("mb")) == 1

            await wait_for(b_called)
            (run_id,) = [r["run_id"] for r in (await client.http.get(
                client.router.v1 + "/workflows/runs")).json()["data"]]
            cancel = await client.http.post(
                f"{client.router.v1}/workflows/runs/{run_id}/cancel")
    (done,) = results

    assert done.returncode == 3 and done.stdout == b""
    err = done.stderr.decode().splitlines()
    assert err[0].endswith(f"] run      {run_id} started")
    assert steps(done.stderr) == CHAIN_STEPS[:4]
    at = cancel.json()["cancelled_by"]["at"]
    assert err[-1] == f"llm-router: run {run_id} was cancelled at {at}"


# ---- errors --------------------------------------------------------------------------------


async def test_an_unknown_run_is_one_line_and_exit_2(
    tmp_path: Path, fake_upstream: FakeUpstream,
) -> None:
    unknown = "run_" + "0" * 24
    async with open_workflow_router(pinned(fake_upstream)) as client:
        url = client.router.url
        results = await together(("status", unknown, "--server", url),
                                 ("watch", unknown, "--server", url),
                                 ("cancel", unknown, "--server", url),
                                 ("status", "../../health", "--server", url), cwd=tmp_path)
    for done in results:
        assert done.returncode == 2 and done.stdout == b""
    for done in results[:3]:
        assert f"no workflow run '{unknown}'" in one_line_error(done)
    # An id is one path segment: this one asks for a run, not for /health.
    assert one_line_error(results[3]).endswith("/v1/workflows/runs/../../health: not found")


async def test_without_a_router_every_command_is_one_line_and_exit_1(tmp_path: Path) -> None:
    url = refused_url()
    (tmp_path / "chain.yaml").write_text(CHAIN)
    run_id = "run_" + "1" * 24
    results = await together(
        ("status", run_id, "--server", url), ("watch", run_id, "--server", url),
        ("cancel", run_id, "--server", url), ("runs", "--server", url),
        ("run", "chain.yaml", "--input", "x", "--async", "--server", url), cwd=tmp_path)
    for done in results:
        assert done.returncode == 1
        assert f"cannot reach the router at {url}" in one_line_error(done)


async def test_options_that_cannot_be_sent_are_exit_2_without_a_traceback(
    tmp_path: Path,
) -> None:
    """A key or Idempotency-Key a header cannot carry, or a --server that is not an http(s)
    URL, is refused as a bad option, before anything is sent."""
    (tmp_path / "chain.yaml").write_text(CHAIN)
    run_id = "run_" + "1" * 24
    results = await together(
        ("run", "chain.yaml", "--input", "x", "--idempotency-key", "clé"),
        ("run", "chain.yaml", "--input", "x", "--idempotency-key", "k" * 256),
        ("status", run_id, "--api-key", "clé"),
        ("status", run_id, "--server", "http://[::1"),
        ("runs", "--server", "127.0.0.1:8080"),
        ("cancel", run_id, "--server", "ftp://127.0.0.1"), cwd=tmp_path)
    for done in results:
        err = done.stderr.decode()
        assert done.returncode == 2 and "Traceback" not in err, err
    assert "--idempotency-key: must be 1 to 255 printable ASCII" in results[0].stderr.decode()
    assert "--idempotency-key: must be 1 to 255 printable ASCII" in results[1].stderr.decode()
    assert "--api-key: must be printable ASCII" in results[2].stderr.decode()
    assert "--server 'http://[::1' is not a URL" in one_line_error(results[3])
    for done in results[4:]:
        assert "--server must be the router's http(s) URL" in one_line_error(done)


async def test_json_without_async_is_refused(tmp_path: Path) -> None:
    (tmp_path / "chain.yaml").write_text(CHAIN)
    done = await cli("run", "chain.yaml", "--input", "x", "--json", cwd=tmp_path)
    assert done.returncode == 2
    assert "--json goes with --async" in one_line_error(done)


# ---- a dropped connection ------------------------------------------------------------------


@pytest.mark.parametrize("command", ["watch", "run"])
async def test_a_dropped_connection_resumes_after_the_last_event_shown(
    tmp_path: Path, fake_upstream: FakeUpstream, command: str,
) -> None:
    fake = fake_upstream
    fake.set_default("mb", Behaviour(latency=0.3))
    (tmp_path / "chain.yaml").write_text(CHAIN)
    async with open_workflow_router(pinned(fake)) as client:
        async with open_cut_relay(client.router.url, cut_after=b"event: op_finished") as relay:
            if command == "watch":
                run_id = (await client.run(CHAIN, "x", **{"async": True})).json()["run_id"]
                args: tuple[str, ...] = ("watch", run_id)
            else:
                args = ("run", "chain.yaml", "--input", "x")
            done = await cli(*args, "--server", relay.url, cwd=tmp_path)
        run_id = (await client.http.get(client.router.v1 + "/workflows/runs")).json()[
            "data"][0]["run_id"]
        final = (await record(client, run_id))["final_output"]

    assert relay.cut
    assert done.returncode == 0, done.stderr.decode()
    assert steps(done.stderr) == CHAIN_STEPS  # every step once: nothing repeated, none lost
    notes = [line for line in done.stderr.decode().splitlines() if "reconnecting" in line]
    assert len(notes) == 1 and notes[0].startswith(
        f"llm-router: lost the connection to the router at {relay.url}: ")
    assert notes[0].endswith("reconnecting, to resume after event 3")
    first, resumed = relay.requests
    assert first.startswith("GET " if command == "watch" else "POST /v1/workflows ")
    assert resumed.startswith(f"GET /v1/workflows/runs/{run_id}/events ")
    assert "last-event-id: 3" in resumed.lower().split("\r\n")
    assert done.stdout.decode() == final + "\n"
    assert len(fake.requests("ma")) == 1  # the run was followed again, not run again


async def test_watch_gives_up_when_the_router_stays_away(
    fake_upstream: FakeUpstream,
) -> None:
    fake_upstream.set_default("mb", Behaviour(hang=True))
    async with open_workflow_router(pinned(fake_upstream)) as client:
        run_id = (await client.run(CHAIN, "x", **{"async": True})).json()["run_id"]
        async with open_cut_relay(client.router.url, cut_after=b"event: op_finished",
                                  refuse_later=True) as relay:
            shown = io.StringIO()

            def watch() -> int:
                with open_router(relay.url, None) as router:
                    follower = Follower(Progress(shown), run_id=run_id)
                    opener = partial(router.events, "GET",
                                     f"/v1/workflows/runs/{run_id}/events")
                    return follow_run(router, follower, opener, patience=0.3)

            with pytest.raises(CommandFailed) as caught:
                await trio.to_thread.run_sync(watch)
        await client.http.post(f"{client.router.v1}/workflows/runs/{run_id}/cancel")
    assert caught.value.code == 1
    assert "gave up reconnecting" in caught.value.message
    assert f"the run goes on: llm-router workflow watch {run_id}" in caught.value.message
    assert len(relay.requests) >= 3  # the cut one, then at least two tries


# ---- in process: events, each shown once, a run described ---------------------------------


def test_read_events_takes_ids_names_and_json_data() -> None:
    lines = ["id: 7", "event: op_started", 'data: {"op": "a",', 'data:  "tier": 1}', "",
             ": a comment", "", "data: {}", "", "id: 8", "event: result", "data: {"]
    assert list(read_events(lines)) == [Event(7, "op_started", {"op": "a", "tier": 1}),
                                        Event(None, "message", {})]
    with pytest.raises(CommandFailed, match="not JSON"):
        list(read_events(["data: {", ""]))


def test_follower_shows_each_event_once_and_remembers_where_to_resume() -> None:
    out = io.StringIO()
    follower = Follower(Progress(out))
    started = Event(1, "run_started", {"run_id": "run_1", "starts": 2,
                                        "completed_ops": ["a"]})
    op = Event(2, "op_started", {"op": "b", "tier": 2, "model": None})
    for event in (started, op, started, op):  # a stream that repeats itself
        assert follower.feed(event) is None
    assert follower.run_id == "run_1" and follower.last_id == 2
    lines = [line.split("] ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines == ["run      run_1            resumed (start 2); not run again: a",
                     "started  b                tier 2"]

    with pytest.raises(CommandFailed) as failed:
        follower.feed(Event(3, "error", {"error": {"message": "op 'b' failed: 502"}}))
    assert failed.value.code == 1 and failed.value.message.endswith("op 'b' failed: 502")
    with pytest.raises(CommandFailed) as cancelled:
        follower.feed(Event(4, "cancelled", {"run_id": "run_1", "cancelled_by": {
            "request_id": "r", "at": "2026-01-01T00:00:00Z"}}))
    assert cancelled.value.code == 3
    assert cancelled.value.message == "run run_1 was cancelled at 2026-01-01T00:00:00Z"
    assert follower.last_id == 4


def test_describe_run_shows_what_is_known_of_each_op() -> None:
    text = describe_run({
        "run_id": "run_9", "workflow": None, "status": "failed", "starts": 2,
        "created_at": "2026-01-01T00:00:00Z", "started_at": "2026-01-01T00:00:01Z",
        "finished_at": "2026-01-01T00:00:09Z", "cost_usd": 0.5, "final_output": None,
        "error": {"code": "run_incomplete", "message": "1 op did not complete"},
        "cancelled_by": None,
        "ops": {"a": {"status": "succeeded", "model": "m", "tier": 1, "cost_usd": 0.5,
                      "cache": "memo", "attempts": 2, "ms": 1234.5},
                "b": {"status": "failed", "tier": 2, "error": "op 'b' failed:\n 502"},
                "c": {"status": "skipped", "reason": "dependency_failed"}},
    })
    assert text.splitlines() == [
        "run:       run_9",
        "workflow:  -",
        "status:    failed",
        "created:   2026-01-01T00:00:00Z",
        "started:   2026-01-01T00:00:01Z (start 2: resumed)",
        "finished:  2026-01-01T00:00:09Z",
        "cost:      $0.500000",
        "ops:",
        "  a  succeeded  m (tier 1)  $0.500000  1234 ms  cache memo; 2 attempts",
        "  b  failed     tier 2                          op 'b' failed: 502",
        "  c  skipped                                    dependency failed",
        "error:     run_incomplete: 1 op did not complete",
    ]
