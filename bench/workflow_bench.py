"""Workflow executor benchmarks.

1. Executor overhead per op: a 1,000-op DAG (a random layered DAG, ~4 inputs per op) planned
   and run by the executor with a node that does no work (one trio checkpoint): the cost of
   scheduling itself.
2. The same 1,000-op DAG through the whole router (POST /v1/workflows, each op rendered,
   routed, deduplicated, sent over HTTP to the test suite's fake provider answering at once):
   the per-op cost of the full node path.
3. A 50-branch fan-out (start -> 50 parallel ops -> join) with 200 ms upstream latency: wall
   time against its lower bound (three rounds of 200 ms: start, the fan-out, the join).

    .venv/bin/python bench/workflow_bench.py
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import httpx
import trio
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness import make_config, open_router

from engine.core.workflow.plan import plan_workflow
from engine.core.workflow.spec import WorkflowLimits, load_workflow
from engine.runtime.executor import execute_plan
from engine.testing.fake_upstream import Behaviour, open_fake_upstream

LIMITS = WorkflowLimits(max_ops=5000, max_depth=5000, max_yaml_bytes=4 << 20)


def layered_dag(n: int, width: int = 20, fan_in: int = 4, seed: int = 1) -> str:
    rng = random.Random(seed)
    ops: dict[str, dict[str, object]] = {}
    layers: list[list[str]] = []
    for i in range(n):
        layer = i // width
        if layer == len(layers):
            layers.append([])
        name = f"op{i}"
        spec: dict[str, object] = {"prompt": f"Step {i}.", "tier": 1, "max_tokens": 16}
        if layer:
            previous = layers[layer - 1]
            spec["input_ops"] = sorted(rng.sample(previous, min(fan_in, len(previous))))
        layers[layer].append(name)
        ops[name] = spec
    used = {i for spec in ops.values() for i in spec.get("input_ops", [])}  # type: ignore[attr-defined]
    sinks = [name for name in ops if name not in used]
    return yaml.safe_dump({"start_ops": layers[0], "end_ops": sinks, "ops": ops,
                           "on_error": "continue"})


def fan_out(n: int) -> str:
    ops: dict[str, dict[str, object]] = {"start": {"prompt": "Begin.", "tier": 1}}
    for i in range(n):
        ops[f"b{i}"] = {"prompt": f"Branch {i}.", "tier": 1, "input_ops": ["start"]}
    ops["join"] = {"prompt": "Join.", "tier": 1, "input_ops": [f"b{i}" for i in range(n)]}
    return yaml.safe_dump({"start_ops": ["start"], "end_ops": ["join"], "ops": ops})


async def executor_only(text: str) -> None:
    t0 = time.perf_counter()
    workflow = load_workflow(text, limits=LIMITS, templates_dir=None)
    t1 = time.perf_counter()
    plan = plan_workflow(workflow)
    t2 = time.perf_counter()

    async def run_node(node: object, inputs: object) -> str:
        await trio.lowlevel.checkpoint()
        return "x"

    outcome = await execute_plan(plan, run_node, max_concurrency=64)
    t3 = time.perf_counter()
    n = len(workflow.ops)
    assert len(outcome.outputs) == n
    print(f"| executor only | {n} | {1000 * (t1 - t0):.1f} | {1000 * (t2 - t1):.1f} | "
          f"{1000 * (t3 - t2):.1f} | {1e6 * (t3 - t2) / n:.0f} |")


async def through_router(text: str, *, latency: float, label: str,
                         lower_bound: float | None = None) -> None:
    async with open_fake_upstream() as fake:
        fake.set_default("b1", Behaviour(latency=latency, text="ok"))
        config = make_config({
            "models": [{"name": "m", "provider": "openai", "model": "gpt-4o-mini",
                        "base_url": fake.base_url("b1", "openai"), "api_key": "k", "tier": 1}],
            "cache": {"enabled": False},
            "workflows": {"max_ops": 5000, "max_depth": 5000, "max_yaml_bytes": 4 << 20,
                          "max_concurrency": 64},
        })
        async with open_router(config) as router, httpx.AsyncClient(timeout=300) as client:
            t0 = time.perf_counter()
            response = await client.post(router.v1 + "/workflows",
                                         json={"input": "go", "workflow": text})
            wall = time.perf_counter() - t0
            assert response.status_code == 200, response.text[:500]
            n = len(response.json()["outputs"])
            extra = f" (lower bound {lower_bound:.2f} s, +{wall - lower_bound:.2f} s)" \
                if lower_bound is not None else ""
            print(f"| {label} | {n} | {wall:.2f} s{extra} | {1e3 * wall / n:.2f} ms/op |")


async def main() -> None:
    dag = layered_dag(1000)
    print("| what | ops | load ms | plan ms | run ms | us/op |")
    print("|---|---:|---:|---:|---:|---:|")
    await executor_only(dag)
    print()
    print("| what | ops | wall | per op |")
    print("|---|---:|---|---:|")
    await through_router(dag, latency=0.0, label="1,000-op DAG, full router path, 0 ms upstream")
    await through_router(fan_out(50), latency=0.2, label="50-branch fan-out, 200 ms upstream",
                         lower_bound=0.6)


if __name__ == "__main__":
    trio.run(main)
