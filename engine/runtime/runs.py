"""Durable workflow runs: submitted, queued, run, watched, cancelled and resumed.

:class:`Runs` is one process's share of the runs in a :class:`~engine.stores.RunStore`:

* **Submit.** A run is recorded (``queued``) before anything else happens, leased to this
  process, and started in the background nursery; the caller gets its id at once and may wait
  for it (the synchronous and streaming API forms) or not (``Prefer: respond-async``). A
  client leaving does not stop a run. The same tenant's ``Idempotency-Key`` gives the same run.
* **Queue.** At most ``workflows.max_concurrent_runs`` run at once; the rest stay ``queued``
  in submission order (trio's semaphores are fair).
* **Record.** Every step is written to the store before the run moves on (one transaction
  each: the op's state and the event telling watchers): an op's answer is durable before any
  op that reads it starts.
* **Watch.** :meth:`Runs.watch` yields a run's events from any point (the SSE ``id`` is the
  event's ``seq``): what happened so far from the store, then live ones, until the run ends.
* **Cancel.** The run's cancel scope is cancelled: running ops' upstream calls are closed,
  pending ops never start. A run held by another process is cancelled by that process, which
  polls for requests; an orphan is cancelled by whoever claims it.
* **Resume.** Leases are renewed every ``LEASE_SEC / 3``. A run whose lease lapsed, or whose
  owner on this host is no longer alive (a SIGKILL), is claimed by a process sharing the store
  and resumed: ops that had succeeded are not called again; one that was running (a stream
  cut half-way included) runs again whole. A clean shutdown gives its leases up, so the next
  process resumes at once.
* **Expire.** Finished runs and memoized answers go after ``workflows.retention_days``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import trio

from engine.core.config import Config
from engine.core.workflow.runs import (
    FINISHED,
    TERMINAL_EVENTS,
    OpState,
    RunChange,
    RunEvent,
    RunRecord,
    RunSpec,
    memo_key,
    new_run_id,
)
from engine.core.workflow.spec import Op, OpOutput, Workflow, load_workflow
from engine.errors import Conflict, NotFound, RouterError, RunCancelled, StoreUnavailable
from engine.messages import ChatRequest
from engine.stores.runs import Memo, RunStore
from engine.wire import OPENAI

from .node import NodeResult, NodeRunner, RunContext
from .tracing import end_run_span, run_span
from .workflow_run import Completed, OpRecord, Recalled, run_workflow

__all__ = ["LEASE_SEC", "Runs", "owner_alive", "process_name"]

log = logging.getLogger("llm_router")

#: A lease lasts this long unless renewed; a crashed process's runs on another host are
#: resumed within it.
LEASE_SEC = 15.0
_POLL_SEC = 0.5  # watchers of another process's run, and cancel requests, are polled
_SWEEP_SEC = 3600.0
_EVENTS_PAGE = 200


def process_name() -> str:
    """A new name for this process, ``host:pid:token`` (what :func:`owner_alive` reads)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def owner_alive(owner: str, *, me: str) -> bool:
    """Whether the process named ``owner`` (``host:pid:token``) may still be running: one on
    this host is checked; one elsewhere is assumed alive (its lease tells).

    >>> me = "h:10:aa"
    >>> owner_alive("h:10:aa", me=me), owner_alive("h:10:bb", me=me), owner_alive("x:1:c", me=me)
    (True, False, True)
    """
    host, _, rest = owner.partition(":")
    pid_text, _, _ = rest.partition(":")
    my_host, _, my_rest = me.partition(":")
    my_pid, _, _ = my_rest.partition(":")
    if host != my_host or not (pid_text.isascii() and pid_text.isdigit()):
        return True
    if pid_text == my_pid:
        return owner == me  # the same pid with another token: an earlier life of this pid
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(eq=False)
class _Live:
    """A run this process is executing (or has queued)."""

    record: RunRecord
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    changed: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)
    error: RouterError | None = None  # what a synchronous caller is given
    cancel_by: Mapping[str, Any] | None = None
    # Held from reading the record to committing a change made from it: ops finishing
    # together each add their cost to the run's total, none to a total the other replaced.
    writing: trio.Lock = field(default_factory=trio.Lock)

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


