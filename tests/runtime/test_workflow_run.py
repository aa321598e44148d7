"""Running workflows (engine.runtime.workflow_run, engine.runtime.executor) end to end over real
sockets.

A router serves ``POST /v1/workflows`` in front of the fake upstream; what the fake received
(and when, and whether the router cancelled it) is the evidence. The executor's scheduling
rules are also property-tested on their own with random DAGs, under trio's mock clock.

Where a test needs calls in flight together, their answers are held at a relay in front of the
fake (``support_hold_relay``) until the test has seen what it waits for; a call that must never
answer in time hangs. Parallelism and scheduling have their own module,
``test_workflow_schedule``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support_hold_relay import HoldRelay, open_hold_relay
from support_routing import model_entry, wait_for
from support_workflows import (
    open_raw_post,
    open_workflow_router,
    prompt_of,
    received,
    sse_events,
    three_tiers,
    workflow,
)
from trio.testing import MockClock
from workflow_cases import DIAMOND, SPEC_EXAMPLE

from engine.core.planner import Node, build_plan
from engine.runtime.executor import execute_plan
from engine.testing.fake_upstream import Behaviour, FakeUpstream


def pinned(fake: FakeUpstream, *names: str, **extra: Any) -> list[dict[str, Any]]:
    """One tier-1 model per name; ops pin them (``model: <name>``), so a failure is not
    failed over to another backend and each op's requests are counted on its own backend."""
    return [model_entry(fake, name, tier=1, **extra) for name in names]


# ---- data flow ---------------------------------------------------------------------------------


async def test_spec_example_outputs_reach_dependents_requests(
    fake_upstream: FakeUpstream,
) -> None:
    fake = fake_upstream
    async with open_workflow_router(three_tiers(fake)) as client:
        started = time.perf_counter()
        response = await client.run(SPEC_EXAMPLE, "How many rs are in strawberry?")
        elapsed_ms = (time.perf_counter() - started) * 1000

    assert response.status_code == 200, response.text
    result = response.json()
    reason_text = "Think step by step.\n\nHow many rs are in strawberry?"
    critique_text = f"Find errors in the reasoning.\n\n[t1] {reason_text}"
    refine_text = f"Give a correct final answer.\n\n[t2] {critique_text}"
    assert received(fake, "t1") == [reason_text]
    assert received(fake, "t2") == [critique_text, refine_text]
    assert received(fake, "t3") == []
    # the documented response shape.
    assert result["outputs"] == {"reason": f"[t1] {reason_text}",
                                 "critique": f"[t2] {critique_text}",
                                 "refine": f"[t2] {refine_text}"}
    assert result["routing"] == {"reason": "t1", "critique": "t2", "refine": "t2"}
    assert set(result["costs"]) == {"reason", "critique", "refine"}
    assert type(result["total_ms"]) is int and 0 < result["total_ms"] <= elapsed_ms + 1
    assert result["final_output"] == f"[t2] {refine_text}"
    assert result["status"] == "completed"
    # max_tokens reached the providers.
    assert fake.requests("t1")[0].body["max_tokens"] == 1024
    assert [r.body["max_tokens"] for r in fake.requests("t2")] == [512, 512]


async def test_several_inputs_arrive_under_headings_in_input_ops_order(
    fake_upstream: FakeUpstream,
) -> None:
    fake = fake_upstream
    async with open_workflow_router(three_tiers(fake)) as client:
        response = await client.run(DIAMOND, "go")

    assert response.status_code == 200, response.text
    prompts = {p.split(".")[0]: p for p in received(fake, "t1")}
    assert prompts["Step b"] == "Step b.\n\n[t1] Step a.\n\ngo"
    assert prompts["Step d"] == (
        "Step d.\n\n## b\n\n[t1] Step b.\n\n[t1] Step a.\n\ngo"
        "\n\n## c\n\n[t1] Step c.\n\n[t1] Step a.\n\ngo"
    )


