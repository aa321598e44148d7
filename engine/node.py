"""What the executor does for one node: the router's per-node decisions.

For every node, in order:

1. route: the pinned model, or the tier from the node or the complexity score;
2. (cache lookup and in-flight dedup slot in here, before any upstream call);
3. choose backends: the pool orders the tier's usable backends, then the higher tiers';
4. call with failover: connection refused, 5xx, 429 and timeouts *before the first byte has
   been relayed* move on to the next backend; the failure is reported to the pool;
5. account: cost and savings from the upstream's reported usage.

A streaming node relays to a ``sink`` channel: first a :class:`Served` head (which backend
answered, sent once the first events are in hand, so failover stays possible until then),
then lists of events. After the head has gone out, an upstream failure propagates to the
caller, who ends the client's stream with an error event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import trio

from .config import Config, ModelConfig
from .errors import (
    NoBackendAvailable,
    RateLimited,
    RouterError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from .messages import ChatRequest, ChatResult, Event, ResultBuilder, Usage
from .planner import Node
from .pool import BackendPool, BackendState
from .providers import Provider, provider_for
from .routing import Route, decide_route
from .scoring import estimate_tokens
from .stats import Stats
from .upstream import UpstreamClient, failure_kind

__all__ = ["NodeResult", "NodeRunner", "Served"]


@dataclass(frozen=True, slots=True)
class Served:
    """Who answered a node, for the ``X-LLM-Router-*`` headers."""

    model: str
    tier: int
    score: int | None
    router: str
    cache: str = "MISS"


@dataclass(frozen=True, slots=True)
class NodeResult:
    result: ChatResult
    served: Served
    cost_usd: float
    saved_usd: float


class NodeRunner:
    """Runs nodes for the executor; shares the pool, stats and upstream client."""

    def __init__(
        self, *, config: Config, pool: BackendPool, stats: Stats, upstream: UpstreamClient
    ) -> None:
        self.config = config
        self.pool = pool
        self.stats = stats
        self.upstream = upstream
        self._providers: dict[str, Provider] = {
            m.name: provider_for(m.provider) for m in config.models
        }

    # ---- decisions ----------------------------------------------------------------------

    def route(self, node: Node) -> Route:
        assert node.request is not None
        return decide_route(node.request, self.config, tier=node.tier)

    def backends_for(self, route: Route) -> list[BackendState]:
        """Backends to try, in order; raises when none can be tried."""
        now = trio.current_time()
        if route.pinned is not None:
            backend = self.pool[route.pinned]
            if backend.configured and now >= backend.rate_limited_until:
                return [backend]
            raise self._nothing_to_try([backend], now)
        order, skipped = self.pool.candidates(route.tier, now)
        if not order:
            raise self._nothing_to_try(skipped, now)
        return order

    # ---- running ------------------------------------------------------------------------

    async def run(self, node: Node, inputs: Mapping[str, Any]) -> NodeResult:
        """Run a non-streaming node."""
        request = self._request(node)
        route = self.route(node)
        errors: list[UpstreamError] = []
        for backend in self.backends_for(route):
            model = backend.config
            backend.begin()
            started = trio.current_time()
            try:
                with trio.fail_after(model.timeouts.total_sec):
                    result = await self.upstream.complete(model, self._providers[model.name],
                                                          request)
            except trio.TooSlowError:
                error: UpstreamError = UpstreamTimeout(
                    f"{model.name} exceeded its total deadline", backend=model.name
                )
            except UpstreamError as exc:
                error = exc
            else:
                backend.succeeded(trio.current_time() - started)
                return self._account(request, route, model, result, failovers=len(errors))
            finally:
                backend.end()
            self._report(backend, error)
            errors.append(error)
            if not error.retryable or route.pinned is not None:
                break
        raise self._exhausted(errors, route)

    async def run_stream(
        self, node: Node, inputs: Mapping[str, Any], *, sink: trio.MemorySendChannel[Any]
    ) -> NodeResult:
        """Run a streaming node, relaying to ``sink`` (see the module docstring)."""
        request = self._request(node)
        route = self.route(node)
        errors: list[UpstreamError] = []
        for backend in self.backends_for(route):
            model = backend.config
            backend.begin()
            started = trio.current_time()
            try:
                with trio.fail_after(model.timeouts.total_sec):
                    stream = await self.upstream.open_stream(
                        model, self._providers[model.name], request
                    )
            except trio.TooSlowError:
                error: UpstreamError = UpstreamTimeout(
                    f"{model.name} exceeded its total deadline", backend=model.name
                )
            except UpstreamError as exc:
                error = exc
            else:
                backend.succeeded(trio.current_time() - started)
                try:
                    result = await self._relay(stream, model, sink, route, started)
                except UpstreamError as exc:
                    self._report(backend, exc)
                    raise
                finally:
                    backend.end()
                    await stream.aclose()
                return self._account(request, route, model, result, failovers=len(errors))
            backend.end()
            self._report(backend, error)
            errors.append(error)
            if not error.retryable or route.pinned is not None:
                break
        raise self._exhausted(errors, route)

    async def _relay(
        self,
        stream: Any,
        model: ModelConfig,
        sink: trio.MemorySendChannel[Any],
        route: Route,
        started: float,
    ) -> ChatResult:
        builder = ResultBuilder()
        await sink.send(self._served(route, model))
        batch: list[Event] | None = stream.first
        deadline = started + model.timeouts.total_sec
        while batch is not None:
            builder.add(batch)
            await sink.send(batch)
            if builder.finished:
                break
            with trio.move_on_at(deadline) as scope:
                batch = await stream.next_batch()
            if scope.cancelled_caught:
                raise UpstreamTimeout(f"{model.name} exceeded its total deadline",
                                      backend=model.name)
        if not builder.finished:
            raise UpstreamError(f"{model.name} ended its stream early", backend=model.name)
        return builder.result()

    # ---- helpers ------------------------------------------------------------------------

    @staticmethod
    def _request(node: Node) -> ChatRequest:
        if node.request is None:
            raise RouterError(f"node {node.name!r} has no request")
        return node.request

    @staticmethod
    def _served(route: Route, model: ModelConfig) -> Served:
        score = route.score.total if route.score is not None else None
        return Served(model=model.name, tier=model.tier, score=score, router=route.router)

    def _account(
        self, request: ChatRequest, route: Route, model: ModelConfig, result: ChatResult,
        *, failovers: int,
    ) -> NodeResult:
        usage = result.usage
        if usage.input_tokens == 0 and usage.output_tokens == 0:
            # The upstream reported nothing (some local servers): estimate, so cost and
            # savings are not silently zero.
            usage = Usage(
                input_tokens=estimate_tokens(
                    (request.system or "") + "".join(m.text for m in request.messages)
                ),
                output_tokens=estimate_tokens(result.text)
                + sum(estimate_tokens(c.arguments) for c in result.tool_calls),
            )
        cost, saved = self.stats.record(model, usage)
        self.stats.failovers += failovers
        return NodeResult(result, self._served(route, model), cost, saved)

    def _report(self, backend: BackendState, error: UpstreamError) -> None:
        retry_after = error.retry_after if isinstance(error, UpstreamRateLimited) else None
        backend.failed(failure_kind(error), trio.current_time(), message=error.message,  # type: ignore[arg-type]
                       retry_after=retry_after)

    def _nothing_to_try(self, skipped: list[BackendState], now: float) -> RouterError:
        unconfigured = [b for b in skipped if not b.configured]
        limited = [b for b in skipped if b.configured and now < b.rate_limited_until]
        if skipped and len(limited) == len(skipped):
            wait = min(b.rate_limited_until for b in limited) - now
            return RateLimited(
                "every backend that can serve this request is rate-limited; retry in "
                f"{wait:.1f} s",
                retry_after=wait,
            )
        if skipped and len(unconfigured) == len(skipped):
            missing = sorted({b.config.missing_env or "" for b in unconfigured})
            names = ", ".join(b.name for b in unconfigured)
            return NoBackendAvailable(
                f"no backend is configured for this request: {names} need the environment "
                f"variable {' / '.join(missing)}, which is not set"
            )
        details = "; ".join(
            f"{b.name}: "
            + (f"environment variable {b.config.missing_env} is not set" if not b.configured
               else "rate limited" if now < b.rate_limited_until
               else f"down ({b.last_error or 'unreachable'})")
            for b in skipped
        )
        return NoBackendAvailable(f"no backend available: {details or 'none configured'}")

    def _exhausted(self, errors: list[UpstreamError], route: Route) -> RouterError:
        now = trio.current_time()
        for error in errors:
            if isinstance(error, UpstreamRateLimited) and error.retry_after is None and (
                error.backend in self.pool.backends
            ):
                # No Retry-After from the provider: the pool waits its default, and the
                # caller's Retry-After says so.
                until = self.pool[error.backend].rate_limited_until
                error.retry_after = max(0.0, until - now)
        if len(errors) == 1 and (route.pinned is not None or not errors[0].retryable):
            return errors[0]
        if errors and all(isinstance(e, UpstreamRateLimited) for e in errors):
            waits = [e.retry_after for e in errors if isinstance(e, UpstreamRateLimited)
                     and e.retry_after is not None]
            return RateLimited(
                "every backend that can serve this request is rate-limited",
                retry_after=min(waits) if waits else None,
            )
        if errors and not errors[-1].retryable:
            return errors[-1]
        details = "; ".join(e.message for e in errors)
        return NoBackendAvailable(f"all backends failed: {details}")
