"""The planner: requests and workflows become a networkx DAG of nodes. Sans-IO.

A chat completion is the one-node plan; a workflow is a plan of many. The executor runs any
plan the same way, so routing, caching, dedup and backend choice are decisions it makes per
node, never a separate code path.

networkx is used here and only here; its exceptions are translated to
:class:`~engine.errors.WorkflowInvalid` at this seam.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import networkx as nx

from engine.errors import WorkflowInvalid
from engine.frozen import frozen_constructor
from engine.messages import ChatRequest

__all__ = ["Node", "Plan", "build_plan", "longest_chain", "plan_chat", "weight_to_end"]


@dataclass(frozen=True, slots=True)
class Node:
    """One LLM call in a plan.

    ``request`` is the call when it is known up front (a chat completion). ``tier`` overrides
    the complexity score's choice of tier (a workflow op's ``tier``). ``op`` is the workflow
    op (:class:`engine.core.workflow.spec.Op`) whose request is rendered when its inputs are done.
    """

    name: str
    request: ChatRequest | None = None
    tier: int | None = None
    op: Any = None


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated DAG: ``graph`` holds the structure (node names and edges), ``nodes`` the
    :class:`Node` of each name, ``generations`` the names level by level (each level's nodes
    only depend on earlier levels).

    The nodes live beside the graph, not in it, and nothing here keeps one of networkx's cached
    views (``graph.nodes``, ``graph.in_degree``): each view refers back to its graph, and that
    reference cycle would carry the whole plan, requests included, into the cyclic garbage
    collector's older generations on every chat completion.
    """

    graph: nx.DiGraph
    generations: tuple[tuple[str, ...], ...]
    nodes: dict[str, Node]

    def node(self, name: str) -> Node:
        return self.nodes[name]

    def __len__(self) -> int:
        return len(self.nodes)


_new_node = frozen_constructor(Node)
_new_plan = frozen_constructor(Plan)


def build_plan(nodes: Iterable[Node], edges: Iterable[tuple[str, str]] = ()) -> Plan:
    """Build and validate a plan from nodes and ``(upstream, downstream)`` edges.

    Raises:
        WorkflowInvalid: an edge names an unknown node, or the graph has a cycle (the message
            shows the cycle's path).

    Examples
    --------
    >>> plan = build_plan([Node("a"), Node("b"), Node("c")], [("a", "b"), ("a", "c")])
    >>> plan.generations
    (('a',), ('b', 'c'))
    >>> build_plan([Node("a"), Node("b")], [("a", "b"), ("b", "a")])
    Traceback (most recent call last):
    ...
    engine.errors.WorkflowInvalid: cycle: a -> b -> a
    """
    graph = nx.DiGraph()
    by_name: dict[str, Node] = {}
    for node in nodes:
        if node.name in by_name:
            raise WorkflowInvalid(f"duplicate node {node.name!r}", op=node.name)
        by_name[node.name] = node
        graph.add_node(node.name)
    linked = False
    for upstream, downstream in edges:
        for name in (upstream, downstream):
            if name not in by_name:
                raise WorkflowInvalid(f"unknown node {name!r}", op=name)
        graph.add_edge(upstream, downstream)
        linked = True
    if not linked:  # one level (a chat completion): no sort to do
        return Plan(graph=graph, generations=(tuple(sorted(by_name)),) if by_name else (),
                    nodes=by_name)
    try:
        # On a copy: the sort caches graph views that refer back to their graph (see Plan).
        levels = nx.topological_generations(graph.copy())
        generations = tuple(tuple(sorted(level)) for level in levels)
    except nx.NetworkXUnfeasible:
        # Only now look for the cycle itself (find_cycle is far slower than the sort).
        cycle = nx.find_cycle(graph)
        path = [edge[0] for edge in cycle] + [cycle[0][0]]
        raise WorkflowInvalid("cycle: " + " -> ".join(path), op=path[0]) from None
    return Plan(graph=graph, generations=generations, nodes=by_name)


def plan_chat(request: ChatRequest) -> Plan:
    """The one-node plan of a chat completion.

    >>> from engine.messages import ChatRequest
    >>> plan_chat(ChatRequest(messages=())).generations
    (('chat',),)
    """
    return _new_plan(graph=_CHAT_GRAPH, generations=_CHAT_GENERATIONS,
                     nodes={"chat": _new_node("chat", request=request)})


# Every chat plan has the same structure: one node named "chat". Its graph is built once and
# frozen (networkx refuses changes to it), not built per request.
_CHAT_GRAPH: nx.DiGraph = nx.freeze(build_plan([Node("chat")]).graph)
_CHAT_GENERATIONS = (("chat",),)


class _End:
    """The sink every node feeds in :func:`longest_chain`'s graph: it turns node weights into
    edge weights, which is what ``dag_longest_path`` sums."""

    def __repr__(self) -> str:
        return "<end>"


def longest_chain(plan: Plan, weight: Callable[[str], float]) -> list[str]:
    """The chain of nodes, first to last, whose weights add up to the most (with latencies
    as weights: the critical path); ``[]`` for an empty plan.

    Examples
    --------
    >>> plan = build_plan([Node("a"), Node("b"), Node("c")], [("a", "b"), ("a", "c")])
    >>> longest_chain(plan, {"a": 1, "b": 5, "c": 2}.__getitem__)
    ['a', 'b']
    """
    if not len(plan):
        return []
    graph = nx.DiGraph()
    end = _End()
    for name in plan.graph:
        graph.add_edge(name, end, weight=weight(name))
    for upstream, successors in plan.graph.succ.items():
        for downstream in successors:
            graph.add_edge(upstream, downstream, weight=weight(upstream))
    return [name for name in nx.dag_longest_path(graph, weight="weight") if name is not end]


def weight_to_end(plan: Plan, weight: Callable[[str], float]) -> dict[str, float]:
    """Each node's weight plus the heaviest chain after it (with latencies as weights: the
    least time from starting the node to the end of the plan).

    Examples
    --------
    >>> plan = build_plan([Node("a"), Node("b"), Node("c")], [("a", "b"), ("a", "c")])
    >>> weight_to_end(plan, {"a": 1.0, "b": 5.0, "c": 2.0}.__getitem__)
    {'c': 2.0, 'b': 5.0, 'a': 6.0}
    """
    remaining: dict[str, float] = {}
    for name in (name for level in reversed(plan.generations) for name in reversed(level)):
        tail = max((remaining[s] for s in plan.graph.successors(name)), default=0.0)
        remaining[name] = weight(name) + tail
    return remaining
