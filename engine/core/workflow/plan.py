"""Planning a workflow: its DAG, critical path, and estimated cost and latency. Sans-IO.

:func:`plan_workflow` turns a validated :class:`~engine.core.workflow.spec.Workflow` into the same
:class:`~engine.core.planner.Plan` a chat completion becomes, so the executor runs both alike.
The rest answers "what will this cost, and what takes longest?" without calling a model
(the dry run, and the executor's choice of which ready op to start first):

* **Tokens.** An op's input is its rendered request, rendered with the dry run's input and
  a stand-in for each upstream answer as long as that answer may be; its output is its
  ``max_tokens`` (else :data:`DEFAULT_OUTPUT_TOKENS`). Estimating every answer at its cap
  errs on the expensive side, which is the safe side for a budget. A template that cannot
  render against stand-ins (it reads fields of a JSON answer) is counted from its source
  text plus everything it reads. All renders of one estimate share one
  ``workflows.render_timeout_sec``, and a template that hits a render limit is an error
  (:class:`~engine.errors.TemplateLimitExceeded`), unless the estimate is not ``strict``.
* **Price.** The cheapest model of the tier that serves the op (its tier, else the next
  one up, else the highest below: :meth:`BackendPool.serving_tier`), or the pinned model.
  The tier is the routing decision a run would get (:class:`RouteDecider`): a router passes
  its routing policy's ``decide``, the same rule with the same calibrated thresholds and
  trained router a run uses; without one, ``decide_route`` with the configured thresholds
  and the heuristic alone. (An op's real request reads its inputs' real answers, so an op
  downstream of others may still score differently from its stand-in estimate.)
* **Latency.** A fixed profile: :data:`FIRST_TOKEN_MS`, plus prefill at
  :data:`PREFILL_MS_PER_TOKEN` and decoding at :data:`DECODE_MS_PER_TOKEN`. Only the order
  of ops by latency matters to the critical path, and live latencies can be passed to
  :func:`critical_path` instead. A run orders its ready ops by :func:`estimate_latencies`,
  which counts every op from its templates' source (as one that cannot render against
  stand-ins): a run renders each prompt once, when the op starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Protocol

from engine.core.config import Config, ModelConfig
from engine.core.planner import Node, Plan, build_plan, longest_chain
from engine.core.pool import BackendPool
from engine.core.routing.decide import Route, decide_route
from engine.errors import TemplateLimitExceeded, WorkflowInvalid, did_you_mean, echo
from engine.messages import ChatRequest, estimate_tokens

from .render import render_request, resolve_variables
from .spec import Op, OpOutput, Workflow

__all__ = [
    "DECODE_MS_PER_TOKEN",
    "DEFAULT_OUTPUT_TOKENS",
    "FIRST_TOKEN_MS",
    "PREFILL_MS_PER_TOKEN",
    "RouteDecider",
    "check_models",
    "critical_path",
    "describe_plan",
    "estimate_costs",
    "estimate_latencies",
    "estimate_latency_ms",
    "plan_workflow",
]

#: Output tokens assumed for an op without ``max_tokens``.
DEFAULT_OUTPUT_TOKENS = 1024
#: Time to the first token of an answer.
FIRST_TOKEN_MS = 500.0
#: Prefill: 5,000 input tokens a second.
PREFILL_MS_PER_TOKEN = 0.2
#: Decoding: 50 output tokens a second.
DECODE_MS_PER_TOKEN = 20.0


class RouteDecider(Protocol):
    """The routing decision for an op's request (``tier``: the op's fixed tier), such as a
    running router's ``RoutingPolicy.decide``."""

    def __call__(self, request: ChatRequest, *, tier: int | None = None) -> Route: ...


def plan_workflow(workflow: Workflow) -> Plan:
    """The workflow's plan: one :class:`~engine.core.planner.Node` per op (``tier`` and ``op`` set,
    ``request`` rendered later), its edges, and its generations.

    Examples
    --------
    >>> from engine.core.workflow.spec import WorkflowLimits, load_workflow
    >>> wf = load_workflow(
    ...     "ops: {a: {prompt: A}, b: {prompt: B, input_ops: [a]}, c: {prompt: C, input_ops: [a]}}",
    ...     limits=WorkflowLimits(), templates_dir=None)
    >>> plan_workflow(wf).generations
    (('a',), ('b', 'c'))
    >>> plan_workflow(wf).node("b").op.inputs
    ('a',)
    """
    nodes = [Node(name, tier=op.tier, op=op) for name, op in workflow.ops.items()]
    return build_plan(nodes, workflow.edges)


