"""The executor: runs a plan's nodes in a trio nursery, each the moment its inputs are done.

It knows nothing about LLMs: ``run_node(node, inputs)`` does the work of one node (for the
router, that is :class:`~engine.node.NodeRunner`, which makes the routing, backend, cache and
dedup decisions), and ``inputs`` maps each upstream node's name to its output.

Failure is fail-fast: the first node to fail cancels the rest, and the caller gets *one*
exception, the earliest failure's, with the whole exception group as its ``__cause__``
(quart-trio picks handlers for groups non-deterministically, so groups never escape).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from .planner import Node, Plan

__all__ = ["RunNode", "execute"]

RunNode = Callable[[Node, Mapping[str, Any]], Awaitable[Any]]


async def execute(
    plan: Plan, run_node: RunNode, *, max_concurrency: int | None = None
) -> dict[str, Any]:
    """Run every node of ``plan``; return each node's output by name.

    Args:
        plan: the DAG to run.
        run_node: does one node's work given its inputs' outputs.
        max_concurrency: at most this many nodes run at once (``None``: no limit).

    Raises:
        Exception: the earliest node failure, unchanged, with the group as ``__cause__``.
    """
    graph = plan.graph
    if len(plan) == 1:  # the chat path: no nursery, no bookkeeping
        (name,) = plan.generations[0]
        return {name: await run_node(plan.node(name), {})}

    outputs: dict[str, Any] = {}
    waiting = {name: graph.in_degree(name) for name in graph}
    failures: list[tuple[float, int, BaseException]] = []
    limiter = trio.CapacityLimiter(max_concurrency) if max_concurrency else None

    async def run(name: str, nursery: trio.Nursery) -> None:
        inputs = {pred: outputs[pred] for pred in graph.predecessors(name)}
        try:
            if limiter is None:
                outputs[name] = await run_node(plan.node(name), inputs)
            else:
                async with limiter:
                    outputs[name] = await run_node(plan.node(name), inputs)
        except Exception as exc:
            failures.append((trio.current_time(), len(failures), exc))
            nursery.cancel_scope.cancel()
            raise
        for succ in graph.successors(name):
            waiting[succ] -= 1
            if waiting[succ] == 0:
                nursery.start_soon(run, succ, nursery)

    try:
        async with trio.open_nursery() as nursery:
            for name in plan.generations[0]:
                nursery.start_soon(run, name, nursery)
    except BaseExceptionGroup as group:
        if not failures:
            raise
        first = min(failures, key=lambda f: (f[0], f[1]))[2]
        raise first from group
    return outputs
