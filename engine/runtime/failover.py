"""Calling upstream with failover: the backend-choice and call decisions of a node.

For a routed request, the pool orders the tier's usable backends, then each higher tier's (up
to the route's ``max_tier``, a client key's, when it has one);
connection refused, a 5xx, a 429 and timeouts *before the first byte has been relayed* move on
to the next one, and every failure is reported to the pool. A backend whose host has no free
connection in time (``UpstreamBusy``: the router's own connection limit) also moves on to the
next one, but is not reported: it says nothing of the backend's health. A pinned model is
tried alone.
When nothing can serve, the error explains why: 503 with each backend's reason, or 429 with a
``Retry-After`` when every candidate is rate-limited.

Only backends whose provider serves every optional feature the request uses (penalties,
``logit_bias``, ``logprobs``, ...: :meth:`ChatRequest.features`) are candidates, as if no
other were configured; a request no configured backend can serve, or pinned to one that
cannot, is a 400 naming the parameter. ``n > 1`` is answered in full by every backend: a
provider without native ``n`` gets ``n`` concurrent calls whose choices are merged.

A stream *publishes* what it relays: first a :class:`~engine.node.Served`-like head, built by
the ``head`` callback once the first events are in hand (so failover stays possible until
then), then lists of events, each with the upstream bytes it came from. Publishing may wait
for slow clients (``engine.dedup``); that wait does not count against the backend's
``total_sec``. After the head, an upstream failure propagates to the caller.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import trio

from engine.core.config import ModelConfig
from engine.core.pool import BackendPool, BackendState
from engine.core.routing.decide import Route
from engine.errors import (
    NoBackendAvailable,
    RateLimited,
    RequestInvalid,
    RouterError,
    UpstreamBusy,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from engine.messages import ChatRequest, ChatResult, Event, ResultBuilder, merge_choices
from engine.wire.providers import Provider, provider_for

from .dedup import Publish
from .upstream import UpstreamClient, UpstreamStream, failure_kind

__all__ = ["Answer", "BackendCaller"]

T = TypeVar("T")

log = logging.getLogger("llm_router")


class Answer:
    """A successful call: the result, the model that gave it, and how many backends failed
    before it."""

    __slots__ = ("failovers", "model", "result")

    def __init__(self, result: ChatResult, model: ModelConfig, failovers: int) -> None:
        self.result = result
        self.model = model
        self.failovers = failovers


Verdict = tuple[Any, ...]  # BackendState.verdict()


class BackendCaller:
    """``on_verdict(backend, before)`` is told of every call that changed a backend's
    verdict (``BackendState.verdict``), ``before`` being the old one: shared health publishes
    it to the other processes."""

    def __init__(self, *, pool: BackendPool, upstream: UpstreamClient,
                 models: tuple[ModelConfig, ...],
                 on_verdict: Callable[[BackendState, Verdict], None] | None = None) -> None:
        self.pool = pool
        self.upstream = upstream
        self.on_verdict = on_verdict
        self._providers: dict[str, Provider] = {m.name: provider_for(m.provider) for m in models}

    def backends_for(
        self, route: Route, prefer: str | None = None, *, needs: frozenset[str] = frozenset()
    ) -> list[BackendState]:
        """Backends to try, in order (``prefer`` first when it is as healthy as the best),
        among those serving every feature in ``needs``; raises when none can be tried.

        Raises:
            RequestInvalid: no configured backend serves ``needs`` (or the pinned one does not).
            RateLimited, NoBackendAvailable: every candidate is rate-limited, down or
                unconfigured.
        """
        now = trio.current_time()
        if route.pinned is not None:
            backend = self.pool[route.pinned]
            missing = sorted(needs - self._providers[backend.name].supports)
            if missing:
                raise RequestInvalid(
                    f"{missing[0]} is not supported by model {backend.name!r} (provider "
                    f"{backend.config.provider}); use \"auto\" or a model that supports it",
                    param=missing[0],
                )
            if backend.usable(now):
                return [backend]
            raise self._nothing_to_try([backend], now)
        accepts = None
        if needs or route.max_tier is not None:
            accepts = partial(self._serves, needs, route.max_tier)
        order, skipped = self.pool.candidates(route.tier, now, prefer=prefer, accepts=accepts,
                                              cheapest=route.cheapest)
        if not order:
            if (not skipped and route.max_tier is not None
                    and not any(t <= route.max_tier for t in self.pool.tiers)):
                raise NoBackendAvailable(
                    f"no model is configured at or below tier {route.max_tier}, the client "
                    "key's max_tier")
            if not skipped:  # nothing configured serves what the request needs
                raise self._unservable(needs)
            raise self._nothing_to_try(skipped, now)
        return order

    def _serves(self, needs: frozenset[str], max_tier: int | None, model: ModelConfig) -> bool:
        if max_tier is not None and model.tier > max_tier:
            return False
        return needs <= self._providers[model.name].supports

    async def complete(
        self, request: ChatRequest, route: Route, *, prefer: str | None = None
    ) -> Answer:
        """One non-streaming answer, failing over as the module docstring says."""
        backend, result, failovers = await self._first_success(
            route, prefer, request.features(), lambda model: self._complete_on(model, request)
        )
        backend.end()
        return Answer(result, backend.config, failovers)

    async def stream(
        self, request: ChatRequest, route: Route, *, publish: Publish,
        head: Callable[[ModelConfig, int], Any], prefer: str | None = None,
    ) -> Answer:
        """One streamed answer, relayed to ``publish``: ``head(model, failovers)``, then event
        batches.
        Failover ends once the head is published."""
        backend, stream, failovers = await self._first_success(
            route, prefer, request.features(),
            lambda model: self.upstream.open_stream(model, self._providers[model.name], request),
        )
        model = backend.config
        try:
            await publish(head(model, failovers), 0)
            result = await self._relay(stream, model, publish,
                                       trio.current_time() + model.timeouts.total_sec)
        except UpstreamError as exc:
            self._report(backend, exc)
            raise
        finally:
            backend.end()
            await stream.aclose()
        return Answer(result, model, failovers)

    async def _complete_on(self, model: ModelConfig, request: ChatRequest) -> ChatResult:
        """``model``'s answer with all ``request.n`` choices: a provider without native ``n``
        (or one that sent fewer choices) gets one more call per missing choice."""
        provider = self._providers[model.name]
        if request.n == 1:
            return await self.upstream.complete(model, provider, request)
        results: list[ChatResult] = []
        if provider.native_n:
            results.append(await self.upstream.complete(model, provider, request))
        missing = request.n - sum(len(r.choices) for r in results)
        if missing > 0:
            single = dataclasses.replace(request, n=1)
            results.extend(await self._fan_out(model, provider, single, missing))
        return merge_choices(results, request.n)

    async def _fan_out(
        self, model: ModelConfig, provider: Provider, request: ChatRequest, count: int
    ) -> list[ChatResult]:
        """``count`` concurrent calls; the first failure cancels the rest and is raised alone
        (never as an exception group), so failover sees one error as from a single call."""
        results: list[ChatResult] = []
        failures: list[RouterError] = []

        async def one(cancel: trio.CancelScope) -> None:
            try:
                results.append(await self.upstream.complete(model, provider, request))
            except RouterError as exc:
                failures.append(exc)
                cancel.cancel()

        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(one, nursery.cancel_scope)
        if failures:
            raise failures[0]
        return results

    async def _first_success(
        self, route: Route, prefer: str | None, needs: frozenset[str],
        attempt: Callable[[ModelConfig], Awaitable[T]],
    ) -> tuple[BackendState, T, int]:
        """Try backends in order until ``attempt`` succeeds on one; return it (still counted
        in flight: the caller ends it), the value, and how many failed before it."""
        errors: list[UpstreamError] = []
        for backend in self.backends_for(route, prefer, needs=needs):
            model = backend.config
            now = trio.current_time()
            if errors and not backend.usable(now):
                # It left rotation while earlier ones were tried (another request found it
                # down or rate-limited, or is probing it): leave it alone.
                continue
            probe = backend.begin(now)
            started = now
            error: UpstreamError | None = None
            try:
                # A bare scope and cancelled_caught: trio.fail_after's inside, for less.
                with trio.CancelScope(deadline=now + model.timeouts.total_sec) as total:
                    value = await attempt(model)
            except UpstreamError as exc:
                error = exc
            except BaseException:
                backend.end(probe=probe)
                raise
            if error is None and total.cancelled_caught:
                error = UpstreamTimeout(f"{model.name} exceeded its total deadline",
                                        backend=model.name)
            if error is None:
                before = backend.verdict()
                backend.succeeded(trio.current_time() - started)
                self._changed(backend, before)
                if errors:
                    log.warning("failed over to %s after %d failed attempt(s): %s",
                                backend.name, len(errors), "; ".join(e.message for e in errors))
                return backend, value, len(errors)
            if not isinstance(error, UpstreamBusy):  # the router's limit says nothing of it
                self._report(backend, error, probe=probe)
            backend.end(probe=probe)
            errors.append(error)
            if not error.retryable or route.pinned is not None:
                break
        failure = self._exhausted(errors, route)
        if failure.backend is None and errors:
            failure.backend = errors[-1].backend  # the routing headers' model: the last tried
        raise failure

    @staticmethod
    async def _relay(
        stream: UpstreamStream, model: ModelConfig, publish: Publish, deadline: float
    ) -> ChatResult:
        builder = ResultBuilder()
        batch: list[Event] | None = stream.first
        relayed = 0  # upstream bytes published
        while batch is not None:
            builder.add(batch)
            size, relayed = stream.received - relayed, stream.received
            # Time spent waiting for slow clients is not the backend's: move the deadline.
            deadline += await publish(batch, size)
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

    def _report(self, backend: BackendState, error: UpstreamError, *, probe: bool = False
                ) -> None:
        retry_after = error.retry_after if isinstance(error, UpstreamRateLimited) else None
        before = backend.verdict()
        backend.failed(failure_kind(error), trio.current_time(), message=error.message,  # type: ignore[arg-type]
                       retry_after=retry_after, probe=probe)
        self._changed(backend, before)

    def _changed(self, backend: BackendState, before: Verdict) -> None:
        """Tell ``on_verdict`` of a changed verdict, and the log of a changed health."""
        if backend.verdict() == before:
            return
        if backend.status != before[0]:
            log.warning("backend %s is %s (was %s)%s", backend.name, backend.status, before[0],
                        f": {backend.last_error}" if backend.last_error else "")
        elif backend.rate_limited_until > before[3]:
            log.warning("backend %s is rate-limited for %.1f s", backend.name,
                        backend.rate_limited_until - trio.current_time())
        if self.on_verdict is not None:
            self.on_verdict(backend, before)

    def _unservable(self, needs: frozenset[str]) -> RequestInvalid:
        """The 400 for a routed request whose features no configured backend serves."""
        providers = self._providers.values()
        alone = [f for f in sorted(needs) if not any(f in p.supports for p in providers)]
        if alone:
            return RequestInvalid(
                f"{alone[0]} is not supported by any configured model", param=alone[0]
            )
        names = sorted(needs)
        return RequestInvalid(
            f"{names[0]} is not supported together with {', '.join(names[1:])} by any "
            "configured model",
            param=names[0],
        )

    def _nothing_to_try(self, skipped: list[BackendState], now: float) -> RouterError:
        """The error for a request none of whose ``skipped`` backends can be tried now,
        naming the first of them (the one it would have gone to)."""
        error = self._why_none(skipped, now)
        if skipped:
            error.backend = skipped[0].name
        return error

    def _why_none(self, skipped: list[BackendState], now: float) -> RouterError:
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
               else f"down ({b.last_error or 'unreachable'}; {_next_probe(b, now)})")
            for b in skipped
        )
        return NoBackendAvailable(f"no backend available: {details or 'none configured'}",
                                  retry_after=_soonest(skipped, now))

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
        if errors and all(isinstance(e, UpstreamBusy) for e in errors):
            return UpstreamBusy(
                "every backend that can serve this request has all the connections to its host "
                f"in use: {'; '.join(e.message for e in errors)}")
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
        if errors and all(isinstance(e, UpstreamTimeout) for e in errors):
            return UpstreamTimeout(f"every backend tried timed out: {details}")
        tried = [self.pool[e.backend] for e in errors if e.backend in self.pool.backends]
        return NoBackendAvailable(f"all backends failed: {details}",
                                  retry_after=_soonest(tried, now))


def _soonest(backends: list[BackendState], now: float) -> float | None:
    """Seconds until the first of ``backends`` may be tried again, if any can say."""
    waits = [wait for b in backends if (wait := b.wait(now)) is not None]
    return min(waits) if waits else None


def _next_probe(backend: BackendState, now: float) -> str:
    if backend.probing:
        return "a probe is under way"
    return f"next probe in {max(0.0, backend.probe_at - now):.1f} s"