def critical_path(
    plan_or_workflow: Plan | Workflow,
    latency_of: Callable[[str], float] | Mapping[str, float],
) -> list[str]:
    """The chain of ops with the largest total latency: the run can finish no sooner.

    Args:
        plan_or_workflow: a plan, or a workflow to plan.
        latency_of: each op's latency (any unit), by name: a mapping or a function.

    Examples
    --------
    >>> from engine.core.workflow.spec import WorkflowLimits, load_workflow
    >>> wf = load_workflow(
    ...     "ops: {a: {prompt: A}, b: {prompt: B, input_ops: [a]}, "
    ...     "c: {prompt: C, input_ops: [a]}, d: {prompt: D, input_ops: [b, c]}}",
    ...     limits=WorkflowLimits(), templates_dir=None)
    >>> critical_path(wf, {"a": 1, "b": 5, "c": 2, "d": 1})
    ['a', 'b', 'd']
    >>> critical_path(wf, {"a": 1, "b": 2, "c": 5, "d": 1})
    ['a', 'c', 'd']
    """
    plan = plan_or_workflow if isinstance(plan_or_workflow, Plan) else plan_workflow(
        plan_or_workflow
    )
    weight = latency_of.__getitem__ if isinstance(latency_of, Mapping) else latency_of
    return longest_chain(plan, weight)


def estimate_latency_ms(input_tokens: int, output_tokens: int) -> float:
    """One call's latency by the fixed profile of the module docstring.

    >>> estimate_latency_ms(1000, 100)
    2700.0
    """
    return FIRST_TOKEN_MS + PREFILL_MS_PER_TOKEN * input_tokens + (
        DECODE_MS_PER_TOKEN * output_tokens
    )


def check_models(workflow: Workflow, config: Config) -> None:
    """Check that every pinned model is configured, before anything runs.

    Raises:
        WorkflowInvalid: collecting each op that pins an unknown model.
    """
    known = [m.name for m in config.models]
    problems = [
        WorkflowInvalid(f"op {name!r}: model {echo(op.model)} is not configured"
                        f"{did_you_mean(op.model, known)} (configured: {', '.join(known)})",
                        op=name)
        for name, op in workflow.ops.items()
        if op.model is not None and op.model not in known
    ]
    if problems:
        raise WorkflowInvalid.collect(problems)


def _input_tokens(workflow: Workflow, op: Op, *, input: str, variables: Mapping[str, Any],
                  output_tokens: Mapping[str, int], deadline: float,
                  strict: bool) -> tuple[int, Any]:
    """Estimated input tokens of ``op`` and the request they come from (``None`` when the
    template could not render against stand-ins)."""
    stand_ins = {}
    for name in op.refs_ops | frozenset(op.inputs):  # only what it reads: 200 ops x 128 KB
        text = "x" * (4 * output_tokens[name])
        stand_ins[name] = OpOutput(text, text)
    try:
        request = render_request(workflow, op, input=input, variables=variables,
                                 outputs=stand_ins, deadline=deadline)
    except WorkflowInvalid as exc:
        if strict and isinstance(exc, TemplateLimitExceeded):
            raise
        return _source_tokens(op, input=input, output_tokens=output_tokens), None
    text = "".join(m.text for m in request.messages)
    return estimate_tokens(request.system or "") + estimate_tokens(text), request


def _source_tokens(op: Op, *, input: str, output_tokens: Mapping[str, int]) -> int:
    """Estimated input tokens of ``op`` without rendering it: its templates' source text plus
    everything it reads (the workflow input, upstream answers at their estimated length)."""
    reads = op.refs_ops | (frozenset(op.inputs) if op.appends_inputs else frozenset())
    reads_input = op.uses_input or (op.appends_inputs and not op.inputs)
    tokens = estimate_tokens(op.prompt.source)
    tokens += estimate_tokens(op.system.source) if op.system else 0
    tokens += estimate_tokens(input) if reads_input else 0
    return tokens + sum(output_tokens[n] for n in reads)


