"""What the executor does for one node: the router's per-node decisions, in order.

1. **Route**: the pinned model, or the tier from the node or the complexity score.
2. **Cache**: a request whose exact part matches a cached one and whose final message is the
   same or similar enough is answered from the cache, at no cost.
3. **Dedup**: a miss identical to a request already in flight joins that flight instead of
   calling upstream again; with Redis, a flight led in another process is followed
   (``engine.runtime.shared_flights``).
4. **Call with failover** (``engine.runtime.failover``), in a flight run in the gateway's background
   nursery, so the leader's client leaving does not cancel it while followers listen; with
   dedup off, a non-streaming call runs in the caller's own task (nobody else can listen).
5. **Account** (once per flight), and store the answer in the cache.

The same path serves a plain chat completion and each step of a workflow, and a node's
deadline is applied here for both (``server.write_timeout_sec`` for a non-streamed chat, an
op's ``timeout_sec`` for each attempt of a workflow op): past it, the node's caller gets
:class:`~engine.errors.DeadlineExceeded` naming the setting. A streaming node
relays to a ``sink`` channel: a :class:`Served` head, then lists of events; after the head has
gone out, a failure propagates to the caller, who ends the client's stream with an error
event. The sink's pace is the client's: the flight reads the upstream no faster than its
furthest listener takes, and cuts off one that falls too far behind (``engine.dedup``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from engine.core.cache.key import RequestKey, request_key
from engine.core.cache.responses import SETTLED_ABOVE, CacheHit, PreparedText, ResponseCache
from engine.core.config import Config, ModelConfig
from engine.core.keys import KeyRecord
from engine.core.planner import Node
from engine.core.routing.decide import Route
from engine.core.routing.learned import Belief
from engine.core.stats import Stats
from engine.errors import DeadlineExceeded, Forbidden, RouterError
from engine.frozen import frozen_constructor
from engine.messages import (
    ChatRequest,
    ChatResult,
    Event,
    Finish,
    TextDelta,
    TextPart,
    ThinkingDelta,
    ThinkingPart,
    ToolCallDelta,
    ToolCallStart,
    Usage,
    estimate_tokens,
)

from . import channels
from .dedup import FlightRegistry, Publish
from .failover import Answer, BackendCaller
from .keys import KeyGate
from .policy import RoutingPolicy

if TYPE_CHECKING:
    from .cache_index import IndexWriter
    from .cache_thresholds import TenantThresholds
    from .embeddings import RemoteEmbedder
    from .shared_flights import SharedFlights

__all__ = ["Deadline", "NodeResult", "NodeRunner", "RunContext", "Served"]

@dataclass(frozen=True, slots=True)
class RunContext:
    """Per-request facts the node decisions need: who asks, and the cache controls
    (``Cache-Control: no-cache`` skips the lookup, ``no-store`` the lookup and the store)."""

    tenant: str = ""
    cache_read: bool = True
    cache_write: bool = True
    #: The client key that asked (its limits apply to every upstream call); None: none.
    key: KeyRecord | None = None


@dataclass(frozen=True, slots=True)
class Served:
    """Who answered a node and how, for the ``X-LLM-Router-*`` headers."""

    model: str
    tier: int
    score: int | None
    router: str
    cache: str = "MISS"  # HIT | MISS
    similarity: float | None = None
    dedup: str | None = None  # LEADER | FOLLOWER
    #: The client key's ``X-RateLimit-*`` values at admission, if it has limits.
    limits: Mapping[str, str] | None = None
    #: Upstream calls made for it (backends tried, failed ones included); 0 from the cache.
    attempts: int = 1
    #: The trained router's belief about the request (feedback on it teaches from this);
    #: kept in this process, never sent to another.
    belief: Belief | None = dataclasses.field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Deadline:
    """How long a node may take to answer, and the setting that says so (the 504 names it)."""

    seconds: float
    setting: str


@dataclass(frozen=True, slots=True)
class NodeResult:
    result: ChatResult
    served: Served
    cost_usd: float
    saved_usd: float


_new_served = frozen_constructor(Served)
_new_node_result = frozen_constructor(NodeResult)


class NodeRunner:
    """Runs nodes for the executor; shares the pool, cache, flights and stats."""

    def __init__(
        self,
        *,
        config: Config,
        caller: BackendCaller,
        stats: Stats,
        cache: ResponseCache | None,
        flights: FlightRegistry,
        cache_index: IndexWriter | None = None,
        policy: RoutingPolicy,
        shared_flights: SharedFlights | None = None,
        keys: KeyGate | None = None,
        embedder: RemoteEmbedder | None = None,
        thresholds: TenantThresholds | None = None,
    ) -> None:
        self.config = config
        self.keys = keys
        self.policy = policy
        self.caller = caller
        self.stats = stats
        self.cache = cache
        #: The cache's vector-index writer: a lookup holds its graphs still.
        self.cache_index = cache_index
        self.flights = flights
        #: Dedup across processes (``state.redis_url``), after the local flights.
        self.shared_flights = shared_flights
        #: The cache's vectors from ``cache.embedder``; None: the packaged table's.
        self.embedder = embedder
        #: Per-tenant similarity thresholds (feedback on cached answers); None: the cache's.
        self.thresholds = thresholds

    async def run(
        self,
        node: Node,
        *,
        ctx: RunContext,
        request: ChatRequest | None = None,
        sink: trio.MemorySendChannel[Any] | None = None,
        prefer: str | None = None,
        deadline: Deadline | None = None,
    ) -> NodeResult:
        """Run one node; with ``sink``, stream it there (see the module docstring).

        ``request`` is the node's call when it is made at run time (a workflow op's rendered
        prompt), else the node's own. ``prefer`` names a backend to use if it is as healthy
        as the best of the tier (a workflow chain keeps its predecessor's backend, whose
        prompt cache is warm).

        Raises:
            DeadlineExceeded: no answer within ``deadline``.
            RouterError: the node failed.
        """
        if request is None:
            request = node.request
            if request is None:
                raise RouterError(f"node {node.name!r} has no request")
        if ctx.key is not None and self.keys is not None:
            return await self._run_for_key(node, request, ctx, sink, prefer, deadline)
        return await self._run_within(node, request, ctx, sink, prefer, deadline)

    async def _run_within(
        self, node: Node, request: ChatRequest, ctx: RunContext,
        sink: trio.MemorySendChannel[Any] | None, prefer: str | None,
        deadline: Deadline | None,
    ) -> NodeResult:
        if deadline is None:
            return await self._run(node, request, ctx, sink, prefer)
        try:
            with trio.fail_after(deadline.seconds):
                return await self._run(node, request, ctx, sink, prefer)
        except trio.TooSlowError:
            raise DeadlineExceeded(
                f"no answer within {deadline.setting} ({deadline.seconds} s)"
            ) from None

    async def _run_for_key(
        self, node: Node, request: ChatRequest, ctx: RunContext,
        sink: trio.MemorySendChannel[Any] | None, prefer: str | None,
        deadline: Deadline | None,
    ) -> NodeResult:
        """The node within its client key's rights: the model it may use, its rate limits
        (admitted before anything is called) and its budget (the call's most expensive
        outcome reserved, the real cost settled after: nothing for a cached answer or for
        sharing another caller's call)."""
        key, gate = ctx.key, self.keys
        assert key is not None and gate is not None
        gate.check_model(key, request.model or "auto")
        candidates = self._models_within(key, request)
        tokens = _input_tokens(request) + (request.max_tokens or _DEFAULT_OUTPUT_TOKENS)
        most = max((_cost(m, _input_tokens(request), request.max_tokens) for m in candidates),
                   default=0.0)
        ticket = await gate.admit(key, tokens=tokens, max_cost_usd=most)
        try:
            done = await self._run_within(node, request, ctx, sink, prefer, deadline)
        except BaseException as error:
            gate.settle(key, ticket, tokens=0, cost_usd=0.0)
            if isinstance(error, RouterError) and ticket.headers:
                # its error carries the key's X-RateLimit-* too (those it has win)
                error.headers = {**ticket.headers, **(error.headers or {})}
            raise
        paid = done.served.cache != "HIT" and done.served.dedup != "FOLLOWER"
        usage = done.result.usage
        tokens, cost = usage.input_tokens + usage.output_tokens, done.cost_usd if paid else 0.0
        gate.settle(key, ticket, tokens=tokens, cost_usd=cost)
        self.stats.record_key(key.id, cost_usd=cost, tokens=tokens)
        if ticket.headers:
            done = dataclasses.replace(
                done, served=dataclasses.replace(done.served, limits=ticket.headers))
        return done

    def _models_within(self, key: KeyRecord, request: ChatRequest) -> list[ModelConfig]:
        """The models a call of ``key`` may end on: a pinned one, else those of the tiers
        its ``max_tier`` allows.

        Raises:
            Forbidden: a pinned model above the key's ``max_tier``.
        """
        cap = key.settings.max_tier
        if request.model is not None:
            model = self.config.model_named(request.model)
            if model is None:
                return []  # routing says it is unknown
            if cap is not None and model.tier > cap:
                raise Forbidden(f"this client key may not use model {request.model!r}: it "
                                f"is tier {model.tier}, the key's max_tier is {cap}")
            return [model]
        return [m for m in self.config.models if cap is None or m.tier <= cap]

    async def _run(
        self, node: Node, request: ChatRequest, ctx: RunContext,
        sink: trio.MemorySendChannel[Any] | None, prefer: str | None,
    ) -> NodeResult:
        route = await self.policy.route(request, tier=node.tier)
        if node.op is not None:
            route = dataclasses.replace(route, cheapest=True)  # a workflow op
        cap = ctx.key.settings.max_tier if ctx.key is not None else None
        if cap is not None and route.pinned is None:
            if route.tier > cap:
                # The cheapest tier that fits is above what the key may use: the best it may.
                route = dataclasses.replace(route, tier=cap, router=route.router + "+capped")
            route = dataclasses.replace(route, max_tier=cap)  # failover stays within it too
        try:
            return await self._serve(request, route, ctx, sink, prefer)
        except RouterError as error:
            if error.routed is None:  # its response says where it was routed, as any does
                model = route.pinned or error.backend
                error.routed = Served(model=model or "", tier=route.tier, router=route.router,
                                      score=route.score.total if route.score is not None else None,
                                      attempts=0)
            raise

    async def _serve(
        self, request: ChatRequest, route: Route, ctx: RunContext,
        sink: trio.MemorySendChannel[Any] | None, prefer: str | None,
    ) -> NodeResult:
        """The routed node: from the cache, a flight it joins, or a call of its own."""
        share = self.config.dedup.enabled
        cache = self.cache if self._cacheable(request) else None
        key = None
        if cache is not None or share:  # neither cache nor dedup: no key to compute
            target = route.pinned or f"tier:{route.tier}"
            key = request_key(request, tenant=ctx.tenant, target=target)

        prepared = None
        if (cache is not None and key is not None and (ctx.cache_read or ctx.cache_write)
                and (len(key.text) > SETTLED_ABOVE or self.embedder is not None)):
            prepared = await self._prepare(cache, key.text)
            if prepared is None:  # the embeddings endpoint failed: no cache this time
                cache = None

        if cache is not None and key is not None and ctx.cache_read:
            threshold = self.thresholds.get(ctx.tenant) if self.thresholds is not None else None
            writer = self.cache_index
            if writer is not None:
                await writer.hold()
            try:
                hit, prepared = cache.lookup_prepared(key, trio.current_time(),
                                                      prepared=prepared, threshold=threshold)
            finally:
                if writer is not None:
                    writer.lock.release()
            if hit is not None:
                return await self._answer_from_cache(hit, route, sink)
            self.stats.cache_misses += 1

        store = cache is not None and ctx.cache_write
        if not share:
            # Nobody can join it: the call runs in this task, a stream relayed straight to
            # its client's ``sink``.
            fly = partial(self._fly, request, route, key, store, sink is not None, prefer,
                          prepared, dedup="LEADER")
            if sink is None:
                return await self.flights.run_alone(fly)
            return await self.flights.run_alone(fly, publish=partial(_relay, sink))
        run = partial(self._fly, request, route, key, store, sink is not None, prefer, prepared)
        if share and key is not None and self.shared_flights is not None:
            run = partial(self.shared_flights.fly, key.full, run)
        listener = self.flights.join(key.full if key is not None else b"", run, share=share)
        role = "LEADER" if listener.leader else "FOLLOWER"
        try:
            if sink is not None:
                # What was already sent, then the rest live, at this client's pace. A head
                # that came from another process's flight already says FOLLOWER.
                while (item := await listener.take()) is not None:
                    if type(item) is Served:
                        item = dataclasses.replace(item, dedup=item.dedup or role)
                    await channels.send(sink, item)
            done: NodeResult = await listener.flight.wait()
        finally:
            listener.leave()
        # The local flight followed one led in another process: every caller here follows.
        leader = listener.leader and done.served.dedup is None
        role = "LEADER" if leader else "FOLLOWER"
        if not leader:
            self.stats.record_dedup(done.cost_usd, reference_usd=done.cost_usd + done.saved_usd)
        return dataclasses.replace(done, served=dataclasses.replace(done.served, dedup=role))

    async def _prepare(self, cache: ResponseCache, text: str) -> PreparedText | None:
        """``text`` made ready for the cache: in a worker thread when long, with its vector
        from ``cache.embedder`` when there is one (``None``: that failed in time)."""
        if len(text) > SETTLED_ABOVE:
            # normalised and fingerprinted whole (~5 ms per 1,000 characters) off the loop; a
            # shorter text on it, where the thread hop would cost more than it saves
            prepared = await trio.to_thread.run_sync(cache.prepare, text)
        else:
            prepared = cache.prepare(text)
        if self.embedder is None or prepared.fingerprint is None:
            return prepared
        vectors = await self.embedder.vectors([prepared.norm])
        if vectors is None:
            return None
        return PreparedText(prepared.norm, prepared.fingerprint.with_vector(vectors[0]))

    # ---- decisions ----------------------------------------------------------------------

    def _cacheable(self, request: ChatRequest) -> bool:
        settings = self.config.cache
        if not settings.enabled or request.n != 1:
            return False
        if settings.deterministic_only:
            return request.temperature == 0 or request.seed is not None
        return True

    async def _fly(
        self, request: ChatRequest, route: Route, key: RequestKey | None, store: bool,
        stream: bool, prefer: str | None, prepared: PreparedText | None, publish: Publish,
        *, dedup: str | None = None,
    ) -> NodeResult:
        """The call and its accounting. ``dedup``: the caller's role when it is known here
        (a call run alone); a flight's is set by each listener."""
        if stream:
            answer: Answer = await self.caller.stream(
                request, route, publish=publish, prefer=prefer,
                head=lambda model, failovers: self._served(route, model, failovers + 1),
            )
        else:
            answer = await self.caller.complete(request, route, prefer=prefer)
        done = self._account(request, route, answer, dedup)
        if store and self.cache is not None and key is not None and _worth_caching(answer.result):
            self.cache.store(key, answer.result, model=answer.model.name,
                             tier=answer.model.tier, cost_usd=done.cost_usd,
                             reference_usd=done.cost_usd + done.saved_usd,
                             now=trio.current_time(), prepared=prepared)
        return done

    async def _answer_from_cache(
        self, hit: CacheHit, route: Route, sink: trio.MemorySendChannel[Any] | None
    ) -> NodeResult:
        entry = hit.entry
        served = _new_served(
            model=entry.model, tier=entry.tier,
            score=route.score.total if route.score is not None else None,
            router=route.router, cache="HIT", similarity=round(hit.similarity, 4), attempts=0,
            belief=route.belief,
        )
        self.stats.record_cache_hit(entry.cost_usd, reference_usd=entry.reference_usd)
        if sink is not None:
            await channels.send(sink, served)
            await channels.send(sink, _replay(entry.result))
        return _new_node_result(entry.result, served, 0.0, 0.0)

    # ---- accounting ---------------------------------------------------------------------

    @staticmethod
    def _served(route: Route, model: ModelConfig, attempts: int = 1,
                dedup: str | None = None) -> Served:
        score = route.score.total if route.score is not None else None
        return _new_served(model=model.name, tier=model.tier, score=score,
                           router=route.router, attempts=attempts, belief=route.belief,
                           dedup=dedup)

    def _account(self, request: ChatRequest, route: Route, answer: Answer,
                 dedup: str | None = None) -> NodeResult:
        result = answer.result
        usage = result.usage
        if usage.input_tokens == 0 and usage.output_tokens == 0:
            # The upstream reported nothing (some local servers): estimate, so cost and
            # savings are not silently zero.
            usage = Usage(
                input_tokens=estimate_tokens(
                    (request.system or "") + "".join(m.text for m in request.messages)
                ),
                output_tokens=sum(
                    estimate_tokens(choice.text)
                    + sum(estimate_tokens(c.arguments) for c in choice.tool_calls)
                    for choice in result.choices
                ),
            )
        cost, saved = self.stats.record(answer.model, usage)
        self.stats.failovers += answer.failovers
        served = self._served(route, answer.model, answer.failovers + 1, dedup)
        return _new_node_result(result, served, cost, saved)


_DEFAULT_OUTPUT_TOKENS = 4096  # a request that sets no max_tokens may cost this much output


def _input_tokens(request: ChatRequest) -> int:
    return estimate_tokens((request.system or "") + "".join(m.text for m in request.messages))


def _cost(model: ModelConfig, input_tokens: int, max_tokens: int | None) -> float:
    output = max_tokens or _DEFAULT_OUTPUT_TOKENS
    return (input_tokens * model.cost_per_1k_in + output * model.cost_per_1k_out) / 1000.0


def _worth_caching(result: ChatResult) -> bool:
    """Complete, non-empty answers only: never a truncated or filtered one."""
    return result.stop_reason in ("stop", "tool_calls") and bool(result.content)


async def _relay(sink: trio.MemorySendChannel[Any], item: Any, size: int = 0) -> float:
    """A stream's ``publish`` when nobody shares it: ``item`` goes to the one client's
    ``sink``, its head marked as the leader's. Returns the seconds waited for the client."""
    if type(item) is Served:
        item = dataclasses.replace(item, dedup=item.dedup or "LEADER")
    try:
        sink.send_nowait(item)
        return 0.0
    except trio.WouldBlock:  # the client is behind: wait for it (not in here: see channels)
        pass
    started = trio.current_time()
    await sink.send(item)
    return trio.current_time() - started


def _replay(result: ChatResult) -> list[Event]:
    """A cached answer as the events of a stream."""
    events: list[Event] = []
    index = 0
    logprobs = result.logprobs  # all of them ride on the text
    for part in result.content:
        if isinstance(part, TextPart):
            events.append(TextDelta(part.text, logprobs))
            logprobs = None
        elif isinstance(part, ThinkingPart):
            if part.redacted:
                events.append(ThinkingDelta(part.thinking, redacted=True))
            else:
                events.append(ThinkingDelta(part.thinking, part.signature))
        else:
            events.append(ToolCallStart(index, part.id, part.name))
            events.append(ToolCallDelta(index, part.arguments))
            index += 1
    events.append(Finish(result.stop_reason, result.stop_sequence, result.usage,
                         result.upstream_model))
    return events

