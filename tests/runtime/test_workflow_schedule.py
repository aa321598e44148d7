"""Workflow scheduling (engine.runtime.executor) end to end over real sockets: which ops run
together, how many at once, in which order, and when a spent budget stops the run.

A router serves ``POST /v1/workflows`` in front of the fake upstream. Where a test must see
calls in flight together, ``t1`` is reached through a relay that holds its answers until the
test lets them go (``support_hold_relay``): calls are under way together because the test
saw them be, not because a latency outlasted the machine's scheduling.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio
from support_hold_relay import HoldRelay, open_hold_relay
from support_workflows import open_workflow_router, received, run_held, three_tiers, workflow
from workflow_cases import DIAMOND

from engine.testing.fake_upstream import Behaviour, FakeUpstream, Usage


def via(relay: HoldRelay, fake: FakeUpstream) -> list[dict[str, Any]]:
    """:func:`three_tiers` with ``t1`` reached through ``relay``."""
    models = three_tiers(fake)
    models[0]["base_url"] = relay.base_url("t1", "openai")
    return models


# ---- parallelism and scheduling ----------------------------------------------------------------


async def test_diamond_runs_its_middle_in_parallel(fake_upstream: FakeUpstream) -> None:
    """t1's answers are held at a relay: b and c both reach the fake while neither is answered
    (run one after the other, c would wait for an answer that never comes), d only after."""
    fake = fake_upstream
    async with open_hold_relay(fake) as relay, open_workflow_router(via(relay, fake)
                                                                   ) as client:
        relay.hold()
        done: dict[str, httpx.Response] = {}

        async def run() -> None:
            done["response"] = await client.run(DIAMOND, "go")

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)
                await relay.wait_held(1)
                assert received(fake, "t1") == ["Step a.\n\ngo"]
                relay.release(1)
                await relay.wait_held(2)  # b and c, in flight together
                assert {p.split(".")[0] for p in received(fake, "t1")} == {
                    "Step a", "Step b", "Step c"}
                relay.release()

    assert done["response"].status_code == 200, done["response"].text
    order = [p.split(".")[0] for p in received(fake, "t1")]
    assert order[0] == "Step a" and order[3] == "Step d"
    assert set(order[1:3]) == {"Step b", "Step c"}


async def test_fan_out_of_20_is_bounded_by_max_concurrency(fake_upstream: FakeUpstream) -> None:
    fake = fake_upstream
    ops = {f"p{i}": {"prompt": f"Part {i}.", "tier": 1} for i in range(20)}
    async with open_hold_relay(fake) as relay, open_workflow_router(via(relay, fake)) as client:
        under_way, response = await run_held(client, relay, workflow(ops, max_concurrency=4),
                                              "x", held=4)

    assert response.status_code == 200, response.text
    assert under_way == 4  # with every answer held, the run sent 4 calls and no more
    assert sorted(received(fake, "t1")) == sorted(f"Part {i}.\n\nx" for i in range(20))
    assert response.json()["status"] == "completed"


async def test_the_configured_max_concurrency_is_the_default(fake_upstream: FakeUpstream) -> None:
    fake = fake_upstream
    ops = {f"p{i}": {"prompt": f"Part {i}.", "tier": 1} for i in range(8)}
    async with open_hold_relay(fake) as relay, open_workflow_router(
            via(relay, fake), workflows={"max_concurrency": 3}) as client:
        under_way, response = await run_held(client, relay, workflow(ops), "x", held=3)

    assert response.status_code == 200, response.text
    assert under_way == 3
    assert len(fake.requests("t1")) == 8


async def test_the_longer_chain_starts_first(fake_upstream: FakeUpstream) -> None:
    fake = fake_upstream
    # "a" comes first in the YAML and alphabetically; only the critical path puts z1 first.
    text = workflow(
        {
            "a": {"prompt": "Short a.", "tier": 1},
            "z1": {"prompt": "Long 1.", "tier": 1},
            "z2": {"prompt": "Long 2.", "tier": 1, "input_ops": ["z1"]},
            "z3": {"prompt": "Long 3.", "tier": 1, "input_ops": ["z2"]},
        },
        max_concurrency=1,
    )
    async with open_workflow_router(three_tiers(fake)) as client:
        response = await client.run(text, "x")

    assert response.status_code == 200, response.text
    assert [p.split(".")[0] for p in received(fake, "t1")] == [
        "Long 1", "Long 2", "Long 3", "Short a"]


async def test_a_spent_budget_stops_scheduling_and_reports_what_did_not_run(
    fake_upstream: FakeUpstream,
) -> None:
    fake = fake_upstream
    # $1 + $2 per 1k tokens and 1,000 tokens each way: every call costs $3.
    models = three_tiers(fake, cost_per_1k_in=1.0, cost_per_1k_out=2.0)
    fake.set_default("t1", Behaviour(usage=Usage(1000, 1000)))
    text = workflow(
        {
            "first": {"prompt": "First.", "tier": 1},
            "second": {"prompt": "Second.", "tier": 1, "input_ops": ["first"]},
            "side": {"prompt": "Side.", "tier": 1},
        },
        max_cost_usd=2.5, max_concurrency=1,
    )
    async with open_workflow_router(models) as client:
        response = await client.run(text, "x")
        _, events = await client.stream(text, "x")

    assert response.status_code == 200, response.text
    result = response.json()
    assert received(fake, "t1") == ["First.\n\nx"] * 2  # once per run
    assert result["status"] == "partial"
    assert result["total_cost_usd"] == pytest.approx(3.0)
    assert sorted(result["not_run"]) == ["second", "side"]
    assert result["ops"]["second"]["status"] == "not_run"
    assert result["ops"]["first"]["cost_usd"] == pytest.approx(3.0)
    assert set(result["outputs"]) == {"first"}
    skipped = {data["op"]: data["reason"] for name, data in events if name == "op_skipped"}
    assert skipped == {"second": "not_run", "side": "not_run"}
    assert events[-1][0] == "result" and events[-1][1]["not_run"] == result["not_run"]