def estimate_latencies(workflow: Workflow, *, input: str = "") -> dict[str, float]:
    """Each op's estimated latency in ms, by the fixed profile of the module docstring, from
    what it reads without rendering anything (its templates' source, the input, upstream
    answers at their ``max_tokens``): cheap enough to order a run's ready ops by.

    Examples
    --------
    >>> from engine.core.workflow.spec import WorkflowLimits, load_workflow
    >>> wf = load_workflow("ops: {a: {prompt: abcdefgh, max_tokens: 10}}",
    ...                    limits=WorkflowLimits(), templates_dir=None)
    >>> estimate_latencies(wf, input="1234")  # (2 + 1) tokens in, 10 out
    {'a': 700.6}
    """
    outputs = {n: op.max_tokens or DEFAULT_OUTPUT_TOKENS for n, op in workflow.ops.items()}
    return {
        name: estimate_latency_ms(_source_tokens(op, input=input, output_tokens=outputs),
                                  outputs[name])
        for name, op in workflow.ops.items()
    }


def _route(op: Op, request: ChatRequest | None, config: Config, pool: BackendPool,
           decide: RouteDecider) -> list[ModelConfig]:
    """The models that may serve ``op``: the pinned one, or the serving tier's."""
    if op.model is not None:
        pinned = config.model_named(op.model)
        assert pinned is not None  # check_models ran
        return [pinned]
    # A template that cannot render against stand-ins: its tier, else the cheapest.
    tier = (op.tier or 1) if request is None else decide(request, tier=op.tier).tier
    serving = pool.serving_tier(tier)
    return [m for m in config.models if m.tier == serving]


def estimate_costs(workflow: Workflow, config: Config, *, input: str = "",
                   variables: Mapping[str, Any] | None = None,
                   strict: bool = True, decide: RouteDecider | None = None) -> dict[str, Any]:
    """Estimated tokens, cost and latency per op and in total (the dry run).

    It renders every op's templates (CPU work of up to ``workflows.render_timeout_sec``): a
    server runs it in a worker thread.

    Args:
        workflow: the loaded workflow.
        config: the models and their prices.
        input: the workflow input to estimate with (``""``: prompts alone).
        variables: overrides, as for :func:`~engine.workflow_render.resolve_variables`.
        strict: a template hitting a render limit is an error (else it is estimated from
            its source, as one that cannot render against stand-ins: a run's scheduling
            estimate, where the op's own render reports it).
        decide: the routing decision (the module docstring); default: the configured
            thresholds and the heuristic alone.

    Returns:
        A JSON-ready dict: ``ops`` maps each op to ``model``, ``tier``, ``input_tokens``,
        ``output_tokens``, ``cost_usd`` and ``latency_ms``; then ``generations``,
        ``critical_path``, ``critical_path_ms``, ``input_tokens``, ``output_tokens`` and
        ``total_cost_usd``.

    Raises:
        TemplateLimitExceeded: with ``strict``, a template hit a render limit.
        WorkflowInvalid: a pinned model is not configured, or a variable override is bad.

    Examples
    --------
    >>> from engine.core.config import Config, ModelConfig
    >>> from engine.core.workflow.spec import WorkflowLimits, load_workflow
    >>> config = Config(models=(
    ...     ModelConfig(name="s", provider="openai", model="s", tier=1,
    ...                 cost_per_1k_in=1.0, cost_per_1k_out=2.0),))
    >>> wf = load_workflow("ops: {a: {prompt: abcdefgh, max_tokens: 500}}",
    ...                    limits=WorkflowLimits(), templates_dir=None)
    >>> est = estimate_costs(wf, config)
    >>> est["ops"]["a"]["input_tokens"], est["ops"]["a"]["output_tokens"], est["total_cost_usd"]
    (2, 500, 1.002)
    """
    check_models(workflow, config)
    values = resolve_variables(workflow, variables)
    route: RouteDecider = decide or partial(decide_route, config=config)
    pool = BackendPool(config.models)
    outputs = {n: op.max_tokens or DEFAULT_OUTPUT_TOKENS for n, op in workflow.ops.items()}
    deadline = time.monotonic() + config.workflows.render_timeout_sec
    per_op: dict[str, dict[str, Any]] = {}
    for name, op in workflow.ops.items():
        tokens_in, request = _input_tokens(workflow, op, input=input, variables=values,
                                           output_tokens=outputs, deadline=deadline,
                                           strict=strict)
        tokens_out = outputs[name]

        def price(model: ModelConfig, i: int = tokens_in, o: int = tokens_out) -> float:
            return (i * model.cost_per_1k_in + o * model.cost_per_1k_out) / 1000

        model = min(_route(op, request, config, pool, route), key=price)
        per_op[name] = {
            "model": model.name,
            "tier": model.tier,
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "cost_usd": round(price(model), 6),
            "latency_ms": round(estimate_latency_ms(tokens_in, tokens_out), 1),
        }
    plan = plan_workflow(workflow)
    path = critical_path(plan, lambda n: per_op[n]["latency_ms"])
    return {
        "ops": per_op,
        "generations": [list(level) for level in plan.generations],
        "critical_path": path,
        "critical_path_ms": round(sum(per_op[n]["latency_ms"] for n in path), 1),
        "input_tokens": sum(e["input_tokens"] for e in per_op.values()),
        "output_tokens": sum(e["output_tokens"] for e in per_op.values()),
        "total_cost_usd": round(sum(e["cost_usd"] for e in per_op.values()), 6),
    }


