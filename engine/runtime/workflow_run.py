"""Running a workflow: its ops as nodes of the executor, each through the node decisions.

Every op goes through :meth:`~engine.node.NodeRunner.run` like a chat completion (cache, dedup,
routing, backend choice, failover), so identical ops of concurrent runs execute once and each
op goes to the cheapest model of its tier. On top of that, per run:

* the prompt is rendered from the workflow input, variables and finished ops' outputs the
  moment the op's inputs are done (``engine.workflow_render.render_request``), in a worker
  thread under ``render_limiter`` (a render is CPU work of up to
  ``workflows.render_timeout_sec``: on the event loop it would stall every other request);
* ready ops on the critical path go first (priority = estimated latency of the longest chain
  from the op to the end), at most ``max_concurrency`` at once;
* an op whose input op ran on a backend of the same tier prefers that backend (its prompt /
  KV cache is warm);
* ``timeout_sec`` bounds each attempt and ``retries`` retries retryable failures;
* ``max_cost_usd`` stops scheduling new ops once the run has spent it (they are reported as
  ``not_run``);
* ``on_error``: ``fail_fast`` cancels the rest and raises the failed op's error (naming it);
  ``continue`` skips the failed op's dependents and reports them.

Progress goes to ``emit(event, data)`` as ops start and finish, for the SSE API, the CLI and
the run store; the run waits for each ``emit`` (a durable run's store write) before it moves
on. A run resumed after a restart passes the ops that had succeeded as ``completed``: they are
not run again, their outputs feed their dependents. With a ``memo`` (a workflow's
``memoize: true``), a deterministic op (``temperature: 0``) whose rendered request an earlier
run completed is answered from it, at no cost. An answer over ``max_output_bytes`` fails its
op (:class:`~engine.errors.OutputTooLarge`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import trio

from engine.core.planner import Node, weight_to_end
from engine.core.workflow.plan import estimate_latencies, plan_workflow
from engine.core.workflow.render import parse_output, render_request, resolve_variables
from engine.core.workflow.spec import Op, OpOutput, Workflow
from engine.errors import (
    DeadlineExceeded,
    NoBackendAvailable,
    OutputTooLarge,
    RateLimited,
    RouterError,
    UpstreamError,
)
from engine.messages import ChatRequest

from .executor import execute_plan
from .node import Deadline, NodeResult, NodeRunner, RunContext
from .tracing import op_span, served_attributes

__all__ = ["Completed", "Emit", "Memoizer", "OpRecord", "Recalled", "run_workflow"]

Emit = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclass(slots=True)
class OpRecord:
    status: str = "pending"
    model: str | None = None
    tier: int | None = None
    cache: str | None = None
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    ms: float = 0.0
    attempts: int = 0
    error: str | None = None
    started: float = field(default=0.0, repr=False)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status, "model": self.model, "tier": self.tier, "cache": self.cache,
            "cost_usd": round(self.cost_usd, 8),
            "tokens": {"input": self.input_tokens, "output": self.output_tokens},
            "ms": round(self.ms, 1), "attempts": self.attempts,
        }
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(frozen=True, slots=True)
class Completed:
    """An op that succeeded in an earlier start of the same run."""

    output: OpOutput
    record: OpRecord


@dataclass(frozen=True, slots=True)
class Recalled:
    """A memoized answer to an op's exact request."""

    text: str
    model: str
    tier: int
    input_tokens: int
    output_tokens: int


class Memoizer(Protocol):
    async def recall(self, op: Op, request: ChatRequest) -> Recalled | None: ...

    async def keep(self, op: Op, request: ChatRequest, done: NodeResult) -> None: ...


def deterministic(request: ChatRequest) -> bool:
    """Whether the same request should get the same answer: ``temperature: 0``, one choice.

    >>> deterministic(ChatRequest(messages=(), temperature=0.0))
    True
    >>> deterministic(ChatRequest(messages=()))
    False
    """
    return request.temperature == 0 and request.n == 1