class Runs:
    """This process's runs. Open with :meth:`start` in a nursery; :meth:`close` on the way
    out (after the nursery running the runs is cancelled)."""

    def __init__(self, *, config: Config, store: RunStore, runner: NodeRunner,
                 nursery: trio.Nursery, render_limiter: trio.CapacityLimiter,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store
        self.owner = process_name()
        self._runner = runner
        self._nursery = nursery
        self._render_limiter = render_limiter
        self._clock = clock
        self._slots = trio.Semaphore(config.workflows.max_concurrent_runs)
        self._live: dict[str, _Live] = {}
        self._stalled: set[str] = set()  # runs stopped by a store failure, to resume
        # Set when a run starts here: ``maintain`` then cuts its idle wait short, so the run's
        # cancel requests (from other processes) are polled every second from its start.
        self._launched = trio.Event()
        templates = config.path(config.workflows.templates_dir)
        self._templates = templates if templates.is_dir() else None

    def counts(self) -> tuple[int, int]:
        """How many of this process's runs are queued, and how many running, now."""
        statuses = [live.record.status for live in self._live.values()]
        return statuses.count("queued"), statuses.count("running")

    # ---- submitting and waiting ------------------------------------------------------------

    async def submit(self, spec: RunSpec, workflow: Workflow, *,
                     idempotency_key: str | None = None) -> tuple[RunRecord, bool]:
        """Record a run and start it; ``(record, True)``. With an ``idempotency_key`` the
        tenant already used, nothing starts: ``(that run, False)``.

        Raises:
            StoreUnavailable: the run could not be recorded (nothing was started).
        """
        record = RunRecord(
            run_id=new_run_id(), spec=spec, created_at=self._clock(),
            ops={name: OpState() for name in workflow.ops}, idempotency_key=idempotency_key,
        )
        stored, created = await self.store.create(record, owner=self.owner,
                                                  lease_sec=LEASE_SEC, now=self._clock())
        if created:
            self._launch(stored, workflow, completed={})
        return stored, created

    async def wait(self, run_id: str) -> dict[str, Any]:
        """The result of a run, once it ends (the synchronous form's answer).

        Raises:
            RouterError: the run failed (its error) or was cancelled.
        """
        live = self._live.get(run_id)
        if live is not None:
            await live.done.wait()
            if live.error is not None:
                raise live.error
            if live.record.result is None:
                raise StoreUnavailable(
                    f"the router is shutting down; workflow run {run_id} resumes when a "
                    f"router starts on the same store (GET /v1/workflows/runs/{run_id})"
                )
            return live.record.result
        # Not ours (an idempotent replay of a run another process holds): follow its events.
        async for _ in self.watch(run_id, tenant=None, after=0):
            pass
        record = await self.get(run_id, tenant=None)
        if record.result is not None:
            return record.result
        raise _error_of(record)

    async def get(self, run_id: str, *, tenant: str | None) -> RunRecord:
        """The run as it stands; live runs of this process from memory.

        Raises:
            NotFound: no such run for this tenant.
        """
        live = self._live.get(run_id)
        if live is not None and (tenant is None or live.record.spec.tenant == tenant):
            return live.record
        record = await self.store.get(run_id, tenant=tenant)
        if record is None:
            raise NotFound(f"no workflow run {run_id!r}; GET /v1/workflows/runs lists yours")
        return record

    async def list(self, *, tenant: str | None, status: str | None,
                   limit: int) -> Sequence[RunRecord]:
        """The tenant's most recent runs, newest first."""
        return await self.store.list(tenant=tenant, status=status, limit=limit)

    async def watch(self, run_id: str, *, tenant: str | None,
                    after: int) -> AsyncGenerator[RunEvent, None]:
        """The run's events after ``after`` (its ``seq``), then live ones, until it ends.

        Raises:
            NotFound: no such run for this tenant.
        """
        await self.get(run_id, tenant=tenant)
        while True:
            live = self._live.get(run_id)
            changed = live.changed if live is not None else None
            events = await self.store.events(run_id, after=after, limit=_EVENTS_PAGE)
            for event in events:
                after = event.seq
                yield event
                if event.name in TERMINAL_EVENTS:
                    return
            if len(events) == _EVENTS_PAGE:
                continue
            if changed is not None:
                with trio.move_on_after(_POLL_SEC * 4):
                    await changed.wait()
            else:
                record = await self.store.get(run_id, tenant=None)
                if record is None or (record.finished and not await self.store.events(
                        run_id, after=after, limit=1)):
                    return
                await trio.sleep(_POLL_SEC)

    async def cancel(self, run_id: str, *, tenant: str | None,
                     by: Mapping[str, Any]) -> RunRecord:
        """Cancel a run; the record once this process has cancelled it (a run another
        process holds is cancelled by it within about a second).

        Raises:
            NotFound: no such run for this tenant.
            Conflict: the run had already finished.
        """
        record = await self.store.request_cancel(run_id, tenant=tenant, by=by)
        if record is None:
            raise NotFound(f"no workflow run {run_id!r}; GET /v1/workflows/runs lists yours")
        if record.finished:
            raise Conflict(f"workflow run {run_id} has already {record.status}; only a queued "
                           "or running run can be cancelled")
        live = self._live.get(run_id)
        if live is None:
            return record
        self._cancel_live(live, record.cancelled_by or by)
        with trio.move_on_after(10):
            await live.done.wait()
        return live.record

    def _cancel_live(self, live: _Live, by: Mapping[str, Any]) -> None:
        if live.cancel_by is None:
            live.cancel_by = dict(by)
            live.scope.cancel()

    # ---- running --------------------------------------------------------------------------

    def _launch(self, record: RunRecord, workflow: Workflow,
                completed: Mapping[str, Completed]) -> _Live:
        live = _Live(record)
        self._live[record.run_id] = live
        self._launched.set()
        self._nursery.start_soon(self._drive, live, workflow, completed)
        return live

    async def _drive(self, live: _Live, workflow: Workflow,
                     completed: Mapping[str, Completed]) -> None:
        """One start of a run, traced as a child of the request that submitted it (also
        when resumed by another process: ``engine.runtime.tracing``)."""
        record = live.record
        attributes = {"llm_router.run_id": record.run_id, "llm_router.workflow": record.workflow,
                      "llm_router.run.start": record.starts + 1}
        with run_span("workflow run", attributes, traceparent=record.spec.traceparent) as span:
            try:
                await self._run_once(live, workflow, completed)
            finally:
                if span is not None:
                    end_run_span(span, status=record.status, cost_usd=record.cost_usd,
                                 error=(record.error or {}).get("message"))

    async def _run_once(self, live: _Live, workflow: Workflow,
                        completed: Mapping[str, Completed]) -> None:
        record = live.record
        try:
            with live.scope:
                async with self._slots:
                    await self._commit(live, RunChange(
                        status="running",
                        fields={"started_at": record.started_at or self._clock(),
                                "starts": record.starts + 1},
                        event=("run_started", {"run_id": record.run_id,
                                               "starts": record.starts + 1,
                                               "completed_ops": sorted(completed)}),
                    ))
                    await self._execute(live, workflow, completed)
            if live.scope.cancelled_caught:
                with trio.CancelScope(shield=True):
                    await self._finish_cancelled(live)
        except StoreUnavailable as exc:
            # The run cannot go on without its record: it waits, and resumes from what the
            # store holds once the store works again (``maintain``). Callers are told now.
            live.error = exc
            self._stalled.add(record.run_id)
            log.error("workflow run %s is stalled (it resumes when the run store works "
                      "again): %s", record.run_id, exc.message)
        except NotFound as exc:
            # Its record is gone (a Redis that came back empty): nothing left to write to.
            live.error = exc
            self._stalled.discard(record.run_id)
            self._live.pop(record.run_id, None)
            log.error("workflow run %s is no longer in the run store; stopped", record.run_id)
        finally:
            # Also on shutdown, when the run is left for the next process to resume.
            live.done.set()
            live.notify()
            if record.finished or record.run_id in self._stalled:
                self._live.pop(record.run_id, None)

    async def _execute(self, live: _Live, workflow: Workflow,
                       completed: Mapping[str, Completed]) -> None:
        record = live.record
        spec = record.spec
        settings = self.config.workflows
        memo = _StoreMemo(self, spec.tenant, settings.retention_days) if workflow.memoize else None
        key = None
        if spec.key_id is not None and self._runner.keys is not None:
            try:
                key = await self._runner.keys.live(spec.key_id)
            except RouterError as exc:
                with trio.CancelScope(shield=True):
                    await self._finish_failed(live, exc)
                live.error = exc
                return
        ctx = RunContext(tenant=spec.tenant, cache_read=spec.cache_read,
                         cache_write=spec.cache_write, key=key)

        async def emit(event: str, data: dict[str, Any]) -> None:
            async with live.writing:
                await self._commit(live, self._progress(record, event, data))

        try:
            result = await run_workflow(
                workflow, runner=self._runner, ctx=ctx, input=spec.input,
                variables=spec.variables, max_concurrency=settings.max_concurrency,
                emit=emit, render_limiter=self._render_limiter, completed=completed,
                memo=memo, max_output_bytes=settings.max_output_bytes,
            )
        except StoreUnavailable:
            raise  # not the run's failure: it stalls (``_drive``)
        except RouterError as exc:
            live.error = exc
            with trio.CancelScope(shield=True):
                await self._finish_failed(live, exc)
            return
        result = {"run_id": record.run_id, **result}
        status = "succeeded" if result["status"] == "completed" else "failed"
        error = None
        if status == "failed":
            unfinished = [n for n, op in record.ops.items() if op.status != "succeeded"]
            error = {"type": "server_error", "code": "run_incomplete", "param": None,
                     "message": "ops did not complete: " + ", ".join(unfinished)}
        with trio.CancelScope(shield=True):
            await self._commit(live, RunChange(
                status=status,
                fields={"finished_at": self._clock(), "final_output": result["final_output"],
                        "cost_usd": result["total_cost_usd"], "result": result,
                        "error": error},
                event=("result", result),
            ))

    def _progress(self, record: RunRecord, event: str, data: Mapping[str, Any]) -> RunChange:
        """The store change for one progress event of ``run_workflow``."""
        name = data["op"]
        now = self._clock()
        state = dataclasses.replace(record.ops.get(name) or OpState())
        fields: dict[str, Any] = {}
        if event == "op_started":
            state = OpState(status="running", tier=data.get("tier"), started_at=now)
        elif event == "op_finished":
            tokens = data.get("tokens") or {}
            state.status = "succeeded"
            state.model, state.tier, state.cache = data["model"], data["tier"], data["cache"]
            state.cost_usd = data["cost_usd"]
            state.input_tokens, state.output_tokens = tokens.get("input", 0), tokens.get(
                "output", 0)
            state.attempts, state.ms = data["attempts"], data["ms"]
            state.output, state.value = data["output"], data.get("value")
            state.finished_at = now
            fields["cost_usd"] = record.cost_usd + state.cost_usd
        elif event == "op_failed":
            state.status, state.error, state.finished_at = "failed", data["error"], now
        elif event == "op_skipped":
            state.status = "skipped"
            state.reason = "budget_spent" if data.get("reason") == "not_run" else (
                "dependency_failed")
        return RunChange(ops={name: state}, fields=fields, event=(event, data))

    async def _finish_failed(self, live: _Live, exc: RouterError) -> None:
        record = live.record
        error = orjson.loads(OPENAI.render_error(exc))
        await self._commit(live, RunChange(
            status="failed", ops=_closed_ops(record, running="cancelled", reason="run_failed"),
            fields={"finished_at": self._clock(), "error": error["error"]},
            event=("error", {"run_id": record.run_id, **error}),
        ))

    async def _finish_cancelled(self, live: _Live) -> None:
        record = live.record
        by = dict(live.cancel_by or {})
        await self._commit(live, RunChange(
            status="cancelled",
            ops=_closed_ops(record, running="cancelled", reason="run_cancelled"),
            fields={"finished_at": self._clock(), "cancelled_by": by},
            event=("cancelled", {"run_id": record.run_id, "cancelled_by": by}),
        ))
        live.error = RunCancelled(f"workflow run {record.run_id} was cancelled",
                                  cancelled_by=by)

    async def _commit(self, live: _Live, change: RunChange) -> None:
        try:
            await self.store.commit(live.record.run_id, change, now=self._clock())
        finally:
            # Memory follows even if the store failed: the run's callers see what happened.
            change.apply(live.record)
            live.notify()
            if change.status in FINISHED:
                spec = live.record.spec
                self._runner.stats.record_run(spec.workflow_name or "submitted", change.status)

    # ---- resuming, renewing, expiring -------------------------------------------------------

    async def maintain(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                       ) -> None:
        """Claim orphaned runs now and every few seconds; renew this process's leases;
        act on cancel requests for its runs; expire old runs hourly. Runs until cancelled."""
        try:
            await self._claim_orphans()
            await self._expire(self._clock())
        except StoreUnavailable as exc:
            log.error("workflow runs: %s", exc.message)
        task_status.started()
        last_sweep = self._clock()
        while True:
            with trio.move_on_after(LEASE_SEC / 3 if not self._live else _POLL_SEC * 2):
                await self._launched.wait()
                await trio.sleep(_POLL_SEC * 2)  # a run started: poll as for a live run
            self._launched = trio.Event()
            try:
                now = self._clock()
                await self.store.tidy()
                await self.store.renew(owner=self.owner, lease_sec=LEASE_SEC, now=now)
                for run_id, by in await self.store.cancel_requests(owner=self.owner):
                    live = self._live.get(run_id)
                    if live is not None:
                        self._cancel_live(live, by)
                await self._claim_orphans()
                for run_id in list(self._stalled):
                    record = await self.store.get(run_id, tenant=None)
                    self._stalled.discard(run_id)
                    if record is not None and not record.finished and run_id not in self._live:
                        await self._resume(record, cancel_by=None)
                if now - last_sweep >= _SWEEP_SEC:
                    last_sweep = now
                    await self._expire(now)
            except StoreUnavailable as exc:
                log.error("workflow runs: %s", exc.message)

    async def _expire(self, now: float) -> None:
        days = self.config.workflows.retention_days
        gone = await self.store.expire(finished_before=now - days * 86400, now=now)
        if gone:
            log.info("deleted %d workflow runs that ended over %g days ago", gone, days)

    async def _claim_orphans(self) -> None:
        claimed = await self.store.claim(
            owner=self.owner, lease_sec=LEASE_SEC, now=self._clock(),
            alive=lambda owner: owner_alive(owner, me=self.owner), limit=100,
        )
        if not claimed:
            return
        asked = dict(await self.store.cancel_requests(owner=self.owner))
        for record in claimed:
            if record.run_id not in self._live:
                await self._resume(record, cancel_by=asked.get(record.run_id))

    async def _resume(self, record: RunRecord, *, cancel_by: Mapping[str, Any] | None) -> None:
        """Run a claimed run again from its record (cancelled at once if that was asked)."""
        spec = record.spec
        live_ops = {name: (dataclasses.replace(op, status="pending", started_at=None)
                           if op.status == "running" else op)
                    for name, op in record.ops.items()}
        record.ops = live_ops
        log.info("resuming workflow run %s (%d ops done)", record.run_id,
                 sum(op.status == "succeeded" for op in live_ops.values()))
        try:
            workflow = await trio.to_thread.run_sync(self._load, spec,
                                                     limiter=self._render_limiter)
        except RouterError as exc:
            live = _Live(record)
            self._live[record.run_id] = live
            await self._finish_failed(live, exc)
            live.done.set()
            self._live.pop(record.run_id, None)
            return
        completed = {
            name: Completed(OpOutput(op.output or "", op.value), _op_record(op))
            for name, op in live_ops.items() if op.status == "succeeded"
        }
        live = self._launch(record, workflow, completed)
        if cancel_by is not None:
            self._cancel_live(live, cancel_by)

    def _load(self, spec: RunSpec) -> Workflow:
        return load_workflow(spec.workflow_text, limits=self.config.workflows,
                             templates_dir=self._templates,
                             models=[m.name for m in self.config.models])

    async def close(self) -> None:
        """Give up this process's leases (after its runs stopped), so the next process to
        start on the store resumes them at once."""
        with trio.CancelScope(shield=True):
            try:
                await self.store.release(owner=self.owner)
            except StoreUnavailable as exc:
                log.error("workflow runs: %s", exc.message)


def _error_of(record: RunRecord) -> RouterError:
    if record.status == "cancelled":
        return RunCancelled(f"workflow run {record.run_id} was cancelled",
                            cancelled_by=record.cancelled_by or {})
    error = RouterError((record.error or {}).get("message", "the run failed"))
    error.code = (record.error or {}).get("code", "internal_error")
    return error


def _closed_ops(record: RunRecord, *, running: str, reason: str) -> dict[str, OpState]:
    """The ops a run that ends now leaves behind: running ones ``running`` (cancelled),
    pending ones skipped for ``reason``."""
    out: dict[str, OpState] = {}
    for name, op in record.ops.items():
        if op.status == "running":
            out[name] = dataclasses.replace(op, status=running)
        elif op.status == "pending":
            out[name] = dataclasses.replace(op, status="skipped", reason=reason)
    return out


def _op_record(op: OpState) -> OpRecord:
    return OpRecord(status="done", model=op.model, tier=op.tier, cache=op.cache,
                    cost_usd=op.cost_usd, input_tokens=op.input_tokens,
                    output_tokens=op.output_tokens, ms=op.ms, attempts=op.attempts)


class _StoreMemo:
    """Memoized op answers in the run store, per tenant, kept ``retention_days``."""

    def __init__(self, runs: Runs, tenant: str, days: float) -> None:
        self._runs = runs
        self._tenant = tenant
        self._days = days

    def _key(self, op: Op, request: ChatRequest) -> str:
        route = f"model:{op.model}" if op.model else f"tier:{op.tier}" if op.tier else "auto"
        return memo_key(tenant=self._tenant, op_route=route,
                        request=dataclasses.asdict(request))

    async def recall(self, op: Op, request: ChatRequest) -> Recalled | None:
        memo = await self._runs.store.memo_get(self._key(op, request), now=self._runs._clock())
        if memo is None:
            return None
        return Recalled(text=memo.output, model=memo.model, tier=memo.tier,
                        input_tokens=memo.input_tokens, output_tokens=memo.output_tokens)

    async def keep(self, op: Op, request: ChatRequest, done: NodeResult) -> None:
        usage = done.result.usage
        memo = Memo(output=done.result.text, value=None, model=done.served.model,
                    tier=done.served.tier, input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens, cost_usd=done.cost_usd)
        expires = self._runs._clock() + self._days * 86400
        await self._runs.store.memo_put(self._key(op, request), memo, expires_at=expires)