async def test_templates_render_variables_system_and_json_values(
    fake_upstream: FakeUpstream,
) -> None:
    fake = fake_upstream
    answer = '```json\n{"city": "Paris", "n": 3}\n```'
    fake.script("t1", Behaviour(text=answer))
    text = workflow(
        {
            "facts": {"prompt": "Facts about {{ input|upper }} as JSON.", "json": True,
                      "tier": 1},
            "write": {
                "prompt": "Write to {{ ops.facts.value.city }} ({{ ops.facts.value.n + 1 }} "
                          "times) in a {{ tone }} tone; facts: {{ ops.facts.output|length }} "
                          "chars.",
                "system": "You are {{ vars.persona }}.",
                "tier": 2,
                "input_ops": ["facts"],
            },
        },
        variables={"tone": "dry", "persona": {"default": "a poet", "description": "who"}},
    )
    async with open_workflow_router(three_tiers(fake)) as client:
        response = await client.run(text, "france", variables={"tone": "warm"})

    assert response.status_code == 200, response.text
    result = response.json()
    assert received(fake, "t1") == ["Facts about FRANCE as JSON."]
    assert fake.requests("t1")[0].body["response_format"] == {"type": "json_object"}
    (write,) = fake.requests("t2")
    assert prompt_of(write) == (
        f"Write to Paris (4 times) in a warm tone; facts: {len(answer)} chars.")
    assert write.body["system"] == "You are a poet."
    assert result["values"] == {"facts": {"city": "Paris", "n": 3}}


# ---- failure policies --------------------------------------------------------------------------


async def test_fail_fast_names_the_failed_op_and_cancels_the_rest(
    fake_upstream: FakeUpstream,
) -> None:
    """bad's error is held until slow's call is under way (it never answers)."""
    fake = fake_upstream
    fake.set_default("bad", Behaviour(status=500))
    fake.set_default("slow", Behaviour(hang=True))
    text = workflow({
        "broken": {"prompt": "Broken.", "model": "bad"},
        "waiting": {"prompt": "Waiting.", "model": "slow"},
        "after": {"prompt": "After.", "model": "fine", "input_ops": ["waiting"]},
    })
    async with open_hold_relay(fake) as relay:
        models = [*pinned(fake, "slow", "fine"),
                  model_entry(fake, "bad", tier=1, base_url=relay.base_url("bad", "openai"))]
        async with open_workflow_router(models) as client:
            response = await run_first_held(
                client, relay, text, held=1, value="x",
                before_release=lambda: wait_for(lambda: _arrived(fake, "slow")))
            with trio.fail_after(60):
                await fake.wait_until_idle()

    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["param"] == "broken"
    assert error["message"].startswith("op 'broken' failed: ")
    (hung,) = fake.requests("slow")
    assert hung.cancelled and not hung.completed
    assert fake.requests("fine") == []


async def _arrived(fake: FakeUpstream, backend: str) -> bool:
    return bool(fake.requests(backend))


async def test_continue_skips_dependents_and_finishes_the_independent_branch(
    fake_upstream: FakeUpstream,
) -> None:
    fake = fake_upstream
    fake.set_default("bad", Behaviour(status=500))
    text = workflow(
        {
            "broken": {"prompt": "Broken.", "model": "bad"},
            "child": {"prompt": "Child.", "model": "fine", "input_ops": ["broken"]},
            "grandchild": {"prompt": "Grandchild.", "model": "fine", "input_ops": ["child"]},
            "other": {"prompt": "Other.", "model": "fine"},
            "other_next": {"prompt": "Other next.", "model": "fine", "input_ops": ["other"]},
        },
        on_error="continue",
    )
    async with open_workflow_router(pinned(fake, "bad", "fine")) as client:
        response = await client.run(text, "x")
        _, events = await client.stream(text, "x")

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] == "partial"
    assert list(result["failed"]) == ["broken"]
    assert result["failed"]["broken"].startswith("op 'broken' failed: ")
    assert sorted(result["skipped"]) == ["child", "grandchild"]
    assert set(result["outputs"]) == {"other", "other_next"}
    assert result["final_output"] == f"## other_next\n{result['outputs']['other_next']}"
    assert sorted(p.split(".")[0] for p in received(fake, "fine")) == [
        "Other", "Other", "Other next", "Other next"]
    failed = [data for name, data in events if name == "op_failed"]
    assert [f["op"] for f in failed] == ["broken"]
    skipped = {data["op"]: data["reason"] for name, data in events if name == "op_skipped"}
    assert skipped == {"child": "skipped", "grandchild": "skipped"}


