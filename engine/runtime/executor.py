"""The executor: runs a plan's nodes in a trio nursery, each the moment its inputs are done.

It knows nothing about LLMs: ``run_node(node, inputs)`` does the work of one node (for the
router, :class:`~engine.node.NodeRunner` makes the routing, cache, dedup and backend decisions),
and ``inputs`` maps each upstream node's name to its output.

Scheduling: at most ``max_concurrency`` nodes run at once; when more are ready, the one with
the highest ``priority`` goes first (the workflow runner passes each node's remaining critical
path, so the longest chain is never starved by short side branches). ``admit(name)`` is asked
right before a node starts; a node it refuses is ``not_run`` (a spent budget).

Failure policy:

* ``fail_fast``: the first node to fail cancels the rest; the outcome names it (the earliest,
  if several fail together) and :func:`execute` raises its exception. Exception groups never
  escape: quart-trio picks handlers for groups non-deterministically.
* ``continue``: a failed node's descendants are ``skipped``; everything else still runs.
"""

from __future__ import annotations

import heapq
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import trio

from engine.core.planner import Node, Plan

__all__ = ["PlanOutcome", "RunNode", "execute", "execute_plan"]

RunNode = Callable[[Node, Mapping[str, Any]], Awaitable[Any]]
Status = Literal["done", "failed", "skipped", "not_run", "cancelled"]


@dataclass(slots=True)
class PlanOutcome:
    """What happened to every node: its output (``done``), its exception (``failed``), or why
    it did not run (``skipped``: an input failed or did not run; ``not_run``: refused by
    ``admit``; ``cancelled``: a fail-fast failure elsewhere)."""

    outputs: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Status] = field(default_factory=dict)
    errors: dict[str, Exception] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # start order
    first_failure: str | None = None  # fail-fast: the node whose failure stopped the run


async def execute(plan: Plan, run_node: RunNode) -> dict[str, Any]:
    """Run every node of ``plan`` fail-fast; return each node's output by name.

    Raises:
        Exception: the earliest node failure, unchanged.
    """
    if len(plan) == 1:  # the chat path: no nursery, no bookkeeping
        (name,) = plan.generations[0]
        return {name: await run_node(plan.node(name), {})}
    outcome = await execute_plan(plan, run_node)
    if outcome.first_failure is not None:
        raise outcome.errors[outcome.first_failure]
    return outcome.outputs


async def execute_plan(
    plan: Plan,
    run_node: RunNode,
    *,
    max_concurrency: int | None = None,
    priority: Mapping[str, float] | None = None,
    admit: Callable[[str], bool] | None = None,
    on_error: Literal["fail_fast", "continue"] = "fail_fast",
) -> PlanOutcome:
    """Run ``plan`` with the scheduling and failure policy of the module docstring."""
    graph = plan.graph
    outcome = PlanOutcome()
    waiting = {name: len(graph.pred[name]) for name in graph}
    blocked: set[str] = set()
    ready: list[tuple[float, int, str]] = []
    failures: list[tuple[float, int, str]] = []
    running = 0
    rank = priority or {}
    seq = 0

    def make_ready(name: str) -> None:
        nonlocal seq
        heapq.heappush(ready, (-rank.get(name, 0.0), seq, name))
        seq += 1

    def settle(name: str, status: Status) -> None:
        """Record ``name``'s end and release (or block) its successors."""
        outcome.status[name] = status
        for succ in graph.successors(name):
            if status != "done":
                blocked.add(succ)
            waiting[succ] -= 1
            if waiting[succ] == 0:
                if succ in blocked:
                    settle(succ, "skipped")
                else:
                    make_ready(succ)

    def dispatch(nursery: trio.Nursery) -> None:
        nonlocal running
        while ready and (max_concurrency is None or running < max_concurrency):
            _, _, name = heapq.heappop(ready)
            if admit is not None and not admit(name):
                settle(name, "not_run")
                continue
            running += 1
            outcome.order.append(name)
            nursery.start_soon(run, name, nursery)

    async def run(name: str, nursery: trio.Nursery) -> None:
        nonlocal running
        inputs = {pred: outcome.outputs[pred] for pred in graph.predecessors(name)}
        try:
            output = await run_node(plan.node(name), inputs)
        except Exception as exc:
            outcome.errors[name] = exc
            if on_error == "fail_fast":
                outcome.status[name] = "failed"
                failures.append((trio.current_time(), len(failures), name))
                nursery.cancel_scope.cancel()
                return
            settle(name, "failed")
        else:
            outcome.outputs[name] = output
            settle(name, "done")
        finally:
            running -= 1
        dispatch(nursery)

    async with trio.open_nursery() as nursery:
        for name in plan.generations[0]:
            make_ready(name)
        dispatch(nursery)
    if failures:
        for name in graph:
            outcome.status.setdefault(name, "cancelled")
        outcome.first_failure = min(failures)[2]
    return outcome