def describe_plan(workflow: Workflow, *, estimate: Mapping[str, Any] | None = None) -> str:
    """A text picture of the plan for the command line: one level per generation, each op
    with the ops it waits for (``<-``), ``*`` on the critical path, and with ``estimate``
    (from :func:`estimate_costs`) each op's model, tokens, cost and latency.

    Without an estimate the critical path is the longest chain of ops.

    Examples
    --------
    >>> from engine.core.workflow.spec import WorkflowLimits, load_workflow
    >>> wf = load_workflow(
    ...     "name: fan\\nops: {a: {prompt: A}, b: {prompt: B, input_ops: [a]}, "
    ...     "c: {prompt: C, input_ops: [a]}, d: {prompt: D, input_ops: [b, c]}}",
    ...     limits=WorkflowLimits(), templates_dir=None)
    >>> print(describe_plan(wf))
    fan: 4 ops in 3 levels (* = critical path)
    level 1
      * a
    level 2
      * b  <- a
        c  <- a
    level 3
      * d  <- b, c
    critical path: a -> b -> d
    """
    plan = plan_workflow(workflow)
    if estimate is not None:
        path = list(estimate["critical_path"])
    else:
        path = critical_path(plan, lambda _: 1.0)
    on_path = set(path)
    rows: list[list[str]] = []  # one per op, then a level's header as a one-cell row
    for depth, level in enumerate(plan.generations, 1):
        rows.append([f"level {depth}"])
        for name in level:
            inputs = workflow.ops[name].inputs
            row = [f"  {'*' if name in on_path else ' '} {name}",
                   f"<- {', '.join(inputs)}" if inputs else ""]
            if estimate is not None:
                e = estimate["ops"][name]
                row += [f"{e['model']} (tier {e['tier']})", f"~{e['input_tokens']:,} in",
                        f"~{e['output_tokens']:,} out", f"${e['cost_usd']:.4f}",
                        f"~{e['latency_ms'] / 1000:.1f} s"]
            rows.append(row)
    widths = [max(len(r[i]) for r in rows if len(r) > 1) for i in range(len(rows[-1]))]
    numeric = {3, 4, 5, 6}  # right-aligned columns of the estimate
    title = workflow.name or "workflow"
    lines = [f"{title}: {len(plan)} ops in {len(plan.generations)} levels (* = critical path)"]
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ] if len(row) > 1 else row
        lines.append("  ".join(cells).rstrip())
    summary = f"critical path: {' -> '.join(path)}"
    if estimate is not None:
        summary += f" (~{estimate['critical_path_ms'] / 1000:.1f} s)"
    lines.append(summary)
    if estimate is not None:
        lines.append(
            f"estimated cost: ${estimate['total_cost_usd']:.4f} "
            f"(~{estimate['input_tokens']:,} tokens in, ~{estimate['output_tokens']:,} out; "
            "every answer at its max_tokens)"
        )
    return "\n".join(lines)