async def test_per_op_timeout_and_retries(fake_upstream: FakeUpstream) -> None:
    """A timed-out attempt hangs (it could never answer in time); the attempt retried after
    it answers at once, with a second to spare for a slow machine."""
    fake = fake_upstream
    once = workflow({"a": {"prompt": "Once.", "model": "m", "timeout_sec": 0.2}})
    again = workflow({"a": {"prompt": "Again.", "model": "m", "timeout_sec": 1,
                            "retries": 1}})
    flaky = workflow({"a": {"prompt": "Flaky.", "model": "m", "retries": 1}})
    fragile = workflow({"a": {"prompt": "Fragile.", "model": "m"}})
    async with open_workflow_router(pinned(fake, "m")) as client:
        fake.script("m", Behaviour(hang=True))
        timed_out = await client.run(once, "x")
        with trio.fail_after(60):
            await fake.wait_until_idle()
        fake.script("m", Behaviour(hang=True), Behaviour())
        retried = await client.run(again, "x")
        fake.script("m", Behaviour(status=500), Behaviour())
        recovered = await client.run(flaky, "x")
        fake.script("m", Behaviour(status=500), Behaviour())
        failed = await client.run(fragile, "x")

    assert timed_out.status_code == 504, timed_out.text
    error = timed_out.json()["error"]
    assert error["param"] == "a" and "timeout_sec (0.2 s)" in error["message"]
    assert fake.requests("m")[0].cancelled  # the slow attempt was abandoned upstream
    assert fake.requests("m")[1].cancelled  # and so was the first of the retried op

    assert retried.status_code == 200, retried.text
    assert retried.json()["ops"]["a"]["attempts"] == 2
    assert recovered.status_code == 200, recovered.text
    assert recovered.json()["ops"]["a"]["attempts"] == 2
    assert recovered.json()["outputs"]["a"] == "[m] Flaky.\n\nx"
    assert failed.status_code == 502 and failed.json()["error"]["param"] == "a"
    assert [p.split(".")[0] for p in received(fake, "m")] == [
        "Once", "Again", "Again", "Flaky", "Flaky", "Fragile"]


# ---- cancellation ------------------------------------------------------------------------------


async def test_a_client_disconnect_leaves_the_run_and_cancel_closes_every_call(
    fake_upstream: FakeUpstream,
) -> None:
    fake = fake_upstream
    fake.set_default("t1", Behaviour(hang=True))
    text = workflow({"a": {"prompt": "A.", "tier": 1}, "b": {"prompt": "B.", "tier": 1}})

    async def both_arrived() -> bool:
        return len(fake.requests("t1")) == 2

    async with open_workflow_router(three_tiers(fake)) as client:
        body = {"input": "y", "workflow": text, "stream": True}
        async with open_raw_post(client.router.url, "/v1/workflows", body) as sock:
            seen = b""
            while seen.count(b"event: op_started") < 2:
                seen += await sock.receive_some()
            await wait_for(both_arrived)
        assert seen.startswith(b"HTTP/1.1 200")
        run_id = re.search(rb"x-llm-router-run-id: (run_\w+)", seen, re.IGNORECASE)
        assert run_id is not None
        # The client left; the run did not. Once the router has seen the hang-up (it handled
        # a later request, and nothing of the loop has anything left to do), the run is still
        # going and both calls are still open upstream.
        run_url = f"{client.router.v1}/workflows/runs/{run_id.group(1).decode()}"
        await trio.testing.wait_all_tasks_blocked()
        still = (await client.http.get(run_url)).json()
        await trio.testing.wait_all_tasks_blocked()
        assert still["status"] == "running", still
        assert all(not r.cancelled for r in fake.requests("t1")) and fake.active == 2

        cancel = await client.http.post(f"{run_url}/cancel")
        statuses = {name: op["status"] for name, op in cancel.json()["ops"].items()}
        assert statuses == {"a": "cancelled", "b": "cancelled"}
        with trio.fail_after(60):
            await fake.wait_until_idle()
        assert all(r.cancelled and not r.completed for r in fake.requests("t1"))


# ---- backends and dedup ------------------------------------------------------------------------


