"""The gateway: the running router's state and its two entry points for chat completions.

``open_gateway(config)`` owns everything that lives as long as the server: the upstream HTTP
client, the backend pool, the stats, and a background nursery for work that must outlive a
single request handler (a relayed stream, a shared deduplicated call, the upstream connection
pool's idle expiry). The nursery is cancelled before the HTTP client is closed.

Both entry points plan the request as a one-node workflow and hand it to the executor, which
runs its node on the same node runner (``engine.runtime.node``) as every workflow op:

* :meth:`Gateway.complete` runs it in the caller's task and returns the result;
* :meth:`Gateway.open_stream` runs it in the background nursery and returns a
  :class:`ChatStream` once the head is known (the first events are in hand), so the caller can
  still answer with a plain error status if every backend fails before the first byte.

A chat stream is a feed (``engine.runtime.feed``): a task in the background nursery and a
channel of at most 16 items to the client. A stream holds little: that channel, and
what its flight keeps (``server.stream_buffer_bytes``, see ``engine.dedup``). A client that
reads slowly slows the upstream read rather than piling it up here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

from engine.core.cache.responses import Matcher, ResponseCache
from engine.core.cache.threshold import ThresholdRule
from engine.core.config import Config
from engine.core.planner import Node, plan_chat
from engine.core.pool import BackendPool
from engine.core.recent import FinishedRequest, RecentRequests
from engine.core.redact import Redactor
from engine.core.remembered import Remembered
from engine.core.stats import RequestLabels, Stats
from engine.errors import NotFound, RouterError, StoreUnavailable
from engine.frozen import frozen_constructor
from engine.messages import ChatRequest
from engine.stores.feedback import FeedbackStore
from engine.stores.keys import KeyStore, SqliteKeyStore
from engine.stores.redis import RedisKeyStore, RedisRunStore
from engine.stores.runs import RunStore
from engine.stores.sqlite_runs import SqliteRunStore

from .cache_index import IndexWriter
from .cache_thresholds import MemoryThresholds, SharedThresholds, TenantThresholds
from .comparisons import Comparisons
from .dedup import FlightRegistry
from .embeddings import RemoteEmbedder
from .executor import RunNode, execute
from .failover import BackendCaller
from .feed import ChatStream
from .keys import KeyGate
from .models import Models, load_models
from .node import Deadline, NodeResult, NodeRunner, RunContext, Served
from .policy import FeedbackReport, RoutingPolicy
from .runs import Runs, owner_alive, process_name
from .shared import Shared, open_shared
from .shared_cache import SharedCache
from .shared_flights import SharedFlights
from .shared_health import SharedHealth
from .shared_keys import SharedKeyGate
from .shared_recent import SharedRecent
from .shared_reports import SharedReports
from .shared_totals import SharedTotals, flatten
from .sidecar import Sidecar
from .spend_window import SharedSpendWindow, SpendWindow
from .transport import PooledTransport
from .upstream import UpstreamClient

__all__ = ["Gateway", "MetricsSnapshot", "open_gateway"]

# Worker threads rendering workflow templates at once (each render is bounded in time): a
# few, so renders cannot take every thread trio lends (the feedback store needs some).
_RENDER_THREADS = 2
# Recent cache hits kept for feedback to name (as many as the routing policy keeps).
_REMEMBERED_HITS = 100_000

_new_finished = frozen_constructor(FinishedRequest)


class Gateway:
    def __init__(
        self,
        config: Config,
        *,
        upstream: UpstreamClient,
        nursery: trio.Nursery,
        matcher: Matcher | None = None,
        policy: RoutingPolicy | None = None,
        run_store: RunStore | None = None,
        run_store_error: str | None = None,
        shared: Shared | None = None,
        keys: KeyGate | None = None,
        embedder: RemoteEmbedder | None = None,
    ) -> None:
        self.config = config
        #: Client keys (``server.admin_key`` set); None: only ``server.api_keys`` apply.
        self.keys = keys
        #: What this process shares with others (``state.redis_url``); None: nothing.
        self.shared = shared
        self.pool = BackendPool(config.models, health=config.health)
        self.stats = Stats(reference=self.pool.reference)
        #: The last chat requests and the recent rate and latency (``GET /stats/recent``).
        self.recent = RecentRequests()
        self.cache: ResponseCache | None = None
        #: The cache's vector-index work, off the event loop (None: no cache).
        self.cache_index: IndexWriter | None = None
        if config.cache.enabled and matcher is not None:
            settings = config.cache
            self.cache_index = IndexWriter()
            nursery.start_soon(self.cache_index.run)
            make = ResponseCache if shared is None else partial(SharedCache, shared)
            self.cache = make(
                matcher=matcher, max_entries=settings.max_size, max_bytes=settings.max_bytes,
                max_entry_bytes=settings.max_entry_bytes, ttl=settings.ttl_sec,
                threshold=settings.similarity_thresh, index_work=self.cache_index.notice)
        #: The cache's vectors from ``cache.embedder`` (None: the packaged table's).
        self.embedder = embedder if self.cache is not None else None
        if isinstance(self.cache, SharedCache):
            self.cache.remote = self.embedder
            nursery.start_soon(self.cache.run)
        moves = config.cache.tenant_threshold
        #: Per-tenant similarity thresholds, moved by feedback on cached answers.
        self.thresholds = TenantThresholds(
            ThresholdRule(floor=config.cache.similarity_thresh, step=moves.step,
                          ceiling=moves.ceiling),
            MemoryThresholds() if shared is None else SharedThresholds(shared),
            enabled=moves.enabled, bad_below=moves.bad_below)
        # Request id -> tenant of recent cache hits: feedback on one moves the threshold.
        self._cache_hits: Remembered[str, str] = Remembered(_REMEMBERED_HITS)
        self.flights = FlightRegistry(nursery, buffer_bytes=config.server.stream_buffer_bytes)
        #: Dedup across processes: None without ``state.redis_url``.
        self.shared_flights = (None if shared is None
                               else SharedFlights(shared.redis, shared.tail))
        if self.shared_flights is not None:
            nursery.start_soon(self.shared_flights.run)  # writes and renews what it leads
        self.policy = policy or RoutingPolicy(config)
        #: Health and totals shared with the other processes (``state.redis_url``).
        self.shared_health: SharedHealth | None = None
        self.shared_totals: SharedTotals | None = None
        self.shared_recent: SharedRecent | None = None
        if shared is not None:
            origin = process_name()  # host:pid:token, so a dead one's totals can be reaped
            self.shared_health = SharedHealth(shared, self.pool, origin=origin)
            self.shared_totals = SharedTotals(shared, self.stats, self.pool, origin=origin,
                                              gauges=self._gauges,
                                              alive=partial(owner_alive, me=origin))
            nursery.start_soon(self.shared_health.run)
            nursery.start_soon(self.shared_totals.run)
            self.shared_recent = SharedRecent(shared, self.recent, origin=origin)
            nursery.start_soon(self.shared_recent.run)
        #: Feedback on other processes' requests, forwarded to them (None: one process).
        self.reports = None if shared is None else SharedReports(shared, self._report_here)
        if self.reports is not None:
            nursery.start_soon(self.reports.run)
        self.runner = NodeRunner(
            policy=self.policy,
            config=config,
            caller=BackendCaller(
                pool=self.pool, upstream=upstream, models=config.models,
                on_verdict=None if self.shared_health is None else self.shared_health.changed),
            stats=self.stats,
            cache=self.cache,
            cache_index=self.cache_index,
            flights=self.flights,
            shared_flights=self.shared_flights,
            keys=keys,
            embedder=self.embedder,
            thresholds=self.thresholds,
        )
        self._nursery = nursery
        # Unset: the models' own timeouts (first byte, idle, total) end a request that takes
        # long.
        within = config.server.write_timeout_sec
        self._answer_within = (None if within is None
                               else Deadline(within, "server.write_timeout_sec"))
        #: Bounds the worker threads that load and render workflows.
        self.render_limiter = trio.CapacityLimiter(_RENDER_THREADS)
        #: Durable workflow runs; ``None`` when the run store could not be opened
        #: (``_run_store_error`` says why).
        self.runs: Runs | None = None
        if run_store is not None:
            self.runs = Runs(config=config, store=run_store, runner=self.runner,
                             nursery=nursery, render_limiter=self.render_limiter)
        self._run_store_error = run_store_error
        self.comparisons = Comparisons.configured(  # ``learned.compare``; None: off
            config, runner=self.runner, nursery=nursery, stats=self.stats,
            spend=SpendWindow() if shared is None else SharedSpendWindow(shared.redis),
            report=self.report_feedback, feedback=self.policy.store is not None)

    def _chat_node(
        self, ctx: RunContext, *, sink: trio.MemorySendChannel[Any] | None = None,
        deadline: Deadline | None = None,
    ) -> RunNode:
        """What the executor runs for a chat's one node."""
        runner = self.runner

        def run(node: Node, inputs: Mapping[str, Any]) -> Awaitable[NodeResult]:
            return runner.run(node, ctx=ctx, sink=sink, deadline=deadline)

        return run

    async def complete(self, request: ChatRequest, ctx: RunContext, *,
                       request_id: str | None = None) -> NodeResult:
        """Answer a non-streaming request, within ``server.write_timeout_sec`` if set; with
        ``request_id``, a routed answer may be compared (``learned.compare``).

        Raises:
            DeadlineExceeded: no answer within ``server.write_timeout_sec``.
            RouterError: the request failed.
        """
        started = trio.current_time()
        status, done = "cancelled", None  # a client that leaves cancels its handler
        try:
            outputs = await execute(plan_chat(request),
                                    self._chat_node(ctx, deadline=self._answer_within))
            result: NodeResult = outputs["chat"]
            status, done = "ok", result
            if request_id is not None and self.comparisons is not None:
                # starts at the caller's next checkpoint, after ``remember_decision``
                self.comparisons.offer(request_id, request, result, ctx)
            return result
        except RouterError as exc:
            self.stats.record_error(exc.code)
            status = exc.code
            raise
        finally:
            self._finished(started, status, done, stream=False)

    async def open_stream(self, request: ChatRequest, ctx: RunContext, *,
                          request_id: str | None = None) -> ChatStream:
        """Start a streaming request; return once its first events are ready. With
        ``request_id``, a routed answer may be compared once it has streamed whole.

        Raises:
            RouterError: nothing could be streamed (every backend failed before its first byte).
        """
        stream = ChatStream()
        stream.start(self._nursery, partial(self._stream_chat, request, ctx, request_id))
        try:
            await stream.open()
        except RouterError as exc:
            self.stats.record_error(exc.code)
            raise
        return stream

    async def _stream_chat(self, request: ChatRequest, ctx: RunContext, request_id: str | None,
                           send: trio.MemorySendChannel[Any]) -> None:
        started = trio.current_time()
        status, done = "cancelled", None  # a client that leaves cancels its stream
        try:
            outputs = await execute(plan_chat(request), self._chat_node(ctx, sink=send))
            status, done = "ok", outputs["chat"]
            if request_id is not None and self.comparisons is not None:
                self.comparisons.offer(request_id, request, outputs["chat"], ctx)
        except RouterError as exc:
            status = exc.code
            raise
        finally:
            self._finished(started, status, done, stream=True)

    def _finished(self, started: float, status: str, done: NodeResult | None, *,
                  stream: bool) -> None:
        """Add a chat request to :attr:`recent` (routing facts only, no text)."""
        at, ms = time.time(), (trio.current_time() - started) * 1000
        if done is None:
            entry = _new_finished(at=at, ms=ms, status=status, stream=stream)
        else:
            served, usage = done.served, done.result.usage
            paid = served.dedup != "FOLLOWER"  # a joiner shares its leader's call
            entry = _new_finished(
                at=at, ms=ms, status=status, stream=stream, model=served.model,
                tier=served.tier, cache=served.cache, dedup=served.dedup,
                cost_usd=done.cost_usd if paid else 0.0, input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens)
        self.recent.add(entry)

    # ---- what the API reads and reports -------------------------------------------------

    async def backends_snapshot(self) -> list[dict[str, object]]:
        """``GET /v1/backends``: every backend's health and load (and the sidecar's); totals
        of all processes when shared."""
        entries = self.pool.snapshot(trio.current_time())
        if self.shared_totals is not None:
            entries = await self.shared_totals.backends_snapshot(entries)
        if self.policy.sidecar is not None:
            entries.append(self.policy.sidecar.snapshot())
        return entries

    async def stats_snapshot(self) -> dict[str, object]:
        """``GET /stats``: the router's counters, and the money spent and saved (of all
        processes when shared)."""
        if self.shared_totals is not None:
            snapshot = await self.shared_totals.stats_snapshot()
        else:
            snapshot = self.stats.snapshot()
        cache = snapshot["cache"]
        assert isinstance(cache, dict)
        if isinstance(self.cache, SharedCache):
            cache["shared"] = self.cache.counters()
        if self.embedder is not None:
            cache["embedder"] = self.embedder.snapshot()
        return snapshot

    # ---- what GET /metrics shows ------------------------------------------------------------

    def request_started(self) -> None:
        """An HTTP chat request came in (the in-flight gauge)."""
        self.stats.in_flight += 1

    def request_done(self, labels: RequestLabels, *, seconds: float,
                     first_byte_seconds: float) -> None:
        """The HTTP chat request :meth:`request_started` counted is over: count it, with its
        labels (protocol, model, tier, cache, status) and latencies."""
        self.stats.in_flight -= 1
        self.stats.record_exchange(labels, seconds=seconds,
                                   first_byte_seconds=first_byte_seconds)

    def _gauges(self) -> dict[str, float]:
        queued, running = self.runs.counts() if self.runs is not None else (0, 0)
        gauges: dict[str, float] = {"gauge:in_flight": self.stats.in_flight,
                                    "gauge:runs_queued": queued, "gauge:runs_running": running}
        if self.comparisons is not None:
            gauges["gauge:compare_running"] = self.comparisons.running
        return gauges

    async def _totals(self) -> tuple[dict[str, float], str]:
        """Totals and gauges by flat name: every process's (``"shared"``), or this one's
        (``"process"``: no Redis, or Redis down)."""
        if self.shared_totals is not None:
            return await self.shared_totals.totals()
        return flatten(self.stats, self.pool) | self._gauges(), "process"

    async def metrics_snapshot(self) -> MetricsSnapshot:
        """``GET /metrics``: the totals and gauges of every process (this one's while Redis
        is down, or without it), and this process's view of backends and Redis."""
        totals, scope = await self._totals()
        backends = {b.name: b.status if b.configured else "down"
                    for b in self.pool.backends.values()}
        return MetricsSnapshot(totals=totals, scope=scope, backends=backends,
                               redis_up=None if self.shared is None else self.shared.redis.up)

    async def recent_snapshot(self) -> dict[str, object]:
        """``GET /stats/recent``: the last chat requests, and the rate and latency over the
        last minute; of every process when shared (``scope``: ``shared``), else (or while
        Redis is down: ``process``) of this one."""
        if self.shared_recent is not None:
            return await self.shared_recent.snapshot()
        return {**self.recent.snapshot(time.time()), "scope": "process", "processes": 1}

    def remember_decision(self, request_id: str, served: Served, *, tenant: str = "") -> None:
        """Keep how a request was routed, so feedback can name it by its request id; and,
        for a cache hit, whose it was (feedback on it moves that tenant's threshold)."""
        self.policy.remember(request_id, score=served.score, tier=served.tier,
                             model=served.model, belief=served.belief)
        if served.cache == "HIT":
            self._cache_hits[request_id] = tenant

    async def report_feedback(self, report: FeedbackReport) -> Mapping[str, Any]:
        """``POST /v1/feedback``: record one quality report and recalibrate. A report on a
        cache hit is about the cache, not the route: it moves the tenant's similarity
        threshold (``engine.runtime.cache_thresholds``) and leaves routing alone. A report on
        a request another process answered is filed there (``engine.runtime.shared_reports``).

        Raises:
            NotFound: the report names a request no router process remembers.
            RequestInvalid: feedback is not enabled.
            StoreUnavailable: the request is another process's, and Redis does not answer.
        """
        try:
            return await self._report_here(report)
        except NotFound:
            reports = self.reports
            owner = None if reports is None else reports.owner(report.request_id)
            if reports is None or owner is None:
                raise
            return await reports.forward(owner, report)

    async def _report_here(self, report: FeedbackReport) -> dict[str, Any]:
        tenant = None if report.request_id is None else self._cache_hits.get(report.request_id)
        if tenant is not None:
            change = await self.thresholds.report(tenant, report.quality)
            return {"accepted": True, "cache_threshold": change}
        return await self.policy.feedback(report)

    async def reset_learning(self) -> dict[str, Any]:
        """``DELETE /v1/routing/learning``: forget what feedback taught the trained router.

        Raises:
            RequestInvalid: online learning is not enabled.
            StoreUnavailable: the shared state is unreachable (nothing was reset).
        """
        return await self.policy.reset_learning()

    async def routing_state(self, *, tenant: str | None = None) -> dict[str, Any]:
        """``GET /v1/routing``: the thresholds now, the data behind them, the last changes;
        the cache's similarity threshold for ``tenant`` (the caller), or with ``None`` (the
        admin key) for every tenant feedback moved."""
        state = await self.policy.describe()
        if self.cache is not None:
            state["cache"] = self.thresholds.describe(tenant)
        if self.comparisons is not None:
            state["compare"] = await self.comparisons.describe(*await self._totals())
        return state

    async def reset_cache_thresholds(self, tenants: list[str] | None) -> int:
        """Admin: ``tenants`` (or every tenant) back to ``cache.similarity_thresh``.

        Raises:
            StoreUnavailable: the shared store (Redis) did not answer; nothing was reset.
        """
        return await self.thresholds.reset(tenants)

    # ---- workflows ------------------------------------------------------------------------

    def workflow_runs(self) -> Runs:
        """The durable runs.

        Raises:
            StoreUnavailable: the run store could not be opened at start-up.
        """
        if self.runs is None:
            raise StoreUnavailable(f"workflow runs are unavailable: {self._run_store_error}")
        return self.runs

    def run_store_health(self) -> dict[str, Any]:
        """The run store's part of ``GET /health``."""
        if self.runs is None:
            return {"status": "error", "error": self._run_store_error}
        return self.runs.store.health()

    def health(self) -> dict[str, Any]:
        """``GET /health``: ``ok``, or ``degraded`` with the part that is not (the router
        still serves: chat completions need neither the run store nor Redis)."""
        parts = {"runs": self.run_store_health()}
        if self.shared is not None:
            parts["redis"] = self.shared.health()
        ok = all(part["status"] == "ok" for part in parts.values())
        return {"status": "ok" if ok else "degraded", **parts}