def _retryable(error: RouterError) -> bool:
    if isinstance(error, UpstreamError):
        return error.retryable
    return isinstance(error, NoBackendAvailable | RateLimited | DeadlineExceeded)


def _naming(error: RouterError, op: str) -> RouterError:
    """A copy of ``error`` whose message names the op (the original may be shared by every
    waiter of a deduplicated call)."""
    named = copy.copy(error)
    named.message = f"op {op!r} failed: {error.message}"
    named.args = (named.message,)
    named.param = op
    return named


async def run_workflow(
    workflow: Workflow,
    *,
    runner: NodeRunner,
    ctx: RunContext,
    input: str,
    variables: Mapping[str, Any] | None = None,
    max_concurrency: int,
    emit: Emit | None = None,
    render_limiter: trio.CapacityLimiter | None = None,
    completed: Mapping[str, Completed] | None = None,
    memo: Memoizer | None = None,
    max_output_bytes: int | None = None,
) -> dict[str, Any]:
    """Run ``workflow`` and return the documented response shape (docs/workflows.md) plus
    per-op details.

    ``render_limiter`` bounds the worker threads rendering prompts (trio's default limiter
    if ``None``); a server passes a small one shared by all runs. ``completed``, ``memo`` and
    ``max_output_bytes``: see the module docstring.

    Raises:
        WorkflowInvalid: a variable override is not declared.
        RouterError: with ``on_error: fail_fast``, the failed op's error, naming the op.
    """
    values = resolve_variables(workflow, variables)
    plan = plan_workflow(workflow)
    # Estimated without rendering: each prompt is rendered once, when its op starts.
    latency_ms = estimate_latencies(workflow, input=input)
    priority = weight_to_end(plan, latency_ms.__getitem__)
    records = {name: OpRecord() for name in workflow.ops}
    outputs: dict[str, OpOutput] = {}
    spent = 0.0
    for name, earlier in (completed or {}).items():
        records[name] = dataclasses.replace(earlier.record)
        outputs[name] = earlier.output
        spent += earlier.record.cost_usd
    started = trio.current_time()

    async def send(event: str, data: dict[str, Any]) -> None:
        if emit is not None:
            await emit(event, data)

    def admit(name: str) -> bool:
        return workflow.max_cost_usd is None or spent < workflow.max_cost_usd

    async def run_op(node: Node, inputs: Mapping[str, Any]) -> OpOutput:
        nonlocal spent
        if completed and node.name in completed:
            return outputs[node.name]
        op = workflow.ops[node.name]
        record = records[node.name]
        record.status = "running"
        record.started = trio.current_time()
        # A same-tier chain keeps its predecessor's backend (the pool honours it only
        # within the op's own tier and only if that backend is as healthy as the best), so
        # of several inputs the one served on the op's tier is the one to follow.
        served = [records[i] for i in op.inputs if records[i].model]
        same_tier = [r for r in served if r.tier == op.tier]
        prefer = next((r.model for r in same_tier + served), None)
        await send("op_started", {"op": node.name, "tier": op.tier, "model": op.model})
        try:
            request = await trio.to_thread.run_sync(
                partial(render_request, workflow, op, input=input, variables=values,
                        outputs=dict(outputs)),
                limiter=render_limiter,
            )
            recalled = None
            if memo is not None and deterministic(request):
                recalled = await memo.recall(op, request)
            if recalled is not None:
                output = parse_output(op, recalled.text)
                record.attempts = 0
                record.model, record.tier, record.cache = (recalled.model, recalled.tier,
                                                           "memo")
                record.input_tokens = recalled.input_tokens
                record.output_tokens = recalled.output_tokens
            else:
                with op_span(f"workflow op {node.name}",
                             {"llm_router.op": node.name, "llm_router.workflow": workflow.name,
                              "llm_router.tier_asked": op.tier,
                              "llm_router.model_asked": op.model}) as span:
                    done, output = await _attempts(runner, op, node, request, ctx, prefer,
                                                   record)
                    if span is not None:
                        span.set_attributes(served_attributes(done.served, record.attempts))
                if max_output_bytes is not None:
                    _check_size(done.result.text, max_output_bytes)
                spent += done.cost_usd
                usage = done.result.usage
                record.model, record.tier, record.cache = (done.served.model, done.served.tier,
                                                           done.served.cache)
                record.cost_usd = done.cost_usd
                record.input_tokens = usage.input_tokens
                record.output_tokens = usage.output_tokens
                if memo is not None and deterministic(request):
                    await memo.keep(op, request, done)
        except RouterError as exc:
            record.status = "failed"
            record.ms = (trio.current_time() - record.started) * 1000
            named = _naming(exc, node.name)
            record.error = named.message
            await send("op_failed", {"op": node.name, "error": named.message})
            raise named from exc
        outputs[node.name] = output
        record.status = "done"
        record.ms = (trio.current_time() - record.started) * 1000
        finished = {"op": node.name, "output": output.text} | record.summary()
        if op.json:
            finished["value"] = output.value
        await send("op_finished", finished)
        return output

    outcome = await execute_plan(
        plan, run_op, max_concurrency=workflow.max_concurrency or max_concurrency,
        priority=priority, admit=admit, on_error=workflow.on_error,
    )
    for name, status in outcome.status.items():
        if records[name].status in ("pending", "running"):
            records[name].status = status
    if outcome.first_failure is not None:
        raise outcome.errors[outcome.first_failure]
    for name, record in records.items():
        if record.status in ("skipped", "not_run"):
            await send("op_skipped", {"op": name, "reason": record.status})

    done_ends = [n for n in workflow.end_ops if n in outputs]
    if len(workflow.end_ops) == 1:
        final = outputs[done_ends[0]].text if done_ends else None
    else:
        final = "\n\n".join(f"## {n}\n{outputs[n].text}" for n in done_ends) or None
    statuses = {r.status for r in records.values()}
    return {
        "outputs": {n: o.text for n, o in outputs.items()},
        "routing": {n: r.model for n, r in records.items() if r.model is not None},
        "costs": {n: round(r.cost_usd, 8) for n, r in records.items() if r.status == "done"},
        "total_ms": round((trio.current_time() - started) * 1000),
        "final_output": final,
        "status": "completed" if statuses == {"done"} else "partial",
        "total_cost_usd": round(spent, 8),
        "ops": {n: r.summary() for n, r in records.items()},
        "not_run": [n for n, r in records.items() if r.status == "not_run"],
        "skipped": [n for n, r in records.items() if r.status == "skipped"],
        "failed": {n: r.error for n, r in records.items() if r.status == "failed"},
        "values": {n: o.value for n, o in outputs.items() if workflow.ops[n].json},
    }


def _check_size(text: str, limit: int) -> None:
    if len(text) * 4 > limit and len(text.encode()) > limit:
        raise OutputTooLarge(
            f"the answer is {len(text.encode()):,} bytes, over workflows.max_output_bytes "
            f"({limit:,}): a run keeps every answer in its record"
        )


async def _attempts(
    runner: NodeRunner, op: Op, node: Node, request: ChatRequest, ctx: RunContext,
    prefer: str | None, record: OpRecord,
) -> tuple[NodeResult, OpOutput]:
    """Run one op: ``timeout_sec`` per attempt, up to ``retries`` retries of retryable
    failures (an unparsable answer of a ``json`` op included: it is retried past the cache)."""
    deadline = None if op.timeout_sec is None else Deadline(op.timeout_sec, "timeout_sec")
    for attempt in range(op.retries + 1):
        record.attempts = attempt + 1
        try:
            done = await runner.run(node, ctx=ctx, request=request, prefer=prefer,
                                    deadline=deadline)
            return done, parse_output(op, done.result.text)
        except RouterError as exc:
            error = exc
        if attempt == op.retries or not _retryable(error):
            raise error
        ctx = dataclasses.replace(ctx, cache_read=False)
    raise AssertionError("unreachable")
