"""Client keys shared by every router process (``state.redis_url``): a key made, changed or
revoked through one process holds on all of them, and a key's rate limits and budget count the
calls of all of them together.

* **Who is calling** costs no Redis round trip: each process holds every key's record (loaded
  at start, and again whenever Redis comes back) and follows the news stream
  ``llmr:{bus}:keys``, where each create, update and revocation names its key; a record is
  read again as its news arrives (a fraction of a second). A secret this process has not seen
  is looked up in Redis once (a key made a moment ago elsewhere).
* **May they spend this** is one script in Redis per call (``RedisKeyStore.admit``): the
  key's ``rpm`` and ``tpm`` (GCRA, as in one process) and a hold of the call's most
  expensive outcome on the budget, which also refuses a key revoked a moment ago. A key with
  no limits skips it. Settling (the real cost and tokens, the hold given back) is queued and
  written by a background task, batched; it waits out a Redis outage and is written when
  Redis is back.
* **Redis down** (or slower than ``state.redis_timeout_ms``) is never a failed request: the
  records held here keep authenticating, and admission falls back to this process's own gate
  (``KeyGate``'s in-memory counters; the budget from the spend Redis last reported plus what
  this process spent since). What those calls cost is added to Redis's spend when it returns.
  A Redis that comes back empty gets the keys back from the records held here (keys are
  revoked, never deleted); the spend it held before is gone with it.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Callable

import trio

from engine.core.keys import KeyRecord, KeySettings, Ledger, digest, period_key
from engine.errors import StoreUnavailable, Unauthorized
from engine.stores.redis.keys import NEWS, RedisKeyStore, Settlement
from engine.stores.redis.tail import StreamEntry

from .keys import KeyGate, Ticket, rate_headers
from .shared import Shared

__all__ = ["SharedKeyGate"]

log = logging.getLogger("llm_router")

_MISS_SEC = 1.0  # how long a secret Redis did not know is refused without asking again
_MAX_PENDING = 100_000  # settlements kept while Redis is down; more are folded into spend
#: How long a settlement waits for others to share its round trip. Its hold stays on the
#: budget meanwhile, so waiting never lets a call through that the budget would refuse.
_BATCH_SEC = 0.02


class SharedKeyGate(KeyGate):
    def __init__(self, store: RedisKeyStore, shared: Shared, *,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(store, clock=clock)
        self.shared_store = store
        self._shared = shared
        self._known: dict[str, KeyRecord] = {}  # digest -> the record as last read
        self._digests: dict[str, str] = {}  # key id -> digest
        self._loaded = False
        self._misses: dict[str, float] = {}  # digest -> when Redis last did not know it
        #: Key id -> (period, spend plus holds) as Redis last reported them, of the key's latest
        #: period only: where this process's own budget count starts while Redis is down.
        self._last_spent: dict[str, tuple[str, float]] = {}
        self._pending: list[Settlement] = []
        self._wake = trio.Event()
        #: Calls admitted by this process alone because Redis did not answer.
        self.fallbacks = 0
        shared.redis.on_up(self._resync)

    # ---- the records held here ------------------------------------------------------------

    def _remember(self, record: KeyRecord) -> None:
        self._known[record.digest] = record
        self._digests[record.id] = record.digest
        self._misses.pop(record.digest, None)

    async def _load(self) -> None:
        """Read every record. One held here that Redis no longer has (it came back empty:
        restarted without persistence) is written back: keys are never deleted, only
        revoked, so Redis has lost it, and the processes are what still know it."""
        records = await self.shared_store.list()
        lost = {r.id: r for r in self._known.values()}
        for record in records:
            lost.pop(record.id, None)
        for record in lost.values():
            await self.shared_store.create(record)
        if lost:
            log.warning("Redis had lost %d client keys; written back", len(lost))
        self._known.clear()
        self._digests.clear()
        for record in [*records, *lost.values()]:
            self._remember(record)
        self._loaded = True

    async def _resync(self) -> None:
        """Redis is back (or answered for the first time): read every record again, and let
        the per-process budget counts go (the next outage starts from Redis's numbers)."""
        self._ledgers.clear()
        self._wake.set()
        try:
            await self._load()
        except StoreUnavailable as exc:
            log.warning("client keys not reloaded: %s", exc.message)

    async def _news(self, entries: list[StreamEntry]) -> None:
        ids = sorted({entry.fields[b"id"].decode() for entry in entries
                      if b"id" in entry.fields})
        for key_id, record in (await self.shared_store.get_many(ids)).items():
            if record is not None:
                self._remember(record)
            elif key_id in self._digests:
                self._known.pop(self._digests.pop(key_id), None)

    async def authenticate(self, secret: str) -> KeyRecord:
        found = digest(secret)
        record = self._known.get(found)
        if record is None:
            record = await self._look_up(found)
        if record is None:
            raise Unauthorized("unknown client key")
        return self._usable(record)

    async def _look_up(self, found: str) -> KeyRecord | None:
        now = self._clock()
        if now - self._misses.get(found, -_MISS_SEC) < _MISS_SEC:
            return None
        try:
            record = await self.shared_store.by_digest(found)
        except StoreUnavailable:
            if not self._loaded:  # started while Redis was down: it knows no key yet
                raise StoreUnavailable("client keys are not loaded yet: Redis has not "
                                       "answered since this process started") from None
            return None
        if record is None:
            if len(self._misses) > 100_000:
                self._misses.clear()
            self._misses[found] = now
            return None
        self._remember(record)
        return record

    async def live(self, key_id: str) -> KeyRecord:
        try:
            return await super().live(key_id)
        except StoreUnavailable:
            record = self._known.get(self._digests.get(key_id, ""))
            if record is None:
                raise
            return self._usable(record)

    async def create(self, settings: KeySettings) -> tuple[KeyRecord, str]:
        record, secret = await super().create(settings)
        self._remember(record)
        return record, secret

    async def update(self, key_id: str, settings: KeySettings) -> KeyRecord:
        record = await super().update(key_id, settings)
        self._remember(record)
        return record

    async def revoke(self, key_id: str) -> KeyRecord:
        record = await super().revoke(key_id)
        self._remember(record)
        return record

    # ---- admission ---------------------------------------------------------------------------

    async def admit(self, record: KeyRecord, *, tokens: int, max_cost_usd: float,
                    count_request: bool = True) -> Ticket:
        settings, now = record.settings, self._clock()
        limited = (settings.rpm is not None and count_request) or settings.tpm is not None
        if not limited and settings.budget_usd is None:
            # Nothing to count: this process's gate charges the spend (saved each second).
            return await super().admit(record, tokens=tokens, max_cost_usd=max_cost_usd,
                                       count_request=count_request)
        period = period_key(settings.budget_period, now)
        budgeted = settings.budget_usd is not None
        hold = f"{secrets.token_hex(8)}:{max_cost_usd!r}" if budgeted else ""
        try:
            verdict = await self.shared_store.admit(
                record.id, period=period, now=now, rpm=settings.rpm, tpm=settings.tpm,
                tokens=tokens, count_request=count_request, budget=settings.budget_usd,
                max_cost_usd=max_cost_usd, hold=hold)
        except StoreUnavailable:
            self.fallbacks += 1
            return await super().admit(record, tokens=tokens, max_cost_usd=max_cost_usd,
                                       count_request=count_request)
        if verdict.verdict == "gone":
            # Keys are revoked, never deleted: Redis lost this one (it restarted empty, and
            # the reload that writes the keys back has not run yet). Give it back; this call
            # is admitted here.
            with contextlib.suppress(StoreUnavailable):
                await self.shared_store.create(record)
            self.fallbacks += 1
            return await super().admit(record, tokens=tokens, max_cost_usd=max_cost_usd,
                                       count_request=count_request)
        if verdict.verdict == "revoked":
            self._remember_revoked(record)
            raise Unauthorized(f"client key {record.prefix}… was revoked")
        if verdict.verdict == "requests":
            raise self._limited("requests", settings.rpm or 0, verdict.retry_after)
        if verdict.verdict == "tokens":
            raise self._limited("tokens", settings.tpm or 0, verdict.retry_after)
        self._last_spent[record.id] = (period, verdict.spent + verdict.reserved)
        if verdict.verdict == "budget":
            raise self._spent(record, now)
        headers: dict[str, str] = {}
        if verdict.requests is not None and settings.rpm is not None:
            headers |= rate_headers("requests", settings.rpm, *verdict.requests)
        if verdict.tokens is not None and settings.tpm is not None:
            headers |= rate_headers("tokens", settings.tpm, *verdict.tokens)
        return Ticket(record.id, period, tokens, max_cost_usd if budgeted else 0.0,
                      headers=headers, shared=True, hold=hold)

    def _remember_revoked(self, record: KeyRecord) -> None:
        """Redis says the key is revoked: stop trusting the record held here before its news
        arrives."""
        if record.revoked_at is None:
            self._known[record.digest] = KeyRecord(
                id=record.id, digest=record.digest, prefix=record.prefix,
                settings=record.settings, created_at=record.created_at,
                revoked_at=self._clock())

    async def _ledger(self, key_id: str, period: str) -> Ledger:
        """While Redis is down: this process's count, from what Redis last reported."""
        ledger = self._held_ledger(key_id, period)
        if ledger is None:
            last_period, spent = self._last_spent.get(key_id, (period, 0.0))
            ledger = self._hold_ledger(
                key_id, period, Ledger(spent=spent if last_period == period else 0.0))
        return ledger

    def settle(self, record: KeyRecord, ticket: Ticket, *, tokens: int,
               cost_usd: float) -> None:
        if not ticket.shared:
            super().settle(record, ticket, tokens=tokens, cost_usd=cost_usd)
            return
        if ticket.settled:
            return
        ticket.settled = True
        self._pending.append(Settlement(
            key_id=record.id, period=ticket.period, hold=ticket.hold,
            held_usd=ticket.cost_usd, tpm=record.settings.tpm or 0,
            reserved_tokens=ticket.tokens, tokens=tokens, cost_usd=cost_usd))
        if len(self._pending) > _MAX_PENDING:
            self._fold(self._pending.pop(0))
        self._wake.set()

    def _fold(self, s: Settlement) -> None:
        """Too many settlements waiting for Redis: keep the oldest's spend only (its hold
        lapses in Redis on its own)."""
        cost, requests, used = self._unsaved.get((s.key_id, s.period), (0.0, 0, 0))
        self._unsaved[(s.key_id, s.period)] = (cost + s.cost_usd, requests + 1,
                                               used + s.tokens)

    def _unsaved_spend(self, key_id: str, period: str) -> tuple[float, int, int]:
        cost, requests, tokens = super()._unsaved_spend(key_id, period)
        for s in self._pending:
            if s.key_id == key_id and s.period == period:
                cost, requests, tokens = cost + s.cost_usd, requests + 1, tokens + s.tokens
        return cost, requests, tokens

    async def flush(self) -> None:
        """Write the settlements waiting (one round trip); on failure they wait again.

        Raises:
            StoreUnavailable: Redis did not take them.
        """
        batch, self._pending = self._pending, []
        try:
            await self.shared_store.settle(batch)
        except BaseException:
            self._pending[:0] = batch
            raise

    # ---- background ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Load the records, follow their news, write settlements and save spend, until
        cancelled (and the last settlements then). Started once the records are loaded, or
        once Redis failed to answer (they load when it does)."""
        try:
            since = await self._shared.last_id(NEWS)
            await self._load()
        except StoreUnavailable as exc:
            since = "$"
            log.error("client keys not loaded: %s; loading them when Redis answers",
                      exc.message)
        self._shared.tail.follow(NEWS, self._news, since=since)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.keep_spend)
                task_status.started()
                await self._write_settlements()
        finally:
            self._shared.tail.unfollow(NEWS)
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                try:
                    await self.flush()
                except StoreUnavailable as exc:
                    log.error("client key spend of %d calls not saved: %s",
                              len(self._pending), exc.message)

    async def _write_settlements(self) -> None:
        while True:
            await self._wake.wait()
            await trio.sleep(_BATCH_SEC)
            self._wake = trio.Event()
            if not self._pending:
                continue
            try:
                await self.flush()
            except StoreUnavailable:
                await trio.sleep(0.25)  # Redis is down: ``_resync`` wakes this when it is back
                if self._shared.redis.up:
                    self._wake.set()
