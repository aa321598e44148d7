"""Durable workflow runs as data: a run's record, its ops' states, its events, and the rules
that move them (sans-IO; the store and the runner are elsewhere).

A run is ``queued`` until a slot is free (``workflows.max_concurrent_runs``), then
``running``, then ``succeeded``, ``failed`` or ``cancelled``. Each op is ``pending``, then
``running``, then ``succeeded``, ``failed``, ``skipped`` (a dependency failed, or the run's
``max_cost_usd`` was spent: ``reason`` says which) or ``cancelled``.

Everything a process needs to (re)start a run is in its :class:`RunSpec`: the workflow's own
text (a ready pipeline's text as it was when the run was submitted), the input, the variable
overrides and the caller's tenant and cache controls. A run resumed by another process starts
from the record: ops that succeeded are not run again, their outputs feed their dependents.

Times are Unix seconds (floats); the public shape shows them as RFC 3339 UTC.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "FINISHED",
    "OP_STATUSES",
    "RUN_STATUSES",
    "TERMINAL_EVENTS",
    "OpState",
    "RunChange",
    "RunEvent",
    "RunRecord",
    "RunSpec",
    "iso_time",
    "memo_key",
    "new_run_id",
]

RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
RUN_STATUSES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
OP_STATUSES: tuple[str, ...] = (
    "pending", "running", "succeeded", "failed", "skipped", "cancelled",
)
#: A run in one of these never changes again.
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
#: The events that end a run's event stream: the run's result, its error, its cancellation.
TERMINAL_EVENTS = frozenset({"result", "error", "cancelled"})


def new_run_id() -> str:
    """A fresh run id: ``run_`` and 24 hex digits (96 random bits).

    >>> rid = new_run_id(); rid.startswith("run_") and len(rid) == 28
    True
    """
    return "run_" + secrets.token_hex(12)


def iso_time(at: float | None) -> str | None:
    """Unix seconds as RFC 3339 UTC with a ``Z``, in whole seconds as the contract's examples
    write them (an op's ``ms`` has its duration to the tenth of a millisecond); ``None`` stays
    ``None``.

    >>> iso_time(0.0)
    '1970-01-01T00:00:00Z'
    >>> iso_time(1.75)
    '1970-01-01T00:00:01Z'
    """
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class OpState:
    """One op of a run, as recorded."""

    status: str = "pending"
    model: str | None = None
    tier: int | None = None
    cache: str | None = None  # "hit", "joined", "memo" or None (called upstream)
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    attempts: int = 0
    ms: float = 0.0
    output: str | None = None  # the op's answer text, once succeeded
    value: Any = None  # a ``json`` op's parsed answer
    error: str | None = None
    reason: str | None = None  # why skipped: "dependency_failed" or "budget_spent"
    started_at: float | None = None
    finished_at: float | None = None

    def public(self) -> dict[str, Any]:
        """The op in ``GET /v1/workflows/runs/{id}``: what is known so far, nothing empty."""
        out: dict[str, Any] = {"status": self.status}
        if self.model is not None:
            out.update(model=self.model, tier=self.tier)
        if self.status in ("succeeded", "failed") or self.cost_usd:
            out["cost_usd"] = round(self.cost_usd, 8)
        if self.cache is not None:
            out["cache"] = self.cache
        if self.attempts:
            out["attempts"] = self.attempts
        if self.input_tokens or self.output_tokens:
            out["tokens"] = {"input": self.input_tokens, "output": self.output_tokens}
        if self.output is not None:
            out["output"] = self.output
        if self.error is not None:
            out["error"] = self.error
        if self.reason is not None:
            out["reason"] = self.reason
        if self.started_at is not None:
            out["started_at"] = iso_time(self.started_at)
        if self.finished_at is not None:
            out["finished_at"] = iso_time(self.finished_at)
            out["ms"] = round(self.ms, 1)
        return out

    def to_json(self) -> dict[str, Any]:
        """Every field, for a store."""
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OpState:
        known = cls.__slots__
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True, slots=True)
class RunSpec:
    """What a run was asked to do; enough to start it again in another process."""

    workflow_text: str
    input: str
    variables: Mapping[str, Any] | None = None
    workflow_name: str | None = None  # a ready pipeline's name; None for a submitted text
    title: str | None = None  # the workflow's own ``name:``
    tenant: str = ""
    cache_read: bool = True
    cache_write: bool = True
    key_id: str | None = None  # the client key whose limits and budget its ops count against
    #: The workflow's ``(upstream, downstream)`` op pairs, so a reader (the dashboard's DAG)
    #: need not load ``workflow_text`` again; empty for runs recorded before it was kept.
    edges: tuple[tuple[str, str], ...] = ()
    #: The W3C ``traceparent`` of the request that submitted the run (when it was traced):
    #: every start of the run, a resume in another process included, is traced under it.
    traceparent: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "workflow_text": self.workflow_text, "input": self.input,
            "variables": dict(self.variables) if self.variables is not None else None,
            "workflow_name": self.workflow_name, "title": self.title, "tenant": self.tenant,
            "cache_read": self.cache_read, "cache_write": self.cache_write,
            "key_id": self.key_id, "edges": [list(edge) for edge in self.edges],
            "traceparent": self.traceparent,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunSpec:
        """A stored spec; fields this version does not know are left out (a newer process
        sharing the store may have recorded them).

        >>> RunSpec.from_json({"workflow_text": "ops: {}", "input": "x", "later": 1}).input
        'x'
        """
        known = cls.__slots__
        edges = tuple((up, down) for up, down in data.get("edges") or ())
        return cls(**{k: v for k, v in data.items() if k in known and k != "edges"},
                   edges=edges)


@dataclass(slots=True)
class RunRecord:
    """One run: its spec, where it stands, and what it produced."""

    run_id: str
    spec: RunSpec
    created_at: float
    status: str = "queued"
    ops: dict[str, OpState] = field(default_factory=dict)
    started_at: float | None = None
    finished_at: float | None = None
    cost_usd: float = 0.0
    final_output: str | None = None
    error: dict[str, Any] | None = None  # {"type", "code", "message", "op"?}
    cancelled_by: dict[str, Any] | None = None  # {"request_id", "reason"?, "at"}
    result: dict[str, Any] | None = None  # the synchronous answer's shape, once finished
    idempotency_key: str | None = None
    starts: int = 0  # how many times a process started it (1 + resumes)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def workflow(self) -> str | None:
        """The name the run is listed under: the ready pipeline's, else the workflow's own."""
        return self.spec.workflow_name or self.spec.title

    def public(self) -> dict[str, Any]:
        """``GET /v1/workflows/runs/{id}``."""
        return {
            "run_id": self.run_id,
            "workflow": self.workflow,
            "status": self.status,
            "created_at": iso_time(self.created_at),
            "started_at": iso_time(self.started_at),
            "finished_at": iso_time(self.finished_at),
            "ops": {name: op.public() for name, op in self.ops.items()},
            "edges": [list(edge) for edge in self.spec.edges],
            "cost_usd": round(self.cost_usd, 8),
            "final_output": self.final_output,
            "error": self.error,
            "cancelled_by": self.cancelled_by,
            "starts": self.starts,
        }

    def summary(self) -> dict[str, Any]:
        """A run in ``GET /v1/workflows/runs``: the record without op outputs."""
        out = self.public()
        out["ops"] = {name: op.status for name, op in self.ops.items()}
        out.pop("final_output")
        out.pop("edges")
        return out


@dataclass(frozen=True, slots=True)
class RunEvent:
    """One progress event of a run: ``seq`` counts from 1 and is the SSE event id."""

    seq: int
    name: str
    data: Mapping[str, Any]


@dataclass(slots=True)
class RunChange:
    """What one step of a run changes, written to the store at once (one transaction):
    the run's fields that are set here, the ops named here (whole states), and the event
    that tells watchers about it."""

    status: str | None = None
    ops: dict[str, OpState] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)  # RunRecord attribute -> value
    event: tuple[str, Mapping[str, Any]] | None = None

    def apply(self, record: RunRecord) -> None:
        """Make the same change to an in-memory record."""
        if self.status is not None:
            record.status = self.status
        record.ops.update(self.ops)
        for name, value in self.fields.items():
            setattr(record, name, value)


def memo_key(*, tenant: str, op_route: str, request: Mapping[str, Any]) -> str:
    """The key an op's result is memoized under: the tenant, how the op is routed (a pinned
    model or a tier, or ``auto``) and its rendered request, canonically serialised.

    >>> a = memo_key(tenant="t", op_route="tier:1", request={"m": [1], "t": 0})
    >>> a == memo_key(tenant="t", op_route="tier:1", request={"t": 0, "m": [1]})
    True
    >>> a != memo_key(tenant="u", op_route="tier:1", request={"m": [1], "t": 0})
    True
    """
    text = json.dumps([tenant, op_route, request], sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, default=str)
    return hashlib.blake2b(text.encode(), digest_size=20, person=b"llmr-memo").hexdigest()