async def test_a_same_tier_chain_keeps_its_backend(fake_upstream: FakeUpstream) -> None:
    fake = fake_upstream
    models = [model_entry(fake, "one", tier=1), model_entry(fake, "two", tier=1),
              model_entry(fake, "big", tier=2)]
    chain = workflow({
        "a": {"prompt": "A.", "tier": 1},
        "b": {"prompt": "B.", "tier": 1, "input_ops": ["a"]},
        "c": {"prompt": "C.", "tier": 1, "input_ops": ["b"]},
    })
    async with open_workflow_router(models) as client:
        first = await client.run(chain, "x")
        backends = await client.http.get(client.router.v1 + "/backends")
        # "two" has served nothing: lower latency, it would win a fresh request.
        plain = await client.http.post(client.router.v1 + "/chat/completions", json={
            "model": "auto", "messages": [{"role": "user", "content": "hi"}]})
        second = await client.run(chain.replace("A.", "A again."), "x")

    assert first.status_code == 200 and second.status_code == 200
    assert set(first.json()["routing"].values()) == {"one"}
    assert {b["name"]: b["in_flight"] for b in backends.json()}["two"] == 0
    assert plain.headers["x-llm-router-model"] == "two"
    assert len(set(second.json()["routing"].values())) == 1
    assert len(fake.requests("one")) + len(fake.requests("two")) == 7


async def test_identical_ops_of_concurrent_runs_execute_once(fake_upstream: FakeUpstream) -> None:
    """Two runs of the diamond, step by step: t1's answers are held until the step's ops are
    running in both runs and the loop has nothing left to do, so each op either waits on its
    call at the relay or has joined the other run's: one call per distinct op of the step."""
    fake = fake_upstream
    results: list[httpx.Response] = []
    models = three_tiers(fake)

    async def running(client: Any, step: str) -> int:
        runs = (await client.http.get(client.router.v1 + "/workflows/runs")).json()["data"]
        return sum(r["ops"][op] == "running" for r in runs for op in step)

    async with open_hold_relay(fake) as relay:
        models[0]["base_url"] = relay.base_url("t1", "openai")
        async with open_workflow_router(models) as client:

            async def run() -> None:
                results.append(await client.run(DIAMOND, "same input"))

            relay.hold()
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(run)
                    nursery.start_soon(run)
                    for step in ("a", "bc", "d"):
                        distinct = len(step)
                        await relay.wait_held(distinct)
                        while await running(client, step) < 2 * distinct:
                            await trio.sleep(0.005)
                        await trio.testing.wait_all_tasks_blocked()
                        assert relay.held == distinct
                        relay.release(distinct)
                    relay.release()

    assert [r.status_code for r in results] == [200, 200]
    prompts = received(fake, "t1")
    assert len(prompts) == 4 and len(set(prompts)) == 4
    assert results[0].json()["outputs"] == results[1].json()["outputs"]


# ---- every op after its inputs, exactly once ---------------------------------------------------


@st.composite
def dags(draw: st.DrawFn, max_nodes: int) -> tuple[int, list[tuple[int, int]]]:
    """A DAG on nodes 0..n-1: edges only from a lower number to a higher one."""
    n = draw(st.integers(1, max_nodes))
    pairs = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)),
                          max_size=3 * n))
    return n, sorted({(min(a, b), max(a, b)) for a, b in pairs if a != b})