@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """What ``GET /metrics`` renders. ``totals`` holds flat names (``engine.runtime.
    shared_totals.flatten``, and ``gauge:*``); ``scope`` is ``shared`` when they are every
    process's; ``backends`` maps each backend to its health; ``redis_up`` is None without
    Redis."""

    totals: dict[str, float]
    scope: str
    backends: Mapping[str, str]
    redis_up: bool | None


@asynccontextmanager
async def open_gateway(
    config: Config, *, models: Models | None = None, redactor: Redactor | None = None
) -> AsyncIterator[Gateway]:
    """Run a gateway for the lifetime of the block (the server's lifetime); ``models`` are
    loaded (in a worker thread) unless given, and ``redactor`` (what keeps the config's
    secrets out of answers and errors) is built from the config unless given."""
    if models is None:
        models = await trio.to_thread.run_sync(load_models, config)
    settings = config.learned
    retention_days = settings.feedback_retention_days
    opened = FeedbackStore(
        config.path(settings.feedback_db),
        base=(config.classifier.tier1_max, config.classifier.tier2_max),
        retention_sec=None if retention_days is None else retention_days * 86400,
    )
    store: FeedbackStore | None = opened
    try:
        await opened.open()
        await opened.count_backlog()
    except RouterError as exc:
        # Routing works without it; only feedback and calibration are off.
        logging.getLogger("llm_router").warning("feedback is disabled: %s", exc.message)
        store = None
        await opened.close()
    key_store: KeyStore | None = None
    try:
        transport = PooledTransport(max_connections=config.upstream.max_connections_per_origin,
                                    keepalive_expiry=config.upstream.keepalive_expiry_sec)
        async with (
            transport,
            _maybe_shared(config) as shared,
        ):
            key_store = await _open_key_store(config, shared)
            # Inside the shared block: a Redis run store gives its leases up (``runs.close``)
            # while its client is still open.
            run_store, run_store_error = await _open_run_store(config, shared)
            runs: Runs | None = None
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(transport.expire_idle)
                    upstream = UpstreamClient(transport,
                                              redactor=redactor or Redactor.for_config(config))
                    sidecar = None
                    if settings.sidecar_url is not None:
                        sidecar = Sidecar(settings.sidecar_url,
                                          timeout_ms=settings.sidecar_timeout_ms,
                                          upstream=upstream)
                    policy = RoutingPolicy(config, learned=models.learned, sidecar=sidecar,
                                           store=store)
                    if shared is not None and store is not None:
                        policy.share(shared)
                    await policy.load()
                    keys = _key_gate(key_store, shared)
                    embedder = None
                    if config.cache.enabled and config.cache.embedder is not None:
                        embedder = RemoteEmbedder(config.cache.embedder, upstream)
                        nursery.start_soon(embedder.run)
                    gateway = Gateway(config, upstream=upstream, nursery=nursery,
                                      matcher=models.matcher, policy=policy,
                                      run_store=run_store, run_store_error=run_store_error,
                                      shared=shared, keys=keys, embedder=embedder)
                    await gateway.thresholds.open(shared)
                    if keys is not None:
                        await nursery.start(keys.run)
                    runs = gateway.runs
                    if runs is not None:
                        await nursery.start(runs.maintain)
                    try:
                        yield gateway
                    finally:
                        nursery.cancel_scope.cancel()
            finally:
                with trio.CancelScope(shield=True):
                    if runs is not None:
                        await runs.close()
                    if run_store is not None:
                        await run_store.close()
    finally:
        with trio.CancelScope(shield=True):
            if key_store is not None:
                await key_store.close()
            if store is not None:
                await store.close()


