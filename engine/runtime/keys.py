"""Client keys at run time: who is calling, and may they spend this.

:meth:`KeyGate.authenticate` finds a key by the digest of the secret presented (a record is
trusted for at most a second, so a key revoked by another process stops working within one);
:meth:`KeyGate.admit` is asked before every upstream call (a request's, or one op of a
workflow run) and reserves what the call may cost: one request and its estimated tokens
against ``rpm`` and ``tpm``, its most expensive outcome against the budget; :meth:`settle`
charges what the call really cost once it is known, and gives back the rest.

Counters here live in this process's memory (exact, and atomic, since one trio thread runs
them); spend is also added to the store, in the background once a second, so a budget holds
across restarts. With Redis the same arithmetic runs there, for every process at once.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from engine.core.keys import (
    KeyRecord,
    KeySettings,
    Ledger,
    digest,
    looks_like_key,
    new_key_id,
    new_secret,
    period_key,
    period_reset,
    public_prefix,
    take,
)
from engine.core.keys import settle as settle_rate
from engine.errors import BudgetExceeded, Forbidden, NotFound, RateLimited, Unauthorized
from engine.stores.keys import KeyStore

__all__ = ["KeyGate", "Ticket", "rate_headers"]

log = logging.getLogger("llm_router")

_TRUST_SEC = 1.0  # how long a looked-up record is used before it is read again


@dataclass(slots=True)
class Ticket:
    """What one admitted call reserved, to settle when its real cost is known."""

    key_id: str
    period: str
    tokens: int
    cost_usd: float
    settled: bool = False
    #: X-RateLimit-* values at admission, for the response.
    headers: dict[str, str] = field(default_factory=dict)
    #: Admitted in Redis for every process (``engine.runtime.shared_keys``), with this budget
    #: hold (``""``: none); False: by this process alone.
    shared: bool = False
    hold: str = ""


@dataclass(slots=True)
class _Counters:
    rpm_tat: float = 0.0
    tpm_tat: float = 0.0


class KeyGate:
    def __init__(self, store: KeyStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock
        self._records: dict[str, tuple[float, KeyRecord | None]] = {}  # digest -> (read at, …)
        self._counters: dict[str, _Counters] = defaultdict(_Counters)
        #: Key id -> (period, its ledger): the current period's only, so a process that runs
        #: for months keeps one per key, not one per key and day.
        self._ledgers: dict[str, tuple[str, Ledger]] = {}
        self._unsaved: dict[tuple[str, str], tuple[float, int, int]] = {}

    # ---- keys ---------------------------------------------------------------------------------

    async def create(self, settings: KeySettings) -> tuple[KeyRecord, str]:
        """A new key: its record and its secret (shown this once, kept nowhere)."""
        secret = new_secret()
        record = KeyRecord(id=new_key_id(), digest=digest(secret),
                           prefix=public_prefix(secret), settings=settings,
                           created_at=self._clock())
        await self.store.create(record)
        log.info("client key %s (%s) created", record.id, record.prefix)
        return record, secret

    async def update(self, key_id: str, settings: KeySettings) -> KeyRecord:
        record = await self.get(key_id)
        updated = await self.store.update(key_id, settings)
        self._forget(record)
        return updated or record

    async def revoke(self, key_id: str) -> KeyRecord:
        record = await self.get(key_id)
        revoked = await self.store.revoke(key_id, at=self._clock())
        self._forget(record)
        log.info("client key %s (%s) revoked", record.id, record.prefix)
        return revoked or record

    async def get(self, key_id: str) -> KeyRecord:
        """Raises NotFound for an unknown id."""
        record = await self.store.get(key_id)
        if record is None:
            raise NotFound(f"no client key {key_id!r}; GET /v1/admin/keys lists them")
        return record

    async def live(self, key_id: str) -> KeyRecord:
        """The key by id, if it may still be used (a workflow run's key, as each run starts).

        Raises:
            Unauthorized: unknown, revoked or expired.
        """
        record = await self.store.get(key_id)
        if record is None:
            raise Unauthorized("the client key of this run no longer exists")
        return self._usable(record)

    def _usable(self, record: KeyRecord) -> KeyRecord:
        if record.revoked_at is not None:
            raise Unauthorized(f"client key {record.prefix}… was revoked")
        if record.settings.expired(self._clock()):
            raise Unauthorized(f"client key {record.prefix}… has expired")
        return record

    async def list(self) -> list[KeyRecord]:
        return list(await self.store.list())

    async def usage(self, record: KeyRecord) -> dict[str, object]:
        """What the key has used in its current budget period (saved and not yet saved)."""
        settings = record.settings
        period = period_key(settings.budget_period, self._clock())
        cost, requests, tokens = await self.store.spend(record.id, period)
        more = self._unsaved_spend(record.id, period)
        spent = cost + more[0]
        usage: dict[str, object] = {
            "period": period, "spent_usd": round(spent, 8), "requests": requests + more[1],
            "tokens": tokens + more[2],
        }
        if settings.budget_usd is not None:
            usage["remaining_usd"] = round(max(0.0, settings.budget_usd - spent), 8)
        return usage

    def _unsaved_spend(self, key_id: str, period: str) -> tuple[float, int, int]:
        """What calls of ``key_id`` spent in ``period`` that the store does not show yet."""
        return self._unsaved.get((key_id, period), (0.0, 0, 0))

    def _forget(self, record: KeyRecord) -> None:
        self._records.pop(record.digest, None)

    # ---- who is calling ------------------------------------------------------------------------

    @staticmethod
    def is_client_key(secret: str) -> bool:
        return looks_like_key(secret)

    async def authenticate(self, secret: str) -> KeyRecord:
        """The live key whose secret this is.

        Raises:
            Unauthorized: no such key, or it is revoked or expired.
        """
        found = digest(secret)
        now = self._clock()
        cached = self._records.get(found)
        if cached is not None and now - cached[0] < _TRUST_SEC:
            record = cached[1]
        else:
            record = await self.store.by_digest(found)
            self._records[found] = (now, record)
            if len(self._records) > 100_000:
                self._records.clear()
        if record is None:
            raise Unauthorized("unknown client key")
        return self._usable(record)

    @staticmethod
    def check_model(record: KeyRecord, model: str) -> None:
        """Raises Forbidden for a model the key may not ask for (``auto``: routed)."""
        if not record.settings.allows_model(model):
            allowed = ", ".join(record.settings.models or ())
            raise Forbidden(f"this client key may not use model {model!r} (it may use: "
                            f"{allowed or 'no model'})")

    # ---- may they spend this ---------------------------------------------------------------------

    async def admit(self, record: KeyRecord, *, tokens: int, max_cost_usd: float,
                    count_request: bool = True) -> Ticket:
        """Reserve one call against the key's limits.

        Raises:
            RateLimited: past ``rpm`` or ``tpm`` (``retry_after`` says when to try again).
            BudgetExceeded: the budget of the current period is spent.
        """
        settings, now = record.settings, self._clock()
        counters = self._counters[record.id]
        headers: dict[str, str] = {}
        rpm = tpm = None
        if settings.rpm is not None and count_request:
            rpm = take(counters.rpm_tat, now=now, cost=1, per_minute=settings.rpm)
            if not rpm.allowed:
                raise self._limited("requests", settings.rpm, rpm.retry_after)
            headers |= rate_headers("requests", settings.rpm, rpm.remaining, rpm.reset_after)
        if settings.tpm is not None:
            tpm = take(counters.tpm_tat, now=now, cost=tokens, per_minute=settings.tpm,
                       admit_over=True)
            if not tpm.allowed:
                raise self._limited("tokens", settings.tpm, tpm.retry_after)
            headers |= rate_headers("tokens", settings.tpm, tpm.remaining, tpm.reset_after)
        period = period_key(settings.budget_period, now)
        if settings.budget_usd is not None:
            ledger = await self._ledger(record.id, period)
            if not ledger.admit(max_cost_usd, budget=settings.budget_usd):
                raise self._spent(record, now)
        # Only now, with every check passed, does the call take its share of the limits.
        if rpm is not None:
            counters.rpm_tat = rpm.tat
        if tpm is not None:
            counters.tpm_tat = tpm.tat
        return Ticket(record.id, period, tokens,
                      max_cost_usd if settings.budget_usd is not None else 0.0,
                      headers=headers)

    def settle(self, record: KeyRecord, ticket: Ticket, *, tokens: int,
               cost_usd: float) -> None:
        """Charge the call's real cost and tokens (0 and 0 for a call that failed before an
        upstream answered); give back the rest of the reservation. Once per ticket."""
        if ticket.settled:
            return
        ticket.settled = True
        settings = record.settings
        if settings.tpm is not None and tokens != ticket.tokens:
            counters = self._counters[record.id]
            counters.tpm_tat = settle_rate(counters.tpm_tat, reserved=ticket.tokens,
                                           actual=tokens, per_minute=settings.tpm)
        ledger = self._held_ledger(record.id, ticket.period)
        if ledger is not None:  # None: its period has ended, and its count gone
            ledger.settle(reserved=ticket.cost_usd, actual=cost_usd)
        key = (record.id, ticket.period)
        cost, requests, used = self._unsaved.get(key, (0.0, 0, 0))
        self._unsaved[key] = (cost + cost_usd, requests + 1, used + tokens)

    async def _ledger(self, key_id: str, period: str) -> Ledger:
        ledger = self._held_ledger(key_id, period)
        if ledger is None:
            spent, _, _ = await self.store.spend(key_id, period)
            ledger = self._hold_ledger(key_id, period, Ledger(spent=spent))
        return ledger

    def _held_ledger(self, key_id: str, period: str) -> Ledger | None:
        held = self._ledgers.get(key_id)
        return held[1] if held is not None and held[0] == period else None

    def _hold_ledger(self, key_id: str, period: str, ledger: Ledger) -> Ledger:
        """Keep ``ledger`` as the key's, unless one of the period is held already (made by a
        concurrent call); the key's ledger of an earlier period goes."""
        held = self._held_ledger(key_id, period)
        if held is not None:
            return held
        self._ledgers[key_id] = (period, ledger)
        return ledger

    @staticmethod
    def _spent(record: KeyRecord, now: float) -> BudgetExceeded:
        settings = record.settings
        reset = period_reset(settings.budget_period, now)
        return BudgetExceeded(
            f"client key {record.prefix}… has spent its budget of "
            f"${settings.budget_usd:g} for this {settings.budget_period}"
            + ("" if reset is None else f"; it renews in {reset - now:.0f} s"),
            retry_after=None if reset is None else reset - now)

    def _limited(self, what: str, limit: int, retry_after: float) -> RateLimited:
        error = RateLimited(f"this client key may use {limit} {what} per minute; try again "
                            f"in {retry_after:.1f} s", retry_after=retry_after)
        error.headers = rate_headers(what, limit, 0, retry_after)
        return error

    # ---- keeping spend ---------------------------------------------------------------------------

    async def save_spend(self) -> None:
        """Add what was settled since the last call to the store."""
        if not self._unsaved:
            return
        batch, self._unsaved = self._unsaved, {}
        try:
            await self.store.add_spend(batch)
        except BaseException:
            for key, (cost, requests, tokens) in batch.items():  # keep it for the next try
                old = self._unsaved.get(key, (0.0, 0, 0))
                self._unsaved[key] = (old[0] + cost, old[1] + requests, old[2] + tokens)
            raise

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """The gate's background work, until cancelled: saving spend (:meth:`keep_spend`)."""
        task_status.started()
        await self.keep_spend()

    async def keep_spend(self) -> None:
        """Save spend once a second until cancelled, and once more then."""
        try:
            while True:
                await trio.sleep(1)
                try:
                    await self.save_spend()
                except Exception as exc:  # the store says what (StoreUnavailable)
                    log.error("client key spend not saved yet: %s", exc)
        finally:
            with trio.CancelScope(shield=True):
                try:
                    await self.save_spend()
                except Exception as exc:
                    log.error("client key spend of the last second lost: %s", exc)


def rate_headers(what: str, limit: int, remaining: int, reset_after: float) -> dict[str, str]:
    return {f"x-ratelimit-limit-{what}": str(limit),
            f"x-ratelimit-remaining-{what}": str(remaining),
            f"x-ratelimit-reset-{what}": f"{reset_after:.0f}s"}