@settings(max_examples=150, deadline=None)
@given(
    dag=dags(max_nodes=12),
    delays=st.lists(st.integers(0, 5), min_size=12, max_size=12),
    failing=st.sets(st.integers(0, 11), max_size=3),
    limit=st.none() | st.integers(1, 4),
    priority=st.lists(st.integers(0, 3), min_size=12, max_size=12),
)
def test_random_dags_run_each_op_once_after_its_inputs(
    dag: tuple[int, list[tuple[int, int]]], delays: list[int], failing: set[int],
    limit: int | None, priority: list[int],
) -> None:
    n, edges = dag
    names = [f"n{i}" for i in range(n)]
    plan = build_plan([Node(name) for name in names], [(names[a], names[b]) for a, b in edges])
    preds = {name: {names[a] for a, b in edges if names[b] == name} for name in names}
    ranks = {name: float(priority[i]) for i, name in enumerate(names)}
    bad = {names[i] for i in failing if i < n}
    started: list[str] = []
    finished: set[str] = set()
    running = [0, 0]  # now, peak

    async def run_node(node: Node, inputs: dict[str, Any]) -> str:
        assert node.name not in started
        assert preds[node.name] <= finished  # every input finished first
        assert inputs == {p: f"out {p}" for p in preds[node.name]}
        if limit == 1:  # no ready op had a higher priority
            ready = [m for m in names if m not in started and preds[m] <= finished
                     and not (preds[m] & bad)]
            assert all(ranks[node.name] >= ranks[m] for m in ready)
        started.append(node.name)
        running[0] += 1
        running[1] = max(running)
        try:
            await trio.sleep(delays[int(node.name[1:])])
            if node.name in bad:
                raise ValueError(node.name)
        finally:
            running[0] -= 1
        finished.add(node.name)
        return f"out {node.name}"

    async def main() -> None:
        outcome = await execute_plan(plan, run_node, max_concurrency=limit, priority=ranks,
                                     on_error="continue")
        descendants = set().union(*(plan_descendants(plan, b) for b in bad))
        for name in names:
            if name in bad and name not in descendants:
                assert outcome.status[name] == "failed"
            elif name in descendants:
                assert outcome.status[name] == "skipped" and name not in started
            else:
                assert outcome.status[name] == "done"
                assert outcome.outputs[name] == f"out {name}"
        assert sorted(outcome.order) == sorted(started) and len(set(started)) == len(started)

    trio.run(main, clock=MockClock(autojump_threshold=0))
    assert limit is None or running[1] <= limit


def plan_descendants(plan: Any, name: str) -> set[str]:
    import networkx as nx

    return set(nx.descendants(plan.graph, name))