async def _open_key_store(config: Config, shared: Shared | None) -> KeyStore | None:
    """The client key store (``server.admin_key`` set, else None): Redis's when state is
    shared (keys, limits and budgets are then every process's), else the SQLite file.

    Raises:
        StoreUnavailable: the SQLite file cannot be opened. Client keys are the front door: a
            store that cannot be opened stops the start (one message) rather than let anyone
            in. A Redis that is down is not that: the gate loads the keys when it answers.
    """
    if config.server.admin_key is None:
        return None
    store: KeyStore = (RedisKeyStore(shared.redis) if shared is not None
                       else SqliteKeyStore(config.path(config.state.path)))
    await store.open()
    return store


def _key_gate(store: KeyStore | None, shared: Shared | None) -> KeyGate | None:
    if store is None:
        return None
    if isinstance(store, RedisKeyStore):
        assert shared is not None
        return SharedKeyGate(store, shared)
    return KeyGate(store)


async def _open_run_store(config: Config, shared: Shared | None
                          ) -> tuple[RunStore | None, str | None]:
    """The run store: Redis's when state is shared (runs are then every process's), else
    the SQLite file; ``(None, why)`` if it cannot be opened. Chat completions do not need
    it: they are served anyway, and what is wrong shows in ``/health``."""
    store: RunStore = (RedisRunStore(shared.redis) if shared is not None
                       else SqliteRunStore(config.path(config.state.path)))
    try:
        await store.open()
    except StoreUnavailable as exc:
        logging.getLogger("llm_router").error("workflow runs are unavailable: %s", exc.message)
        return None, exc.message
    return store, None


@asynccontextmanager
async def _maybe_shared(config: Config) -> AsyncIterator[Shared | None]:
    address = config.state.redis
    if address is None:
        yield None
        return
    async with open_shared(address, timeout=config.state.redis_timeout_ms / 1000) as shared:
        yield shared
