"""A durable run survives its router process: killed (SIGKILL) or stopped (SIGTERM) mid-run,
the run is finished by the next router started on the same store, and the ops that had
finished are not called again (counted at the fake upstream, which outlives both routers).

The routers are real ``llm-router`` processes; the fake upstream runs in the test.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import httpx
import trio
import yaml
from support_processes import router_process
from support_routing import wait_for
from workflow_cases import CHAIN

from engine.testing.fake_upstream import Behaviour, FakeUpstream


def write_config(tmp_path: Path, fake: FakeUpstream) -> Path:
    models = [
        {"name": name, "provider": "openai", "model": name, "tier": 1,
         "base_url": fake.base_url(name, "openai"), "api_key": "k",
         "cost_per_1k_in": 0.001, "cost_per_1k_out": 0.002}
        for name in ("ma", "mb", "mc")
    ]
    config = {
        "models": models, "cache": {"enabled": False},
        "learned": {"model": None, "feedback_db": str(tmp_path / "feedback.db")},
        "state": {"path": str(tmp_path / "state.db")},
        "workflows": {"dir": str(tmp_path / "none"), "templates_dir": str(tmp_path / "none")},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def get_run(http: httpx.AsyncClient, url: str, run_id: str) -> dict[str, Any]:
    response = await http.get(f"{url}/v1/workflows/runs/{run_id}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def start_and_stop_mid_run(fake: FakeUpstream, config: Path, how: signal.Signals
                                 ) -> str:
    """Submit the chain, wait until op a is done and op b is at the upstream, then stop the
    router with ``how``; the run's id."""
    fake.set_default("mb", Behaviour(hang=True))
    async with router_process(config) as (process, url), httpx.AsyncClient(timeout=10) as http:
        submitted = await http.post(f"{url}/v1/workflows", headers={"prefer": "respond-async"},
                                    json={"workflow": CHAIN, "input": "x"})
        assert submitted.status_code == 202
        run_id: str = submitted.json()["run_id"]

        async def b_called() -> bool:
            return len(fake.requests("mb")) == 1

        await wait_for(b_called)
        stored = await get_run(http, url, run_id)
        assert stored["ops"]["a"]["status"] == "succeeded"
        assert stored["ops"]["b"]["status"] == "running"
        process.send_signal(how)
        with trio.fail_after(15):
            await process.wait()
    fake.clear_default("mb")
    with trio.fail_after(5):
        await fake.wait_until_idle()  # the stopped router's call to b was dropped
    assert fake.requests("mb")[0].cancelled
    return run_id


async def finish_in_a_new_process(config: Path, run_id: str) -> dict[str, Any]:
    async with router_process(config) as (_, url), httpx.AsyncClient(timeout=10) as http:
        done: dict[str, Any] = {}

        async def finished() -> bool:
            done.update(await get_run(http, url, run_id))
            return done["status"] in ("succeeded", "failed", "cancelled")

        await wait_for(finished, poll=0.05)
        events = (await http.get(f"{url}/v1/workflows/runs/{run_id}/events")).text
    done["event_names"] = re.findall(r"^event: (\w+)$", events, re.MULTILINE)
    done["event_ids"] = [int(i) for i in re.findall(r"^id: (\d+)$", events, re.MULTILINE)]
    return done


async def test_a_run_killed_mid_op_is_finished_by_the_next_process(
    fake_upstream: FakeUpstream, tmp_path: Path,
) -> None:
    fake = fake_upstream
    config = write_config(tmp_path, fake)
    run_id = await start_and_stop_mid_run(fake, config, signal.SIGKILL)

    done = await finish_in_a_new_process(config, run_id)
    assert done["status"] == "succeeded" and done["starts"] == 2
    assert done["final_output"].startswith("[mc] Step c.")
    # Op a finished before the kill: not called again. Op b was cut: run again, whole.
    assert len(fake.requests("ma")) == 1
    assert len(fake.requests("mb")) == 2 and fake.requests("mb")[1].completed
    assert len(fake.requests("mc")) == 1
    # b's second call read a's answer from the store.
    assert "[ma] Step a." in str(fake.requests("mb")[1].body["messages"])
    assert done["event_names"].count("run_started") == 2
    assert done["event_names"][-1] == "result"
    assert done["event_ids"] == list(range(1, len(done["event_ids"]) + 1))


async def test_a_run_stopped_by_sigterm_resumes_at_once_in_the_next_process(
    fake_upstream: FakeUpstream, tmp_path: Path,
) -> None:
    fake = fake_upstream
    config = write_config(tmp_path, fake)
    run_id = await start_and_stop_mid_run(fake, config, signal.SIGTERM)

    done = await finish_in_a_new_process(config, run_id)
    assert done["status"] == "succeeded" and done["starts"] == 2
    assert [len(fake.requests(m)) for m in ("ma", "mb", "mc")] == [1, 2, 1]
