"""The run store: where durable workflow runs are kept, one interface for every backing store.

A :class:`RunStore` keeps run records (``engine.core.workflow.runs``), each run's events in
order, the leases that say which process runs what, cancellation requests, and memoized op
results. The embedded implementation is SQLite (:class:`~engine.stores.sqlite_runs.SqliteRunStore`,
nothing to install); a shared one (Redis) implements the same methods, so several processes
can share runs.

Rules every implementation keeps:

* :meth:`~RunStore.commit` is atomic: the run's fields, the ops it names and its event are
  written together, or not at all. The event gets the next ``seq`` of its run (1, 2, ...).
* A run belongs to one process at a time: the *owner* named by its lease. An owner renews
  its leases (:meth:`~RunStore.renew`) well within ``lease_sec``; a run whose lease has
  lapsed, or whose owner ``alive`` says is gone, may be claimed by another process
  (:meth:`~RunStore.claim`), which then resumes it. Claiming is atomic: one claimant wins.
* Reads by a tenant see only that tenant's runs (``tenant=None`` is the router itself).
* Errors are :class:`~engine.errors.StoreUnavailable`, naming the store and the cause (a full
  disk, a corrupt file, an unreachable server).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from engine.core.workflow.runs import RunChange, RunEvent, RunRecord

__all__ = ["Memo", "RunStore"]


@dataclass(frozen=True, slots=True)
class Memo:
    """A memoized op result: what a later identical op is answered with."""

    output: str
    value: Any
    model: str
    tier: int
    input_tokens: int
    output_tokens: int
    cost_usd: float  # what the original call cost (a memo hit costs nothing)


class RunStore(Protocol):
    async def open(self) -> None:
        """Open (creating if needed) and check the store.

        Raises:
            StoreUnavailable: it cannot be opened or written, or fails its integrity check.
        """

    async def close(self) -> None: ...

    def health(self) -> dict[str, Any]:
        """``{"status": "ok"}``, or ``{"status": "error", "error": "..."}`` after the last
        operation failed (until one succeeds again); plus what the store is (``"kind"``)."""

    async def create(self, record: RunRecord, *, owner: str | None,
                     lease_sec: float, now: float) -> tuple[RunRecord, bool]:
        """Add a new run, leased to ``owner`` (``None``: unowned, anyone may claim it).

        With ``record.idempotency_key`` set and a run of the same tenant with that key
        already stored, nothing is added: that run is returned with ``False``. Else
        ``(record, True)``.
        """

    async def get(self, run_id: str, *, tenant: str | None) -> RunRecord | None:
        """The run (ops included), or ``None`` if unknown or of another tenant."""

    async def list(self, *, tenant: str | None, status: str | None,
                   limit: int) -> Sequence[RunRecord]:
        """The tenant's most recent runs, newest first, at most ``limit``."""

    async def commit(self, run_id: str, change: RunChange, *, now: float) -> int:
        """Apply ``change`` to the stored run; return its event's ``seq`` (0 if none)."""

    async def events(self, run_id: str, *, after: int, limit: int) -> Sequence[RunEvent]:
        """The run's events with ``seq > after``, oldest first, at most ``limit``."""

    async def claim(self, *, owner: str, lease_sec: float, now: float,
                    alive: Callable[[str], bool], limit: int) -> Sequence[RunRecord]:
        """Take over runs that are ``queued`` or ``running`` and unowned, whose lease has
        lapsed, or whose owner is not ``alive``; oldest first, at most ``limit``. They are
        returned leased to ``owner``."""

    async def renew(self, *, owner: str, lease_sec: float, now: float) -> None:
        """Extend every lease ``owner`` holds on an unfinished run."""

    async def release(self, *, owner: str) -> None:
        """Give up ``owner``'s leases at once (a clean shutdown: the next process to start
        resumes the runs without waiting for the leases to lapse)."""

    async def request_cancel(self, run_id: str, *, tenant: str | None,
                             by: Mapping[str, Any]) -> RunRecord | None:
        """Ask for the run to be cancelled (by its owner, wherever it runs); the run as it
        stands, or ``None`` if unknown or of another tenant. Asking again changes nothing."""

    async def cancel_requests(self, *, owner: str) -> Sequence[tuple[str, Mapping[str, Any]]]:
        """``(run_id, by)`` of every unfinished run ``owner`` holds that someone asked to
        cancel."""

    async def memo_get(self, key: str, *, now: float) -> Memo | None: ...

    async def memo_put(self, key: str, memo: Memo, *, expires_at: float) -> None: ...

    async def tidy(self) -> None:
        """Housekeeping kept off the commit path, called every second or so while the
        router runs (the embedded store checkpoints its write-ahead log here)."""

    async def expire(self, *, finished_before: float, now: float) -> int:
        """Delete runs that finished before ``finished_before`` (with their events) and
        memos past their time; return how many runs went."""
