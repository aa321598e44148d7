"""The backend pool: each configured model's health and load, and which one to try next.

Sans-IO: the executor reports what happened (``begin`` / ``succeeded`` / ``failed`` / ``end``)
with the current time, and asks for an ordered list of backends to try. Nothing here awaits or
reads a clock, so every state transition is cheap to test exhaustively.

Health (docs/api.md, ``GET /v1/backends``):

* ``healthy`` - in rotation: its last verdict was a success (or no call was made yet).
* ``degraded`` - a call failed with a 5xx or a timeout: still usable, but after every healthy
  backend of the tier (its fallback). Three failures in a row make it ``down``.
* ``down`` - unreachable (connection refused, or reset mid-answer), or three failures in a row:
  skipped. A backend whose API key's variable is unset is shown ``down`` for good.

A failure *ejects* a backend, as outlier detection does in Envoy: it leaves normal rotation
for ``health.probe_interval_sec``. When that ends, the backend is due a *probe*: the next
request that may use it goes to it first, ahead of the healthy ones - one request at a time;
while that probe is under way everything else keeps avoiding the backend. A success makes it
healthy (back in rotation, its ejection history forgotten); a failure ejects it again for
twice as long, at most ``health.max_probe_interval_sec``. The probe is a real request rather
than a synthetic health call, because a paid API bills every call and a real request that
fails still fails over to the next backend: its caller loses only the failed attempt's time.
Any other success (a degraded backend used as a fallback, say) also makes a backend healthy.
A failure of a request that was sent before the ejection, or of a fallback to a degraded
backend, restarts the ejection without lengthening it (only a failed probe doubles it), so a
burst of failures is one ejection; and it never lifts a ``down`` backend to ``degraded``.

A 429 takes a backend out of rotation until its ``Retry-After`` passes, without changing its
health: the provider is fine, it only asked us to wait.

With several router processes (``state.redis_url``) a verdict reached by one process is
shared with the others (``engine.runtime.shared_health``): :meth:`BackendState.verdict` is what
they need to know, and :meth:`BackendState.adopt` takes another process's verdict as it is,
without counting a failure or an ejection here (those stay with the process that saw them).

Among usable backends the order is: a backend due its probe, then health, then fewer requests
in flight, then lower latency (an exponential moving average), then lower price. A workflow op
goes to the cheapest model of its tier: for it, price comes right after health (then load and
latency break ties).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from .config import HealthConfig, ModelConfig

__all__ = ["BackendPool", "BackendState", "Failure"]

Status = Literal["healthy", "degraded", "down"]
Failure = Literal["unreachable", "server_error", "timeout", "rate_limited", "rejected"]

_EWMA_ALPHA = 0.2
_DOWN_AFTER = 3
_DEFAULT_RETRY_AFTER = 1.0
_MAX_DOUBLINGS = 32  # 2**32 base intervals is beyond any cap; bounds the float power
# Order ranks: a probe that is due leads, then each health in turn.
_RANK = {"healthy": 1, "degraded": 2, "down": 3}
_DEFAULT_HEALTH = HealthConfig()


@dataclass(slots=True, eq=False)
class BackendState:
    """One backend (a configured model) and what the router has seen of it."""

    config: ModelConfig
    health: HealthConfig = _DEFAULT_HEALTH
    status: Status = "healthy"
    in_flight: int = 0
    latency_ms: float | None = None
    total_requests: int = 0
    failures: int = 0  # in a row
    ejections: int = 0  # times taken out of rotation, in all
    backoff: int = 0  # ejections since the last success: the next lasts base * 2**(backoff-1)
    probe_at: float = 0.0  # when an ejected backend is due its probe
    probing: bool = False  # a probe request is under way
    rate_limited_until: float = 0.0
    last_error: str | None = field(default=None)  # the current problem; a success clears it
    last_failure: str | None = field(default=None)  # the latest failure, kept after recovery
    #: Calls that ended with a verdict, by outcome: ``ok`` or a :data:`Failure`.
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def tier(self) -> int:
        return self.config.tier

    @property
    def configured(self) -> bool:
        return self.config.missing_env is None

    def probe_due(self, now: float) -> bool:
        """Ejected, its ejection over, and no probe under way: the next request probes it."""
        return self.status != "healthy" and not self.probing and now >= self.probe_at

    def usable(self, now: float) -> bool:
        """Whether it may be tried now: configured, not rate-limited, and not down (unless it
        is due its probe)."""
        if now < self.rate_limited_until or self.config.missing_env is not None:
            return False
        return self.status != "down" or (not self.probing and now >= self.probe_at)

    def wait(self, now: float) -> float | None:
        """Seconds until it may be tried again (0: now), or None when no one can say: its key
        is unset, or its probe is under way."""
        if not self.configured or (self.status == "down" and self.probing):
            return None
        until = self.rate_limited_until
        if self.status == "down":
            until = max(until, self.probe_at)
        return max(0.0, until - now)

    def begin(self, now: float) -> bool:
        """Count a request about to be sent to it. Returns whether that request is the probe
        (the backend was due one); the caller hands that back to ``failed`` and ``end``."""
        self.in_flight += 1
        self.total_requests += 1
        if self.status != "healthy" and not self.probing and now >= self.probe_at:
            self.probing = True
            return True
        return False

    def end(self, *, probe: bool = False) -> None:
        """The request is over. A probe that ends without a verdict (cancelled, a 400, a 429)
        lets the next request probe instead."""
        self.in_flight -= 1
        if probe:
            self.probing = False

    def succeeded(self, latency_s: float) -> None:
        self.outcomes["ok"] = self.outcomes.get("ok", 0) + 1
        ms = latency_s * 1000.0
        self.latency_ms = ms if self.latency_ms is None else (
            self.latency_ms + _EWMA_ALPHA * (ms - self.latency_ms)
        )
        self.status = "healthy"
        self.failures = 0
        self.backoff = 0
        self.probe_at = 0.0
        self.probing = False
        self.last_error = None

    def failed(
        self, kind: Failure, now: float, *, message: str, retry_after: float | None = None,
        probe: bool = False,
    ) -> None:
        self.outcomes[kind] = self.outcomes.get(kind, 0) + 1
        self.last_error = message
        if probe:
            self.probing = False
        if kind == "rejected":  # the request was bad, not the backend
            return
        self.last_failure = message
        if kind == "rate_limited":
            wait = _DEFAULT_RETRY_AFTER if retry_after is None else max(0.0, retry_after)
            self.rate_limited_until = max(self.rate_limited_until, now + wait)
            return
        self.failures += 1
        if self.status == "healthy" or probe:
            self.ejections += 1
            self.backoff += 1
        self.probe_at = max(self.probe_at, now + self.ejection_time())
        if kind == "unreachable" or self.failures >= _DOWN_AFTER:
            self.status = "down"
        elif probe or self.status != "down":
            # Only a probe's verdict (the newest evidence) lifts a down backend to degraded.
            self.status = "degraded"

    def verdict(self) -> tuple[Status, float, int, float]:
        """What other router processes need to know of it: its health, when it is due its
        probe, how many ejections its backoff has reached, and until when it is rate-limited.
        A change here is what a process publishes."""
        return (self.status, self.probe_at, self.backoff, self.rate_limited_until)

    def adopt(self, status: Status, *, probe_at: float, backoff: int,
              error: str | None) -> None:
        """Another process's verdict on its health (``probe_at`` on this process's clock).
        Taken as it is: the newest verdict of any process is the best evidence there is."""
        if status == "healthy":
            if self.status != "healthy":
                self.status = "healthy"
                self.failures = 0
                self.backoff = 0
                self.probe_at = 0.0
                self.last_error = None
            return
        self.status = status
        self.probe_at = probe_at
        self.backoff = backoff
        if error is not None:
            self.last_error = self.last_failure = error

    def adopt_rate_limit(self, until: float) -> None:
        """Another process was told to wait until ``until`` (this process's clock)."""
        self.rate_limited_until = max(self.rate_limited_until, until)

    def ejection_time(self) -> float:
        """How long the current ejection lasts: the base interval, doubled per failed probe,
        capped."""
        doublings = min(max(self.backoff - 1, 0), _MAX_DOUBLINGS)
        return min(self.health.max_probe_interval_sec,
                   self.health.probe_interval_sec * 2.0**doublings)

    def order_key(self, now: float, *, cheapest: bool = False
                  ) -> tuple[int, float, float, float]:
        """Where this backend ranks among its tier's (lowest first): probe due, health, then
        load, latency and price; with ``cheapest``, price before load and latency."""
        rank = _RANK[self.status]
        if rank > 1 and not self.probing and now >= self.probe_at:
            rank = 0  # due its probe
        price = self.config.cost_per_1k_in + self.config.cost_per_1k_out
        latency = self.latency_ms or 0.0
        if cheapest:
            return rank, price, self.in_flight, latency
        return rank, self.in_flight, latency, price

    def snapshot(self, now: float) -> dict[str, object]:
        """The ``GET /v1/backends`` entry: the documented fields, then extras. Never a secret."""
        detail = self.last_error
        if not self.configured:
            detail = f"environment variable {self.config.missing_env} is not set"
        elif now < self.rate_limited_until:
            detail = f"rate limited for {self.rate_limited_until - now:.1f} s"
        ejected = self.configured and self.status != "healthy"
        return {
            "name": self.name,
            "status": "down" if not self.configured else self.status,
            "in_flight": self.in_flight,
            "latency_ms": round(self.latency_ms) if self.latency_ms is not None else 0,
            "total_requests": self.total_requests,
            "tier": self.tier,
            "detail": detail,
            "ejections": self.ejections,
            "probing": self.probing,
            "next_probe_in_sec": round(max(0.0, self.probe_at - now), 3) if ejected else None,
            "last_error": self.last_failure,
        }


class BackendPool:
    """All backends, grouped by tier, with the ordering rules of the module docstring."""

    def __init__(
        self, models: Iterable[ModelConfig], *, health: HealthConfig = _DEFAULT_HEALTH
    ) -> None:
        self.backends: dict[str, BackendState] = {
            m.name: BackendState(m, health) for m in models
        }
        self.tiers: list[int] = sorted({b.tier for b in self.backends.values()})
        self._by_tier: dict[int, list[BackendState]] = {t: [] for t in self.tiers}
        for backend in self.backends.values():
            self._by_tier[backend.tier].append(backend)
        top = self.tiers[-1]
        # "Saved" compares with the most expensive tier: its priciest model is what a caller
        # without a router would have used for everything.
        self.reference: ModelConfig = max(
            (b.config for b in self._by_tier[top]),
            key=lambda m: (m.cost_per_1k_in + m.cost_per_1k_out),
        )

    def __getitem__(self, name: str) -> BackendState:
        return self.backends[name]

    def serving_tier(self, tier: int) -> int:
        """The configured tier that serves requests routed to ``tier``.

        The tier itself if it has models, else the next one up, else the highest below.
        """
        return _serving_tier(self.tiers, tier)

    def candidates(
        self, tier: int, now: float, *, prefer: str | None = None,
        accepts: Callable[[ModelConfig], bool] | None = None, cheapest: bool = False,
    ) -> tuple[list[BackendState], list[BackendState]]:
        """Backends to try for a request routed to ``tier``, in order, and those skipped.

        The tier's usable backends first (``prefer`` leads if it is usable and ranks with the
        best: as healthy, and no probe due ahead of it), then each higher tier's. The second
        list holds the backends of those tiers that are not usable now, so a caller can
        explain why nothing was tried. With ``accepts``, only the backends it accepts count,
        as if no other were configured (both lists are empty when it accepts none). With
        ``cheapest`` (a workflow op), the cheaper of equally healthy backends goes first.
        """
        by_tier = self._by_tier
        if accepts is not None:
            by_tier = {t: [b for b in bs if accepts(b.config)] for t, bs in by_tier.items()}
        tiers = [t for t in self.tiers if by_tier[t]]
        if not tiers:
            return [], []
        start = _serving_tier(tiers, tier)
        order: list[BackendState] = []
        skipped: list[BackendState] = []
        for t in tiers:
            if t < start:
                continue
            usable: list[BackendState] = []
            for backend in by_tier[t]:
                (usable if backend.usable(now) else skipped).append(backend)
            if len(usable) > 1:
                usable.sort(key=lambda b: b.order_key(now, cheapest=cheapest))
            if prefer is not None and t == start and usable:
                best = usable[0].order_key(now)[0]
                for i, backend in enumerate(usable):
                    if backend.name == prefer and backend.order_key(now)[0] == best:
                        usable.insert(0, usable.pop(i))
                        break
            order.extend(usable)
        return order, skipped

    def snapshot(self, now: float) -> list[dict[str, object]]:
        return [b.snapshot(now) for b in self.backends.values()]


def _serving_tier(tiers: list[int], tier: int) -> int:
    above = [t for t in tiers if t >= tier]
    return above[0] if above else tiers[-1]