@settings(max_examples=4, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(dag=dags(max_nodes=6))
async def test_random_dags_over_http_run_each_op_once_after_its_inputs(
    dag: tuple[int, list[tuple[int, int]]],
) -> None:
    n, edges = dag
    ops: dict[str, dict[str, Any]] = {}
    for i in range(n):
        ops[f"n{i}"] = {"prompt": f"Step {i}.", "tier": 1,
                        "input_ops": [f"n{a}" for a, b in edges if b == i]}
    from engine.testing.fake_upstream import open_fake_upstream

    async with open_fake_upstream() as fake:
        fake.set_default("t1", Behaviour(latency=0.01))
        async with open_workflow_router(three_tiers(fake)) as client:
            response = await client.run(workflow(ops), "in")
        assert response.status_code == 200, response.text
        prompts = received(fake, "t1")

    steps = [int(re.match(r"Step (\d+)\.", p).group(1)) for p in prompts]  # type: ignore[union-attr]
    assert sorted(steps) == list(range(n))  # each op exactly once
    position = {step: i for i, step in enumerate(steps)}
    for a, b in edges:
        assert position[a] < position[b]
        assert f"[t1] {prompts[position[a]]}" in prompts[position[b]]  # a's output reached b


def test_sse_events_helper_reads_named_events() -> None:
    raw = 'event: op_started\ndata: {"op": "a"}\n\nevent: result\ndata: {"x": 1}\n\n'
    assert sse_events(raw) == [("op_started", {"op": "a"}), ("result", {"x": 1})]


async def test_affinity_follows_the_input_of_the_same_tier(fake_upstream: FakeUpstream) -> None:
    """An op with inputs on several tiers keeps the backend of the one on its own tier."""
    fake = fake_upstream
    models = [model_entry(fake, "one", tier=1), model_entry(fake, "two", tier=1),
              model_entry(fake, "big", tier=2)]
    text = workflow({
        "wide": {"prompt": "Wide.", "tier": 2},
        "near": {"prompt": "Near.", "tier": 1},
        "join": {"prompt": "Join.", "tier": 1, "input_ops": ["wide", "near"]},
    })
    async with open_workflow_router(models) as client:
        response = await client.run(text, "x")

    assert response.status_code == 200, response.text
    routing = response.json()["routing"]
    assert routing["wide"] == "big"
    assert routing["join"] == routing["near"]


async def test_parallel_chains_each_keep_their_own_backend(fake_upstream: FakeUpstream) -> None:
    """The first op of each chain is held at the relay until both are under way, so the second
    is routed while the first is in flight; then the chains run on unheld."""
    fake = fake_upstream
    ops: dict[str, dict[str, Any]] = {}
    for chain in ("x", "y"):
        ops[f"{chain}1"] = {"prompt": f"{chain} 1.", "tier": 1}
        for i in (2, 3, 4):
            ops[f"{chain}{i}"] = {"prompt": f"{chain} {i}.", "tier": 1,
                                  "input_ops": [f"{chain}{i - 1}"]}
    async with open_hold_relay(fake) as relay:
        models = [model_entry(fake, name, tier=1, base_url=relay.base_url(name, "openai"))
                  for name in ("one", "two")]
        async with open_workflow_router(models) as client:
            response = await run_first_held(client, relay, workflow(ops), held=2)

    assert response.status_code == 200, response.text
    routing = response.json()["routing"]
    x, y = ({routing[f"{c}{i}"] for i in (1, 2, 3, 4)} for c in ("x", "y"))
    assert len(x) == 1 and len(y) == 1 and x != y  # spread at the start, then kept
    assert len(fake.requests("one")) == len(fake.requests("two")) == 4


async def test_every_op_goes_to_the_cheapest_model_of_its_tier(
    fake_upstream: FakeUpstream,
) -> None:
    """Ops are not spread by load as chat requests are: three ops of one tier held in flight
    together all go to its cheapest model, and so does a later op once the cheap model's
    latency is measured and the dear one's is not (it used to win on both counts)."""
    fake = fake_upstream
    ops = {name: {"prompt": f"{name}.", "tier": 1} for name in ("a", "b", "c")}
    async with open_hold_relay(fake) as relay:
        models = [model_entry(fake, name, tier=1, base_url=relay.base_url(name, "openai"),
                              cost_per_1k_in=price, cost_per_1k_out=price)
                  for name, price in (("dear", 0.01), ("cheap", 0.001))]
        async with open_workflow_router(models) as client:
            together = await run_first_held(client, relay, workflow(ops), held=3)
            later = await client.run(workflow({"d": {"prompt": "D.", "tier": 1}}), "x")

    assert together.status_code == 200, together.text
    assert together.json()["routing"] == {"a": "cheap", "b": "cheap", "c": "cheap"}
    assert later.status_code == 200, later.text
    assert later.json()["routing"] == {"d": "cheap"}
    assert fake.requests("dear") == []


async def run_first_held(client: Any, relay: HoldRelay, text: str, *, held: int,
                         value: str = "go",
                         before_release: Callable[[], Awaitable[object]] | None = None,
                         ) -> httpx.Response:
    """Run ``text`` on ``value`` with its first ``held`` answers held until all of them wait
    at once (and ``before_release`` has returned)."""
    relay.hold()
    done: list[httpx.Response] = []

    async def run() -> None:
        done.append(await client.run(text, value))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            await relay.wait_held(held)
            if before_release is not None:
                await before_release()
            relay.release()
    return done[0]


async def test_a_json_op_whose_answer_is_not_json_is_retried(fake_upstream: FakeUpstream) -> None:
    fake = fake_upstream
    fake.script("m", Behaviour(text="Sure! Here you go: {"), Behaviour(text='{"k": [1, 2]}'),
                Behaviour(text="still not JSON"))
    retried = workflow({
        "facts": {"prompt": "JSON please.", "model": "m", "json": True, "retries": 1},
        "use": {"prompt": "k has {{ ops.facts.value.k|length }} items.", "model": "m",
                "input_ops": ["facts"]},
    })
    once = workflow({"facts": {"prompt": "JSON again.", "model": "m", "json": True}})
    async with open_workflow_router(pinned(fake, "m")) as client:
        ok = await client.run(retried, "x")
        failed = await client.run(once, "x")

    assert ok.status_code == 200, ok.text
    result = ok.json()
    assert result["values"] == {"facts": {"k": [1, 2]}}
    assert result["ops"]["facts"]["attempts"] == 2
    assert received(fake, "m")[2] == "k has 2 items."
    assert failed.status_code == 502
    assert "asked for JSON, but the answer is not JSON" in failed.json()["error"]["message"]
    assert failed.json()["error"]["param"] == "facts"
