"""The workflow endpoints: ``POST /v1/workflows``, ``GET /v1/workflows`` and
``POST /v1/workflows/{name}``.

Requests are ``{"input": str, "workflow": <YAML text>, "variables": {...}, "dry_run": bool,
"stream": bool}`` (``workflow`` only for the first endpoint; ready pipelines come from the
``workflows.dir`` folder); any other field is a 400 naming it. ``input`` is required for a
run unless the workflow declares ``input: {optional: true}``. A dry run answers with the
plan: generations, critical path, the cost estimate and a text picture of the DAG.
``"stream": true`` answers with SSE events as ops start and finish, then ``event: result``
with the full result (or ``event: error``). Errors use the OpenAI error object.

Loading a submitted workflow (YAML, template compilation) and dry runs (template rendering)
are CPU work: they run in worker threads under the gateway's ``render_limiter``, never on
the event loop.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import trio
from quart import Response

from engine.core import (
    Config,
    RouteDecider,
    RunEvent,
    RunSpec,
    Workflow,
    WorkflowLimits,
    describe_plan,
    estimate_costs,
    load_workflow,
    resolve_variables,
)
from engine.errors import (
    Conflict,
    RequestInvalid,
    RouterError,
    WorkflowNotFound,
    did_you_mean,
    echo,
)
from engine.runtime import Gateway, RunContext
from engine.wire import OPENAI, ROUTER_CACHE, Anything, Fields, Flag, Text

from .relay import SSE_HEADERS

__all__ = ["RUN_NAMED", "SUBMIT", "WorkflowAPI", "WorkflowCall", "parse_call", "run_events_sse"]

log = logging.getLogger("llm_router")

_JSON = "application/json"
# Compiled workflows kept by their text: an application usually submits the same pipeline
# again and again, and compiling its templates costs milliseconds.
_COMPILED = 128
_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


@dataclass(frozen=True, slots=True)
class WorkflowCall:
    input: str | None  # None: the body sent none (a run then needs an optional input)
    variables: dict[str, Any] | None
    dry_run: bool
    stream: bool
    workflow: str | None
    run_async: bool = False  # "async": true (or the Prefer: respond-async header)


# The two request bodies, declared once: parse_call checks against them, /openapi.json shows
# them. router_cache is read with the Cache-Control header (api/http/app.py).
RUN_NAMED = Fields(
    {"input": Text(doc="Required unless the workflow declares input: {optional: true}."),
     "variables": Fields({}, values=Anything(), doc="Overrides of the workflow's variables."),
     "dry_run": Flag(doc="Answer with the plan and its cost estimate; run nothing."),
     "stream": Flag(doc="Answer with SSE events as ops start and finish."),
     "async": Flag(doc="Answer 202 at once with the run's id (as Prefer: respond-async); "
                       "not with stream or dry_run."),
     "router_cache": ROUTER_CACHE},
    closed=True,
)
SUBMIT = Fields({**RUN_NAMED.fields, "workflow": Text(doc="The workflow's YAML text.")},
                required=("workflow",), closed=True)


def parse_call(body: bytes, *, needs_workflow: bool) -> WorkflowCall:
    """Validate a workflow request body: its fields' types, and no field it does not know
    (a misspelt ``"variabels"`` would otherwise run with the defaults, and be paid for)."""
    try:
        # No body at all is no field at all: a ready pipeline may need none.
        data = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError:
        raise RequestInvalid("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise RequestInvalid("request body must be a JSON object")
    allowed = tuple((SUBMIT if needs_workflow else RUN_NAMED).fields)
    unknown = [key for key in data if key not in allowed]
    if unknown:
        named = ", ".join(f"{echo(key)}{did_you_mean(key, allowed)}" for key in unknown)
        where = ("" if needs_workflow else
                 " (a ready pipeline is run by its name; POST /v1/workflows takes a workflow)")
        raise RequestInvalid(
            f"unknown field{'s' if len(unknown) > 1 else ''} {named}{where}; a workflow request "
            f"takes {', '.join(allowed)}", param=str(unknown[0]),
        )
    text = data.get("input")
    if text is not None and not isinstance(text, str):
        raise RequestInvalid("input must be a string", param="input")
    variables = data.get("variables")
    if variables is not None and not isinstance(variables, dict):
        raise RequestInvalid("variables must be an object", param="variables")
    flags = {}
    for flag in ("dry_run", "stream", "async"):
        value = data.get(flag, False)
        if not isinstance(value, bool):
            raise RequestInvalid(f"{flag} must be true or false", param=flag)
        flags[flag] = value
    workflow = data.get("workflow")
    if needs_workflow and not isinstance(workflow, str):
        raise RequestInvalid("workflow must be the workflow's YAML text", param="workflow")
    if flags["async"] and (flags["stream"] or flags["dry_run"]):
        raise RequestInvalid(
            "async cannot be combined with stream or dry_run (an async run answers at once "
            "with its id; watch it at GET /v1/workflows/runs/{id}/events)", param="async")
    return WorkflowCall(text, variables, flags["dry_run"], flags["stream"], workflow,
                        flags["async"])


def _input_of(workflow: Workflow, call: WorkflowCall) -> str:
    """The run's input; a run without one is refused unless the workflow says its input is
    optional (``input: {optional: true}``): it would run, and be paid for, on nothing."""
    if call.input is not None:
        return call.input
    if call.dry_run or workflow.input_optional:
        return ""
    raise RequestInvalid(
        "input is required: this workflow does not declare its input optional (send "
        '"input": "..." in the body, or declare input: {optional: true} in the workflow)',
        param="input",
    )


class WorkflowAPI:
    def __init__(self, config: Config) -> None:
        self.config = config
        settings = config.workflows
        self.limits: WorkflowLimits = settings
        self.folder = config.path(settings.dir)
        self.templates = config.path(settings.templates_dir)
        self._ready: dict[Path, tuple[float, str, Workflow]] = {}
        self._compiled: OrderedDict[str, tuple[float, Workflow]] = OrderedDict()

    async def load_submitted(self, text: str, *, limiter: trio.CapacityLimiter) -> Workflow:
        """:meth:`load` in a worker thread (a large workflow takes seconds to compile), once
        per text while no template file changes: an application usually submits the same
        pipeline again and again (the last ``_COMPILED`` texts are kept)."""
        stamp = self._templates_stamp()
        cached = self._compiled.get(text)
        if cached is not None and cached[0] == stamp:
            self._compiled.move_to_end(text)
            return cached[1]
        workflow = await trio.to_thread.run_sync(self.load, text, limiter=limiter)
        self._compiled[text] = (stamp, workflow)
        if len(self._compiled) > _COMPILED:
            self._compiled.popitem(last=False)
        return workflow

    def load(self, text: str) -> Workflow:
        """A workflow's text, validated (its pinned models included): every problem found
        is in the one error raised."""
        templates = self.templates if self.templates.is_dir() else None
        return load_workflow(text, limits=self.limits, templates_dir=templates,
                             models=[m.name for m in self.config.models])

    def _templates_stamp(self) -> float:
        """Changes when a template file is added, removed or edited (what a compiled
        workflow may have included)."""
        try:
            with os.scandir(self.templates) as entries:
                return max((e.stat().st_mtime for e in entries), default=0.0)
        except OSError:
            return 0.0

    def ready(self) -> dict[str, Workflow]:
        """The ready pipelines by file stem, reloaded when a file changes; invalid ones are
        logged and left out."""
        return {name: workflow for name, (_, workflow) in self._ready_texts().items()}

    def _ready_texts(self) -> dict[str, tuple[str, Workflow]]:
        found: dict[str, tuple[str, Workflow]] = {}
        if not self.folder.is_dir():
            return found
        for path in sorted(self.folder.glob("*.yaml")):
            try:
                mtime = path.stat().st_mtime
                cached = self._ready.get(path)
                if cached is None or cached[0] != mtime:
                    text = path.read_text(encoding="utf-8")
                    cached = (mtime, text, self.load(text))
                    self._ready[path] = cached
            except (OSError, UnicodeDecodeError, RouterError) as exc:
                log.warning("workflow %s is not usable: %s", path.name, exc)
                continue
            found[path.stem] = (cached[1], cached[2])
        return found

    def named(self, name: str) -> tuple[str, Workflow]:
        """A ready pipeline's text (what a run records, to resume from) and workflow."""
        found = self._ready_texts().get(name) if set(name) <= _NAME_OK else None
        if found is None:
            raise WorkflowNotFound(
                f"no ready workflow named {echo(name)}; GET /v1/workflows lists them"
            )
        return found

    def listing(self) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "title": wf.name,
                "description": wf.description,
                "input": {"optional": wf.input_optional, "description": wf.input_description},
                "variables": {
                    var: {"default": default, "description": wf.variable_descriptions.get(var)}
                    for var, default in wf.variables.items()
                },
                "ops": list(wf.ops),
                "start_ops": list(wf.start_ops),
                "end_ops": list(wf.end_ops),
            }
            for name, wf in self.ready().items()
        ]

    def dry_run(self, workflow: Workflow, call: WorkflowCall, *,
                decide: RouteDecider) -> dict[str, Any]:
        """The plan and estimate, routed by ``decide`` (the gateway's routing policy: the
        thresholds in force and the trained router, as a run would be)."""
        variables = resolve_variables(workflow, call.variables)
        estimate = estimate_costs(workflow, self.config, input=call.input or "",
                                  variables=variables, decide=decide)
        return {"dry_run": True, **estimate, "picture": describe_plan(workflow, estimate=estimate)}

    async def respond(
        self, gateway: Gateway, workflow: Workflow, call: WorkflowCall, ctx: RunContext, *,
        text: str, name: str | None, prefer_async: bool, idempotency_key: str | None,
        traceparent: str | None = None,
    ) -> Response:
        """Answer a workflow request: a dry run's plan, or a durable run (``text`` is the
        workflow's YAML, recorded so another process can resume the run; ``traceparent``,
        the request's span, recorded so every start of the run is traced under it)
        answered with its id at once (async), its progress as SSE, or its result."""
        run_input = _input_of(workflow, call)
        if call.dry_run:
            plan = await trio.to_thread.run_sync(
                partial(self.dry_run, workflow, call, decide=gateway.policy.decide),
                limiter=gateway.render_limiter,
            )
            return Response(orjson.dumps(plan), content_type=_JSON)
        resolve_variables(workflow, call.variables)  # a bad override is a 400, not a run
        runs = gateway.workflow_runs()
        spec = RunSpec(workflow_text=text, input=run_input, variables=call.variables,
                       workflow_name=name, title=workflow.name, tenant=ctx.tenant,
                       cache_read=ctx.cache_read, cache_write=ctx.cache_write,
                       key_id=ctx.key.id if ctx.key is not None else None,
                       edges=workflow.edges, traceparent=traceparent)
        record, created = await runs.submit(spec, workflow, idempotency_key=idempotency_key)
        if not created and _differs(record.spec, spec):
            raise Conflict(
                "this Idempotency-Key was used for a different request (another workflow, "
                f"input or variables: run {record.run_id}); use a new key for a new run",
                param="Idempotency-Key",
            )
        headers = {"x-llm-router-run-id": record.run_id}
        if not created:
            headers["idempotent-replayed"] = "true"
        if call.run_async or prefer_async:
            status_url = f"/v1/workflows/runs/{record.run_id}"
            body = {"run_id": record.run_id, "status": record.status,
                    "status_url": status_url, "events_url": status_url + "/events"}
            headers |= {"location": status_url, "preference-applied": "respond-async"}
            return Response(orjson.dumps(body), status=202, content_type=_JSON,
                            headers=headers)
        if call.stream:
            events = runs.watch(record.run_id, tenant=ctx.tenant, after=0)
            return Response(run_events_sse(events), headers=headers | SSE_HEADERS)
        try:
            result = await runs.wait(record.run_id)
        except RouterError as err:
            # The run's error names the run, like its answer would; the op that failed was
            # routed, the run was not: no op's routing headers on the run's response.
            err.routed = None
            err.headers = {**(err.headers or {}), **headers}
            raise
        return Response(orjson.dumps(result), content_type=_JSON, headers=headers)



def _differs(stored: RunSpec, asked: RunSpec) -> bool:
    return (stored.workflow_text, stored.input, stored.variables, stored.workflow_name) != (
        asked.workflow_text, asked.input, asked.variables, asked.workflow_name)


async def run_events_sse(events: AsyncGenerator[RunEvent, None]
                         ) -> AsyncIterator[bytes]:
    """A run's events as SSE, each with its ``id:`` (what ``Last-Event-ID`` resumes
    from); ``result``, ``error`` or ``cancelled`` is the last. A client that leaves
    mid-stream closes ``events`` here and now, not when it is garbage collected."""
    try:
        async with aclosing(events) as stream:
            async for event in stream:
                yield (b"id: %d\nevent: %s\ndata: " % (event.seq, event.name.encode())
                       + orjson.dumps(event.data) + b"\n\n")
    except RouterError as err:
        yield b"event: error\ndata: " + OPENAI.render_error(err) + b"\n\n"
