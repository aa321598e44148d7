"""The backend pool: each configured model's health and load, and which one to try next.

Sans-IO: the executor reports what happened (``begin`` / ``succeeded`` / ``failed``) with the
current time, and asks for an ordered list of backends to try. Nothing here awaits or reads a
clock, so every state transition is cheap to test exhaustively.

Health (SPEC.md, ``GET /v1/backends``):

* ``healthy`` - the last call succeeded (or none was made yet).
* ``degraded`` - the last call failed with a 5xx or a timeout: still used, but after every
  healthy backend of the tier. Three such failures in a row make it ``down``.
* ``down`` - unreachable (connection refused or reset), or not configured (its API key's
  variable is unset). Skipped until a cool-down passes (1 s, doubling per consecutive failure,
  at most 30 s); then it is tried again, last, and one success makes it healthy.

A 429 takes a backend out of rotation until its ``Retry-After`` passes, without changing its
health: the provider is fine, it only asked us to wait.

Among usable backends the order is: health, then fewer requests in flight, then lower latency
(an exponential moving average), then lower price.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from .config import ModelConfig

__all__ = ["BackendPool", "BackendState", "Failure"]

Status = Literal["healthy", "degraded", "down"]
Failure = Literal["unreachable", "server_error", "timeout", "rate_limited", "rejected"]

_EWMA_ALPHA = 0.2
_DOWN_AFTER = 3
_MAX_COOLDOWN = 30.0
_DEFAULT_RETRY_AFTER = 1.0
_RANK = {"healthy": 0, "degraded": 1, "down": 2}


@dataclass(slots=True, eq=False)
class BackendState:
    """One backend (a configured model) and what the router has seen of it."""

    config: ModelConfig
    status: Status = "healthy"
    in_flight: int = 0
    latency_ms: float | None = None
    total_requests: int = 0
    failures: int = 0
    down_until: float = 0.0
    rate_limited_until: float = 0.0
    last_error: str | None = field(default=None)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def tier(self) -> int:
        return self.config.tier

    @property
    def configured(self) -> bool:
        return self.config.missing_env is None

    def usable(self, now: float) -> bool:
        """Whether it may be tried now (configured, not cooling down, not rate-limited)."""
        return self.configured and now >= self.down_until and now >= self.rate_limited_until

    def begin(self) -> None:
        self.in_flight += 1
        self.total_requests += 1

    def end(self) -> None:
        self.in_flight -= 1

    def succeeded(self, latency_s: float) -> None:
        ms = latency_s * 1000.0
        self.latency_ms = ms if self.latency_ms is None else (
            self.latency_ms + _EWMA_ALPHA * (ms - self.latency_ms)
        )
        self.status = "healthy"
        self.failures = 0
        self.down_until = 0.0
        self.last_error = None

    def failed(
        self, kind: Failure, now: float, *, message: str, retry_after: float | None = None
    ) -> None:
        self.last_error = message
        if kind == "rejected":  # the request was bad, not the backend
            return
        if kind == "rate_limited":
            wait = _DEFAULT_RETRY_AFTER if retry_after is None else max(0.0, retry_after)
            self.rate_limited_until = max(self.rate_limited_until, now + wait)
            return
        self.failures += 1
        if kind == "unreachable" or self.failures >= _DOWN_AFTER:
            self.status = "down"
            self.down_until = now + min(_MAX_COOLDOWN, 2.0 ** (self.failures - 1))
        else:
            self.status = "degraded"

    def order_key(self) -> tuple[int, int, float, float]:
        return (
            _RANK[self.status],
            self.in_flight,
            self.latency_ms or 0.0,
            self.config.cost_per_1k_in + self.config.cost_per_1k_out,
        )

    def snapshot(self, now: float) -> dict[str, object]:
        """The ``GET /v1/backends`` entry: SPEC.md's fields, then extras. Never a secret."""
        detail = self.last_error
        if not self.configured:
            detail = f"environment variable {self.config.missing_env} is not set"
        elif now < self.rate_limited_until:
            detail = f"rate limited for {self.rate_limited_until - now:.1f} s"
        return {
            "name": self.name,
            "status": "down" if not self.configured else self.status,
            "in_flight": self.in_flight,
            "latency_ms": round(self.latency_ms) if self.latency_ms is not None else 0,
            "total_requests": self.total_requests,
            "tier": self.tier,
            "detail": detail,
        }


class BackendPool:
    """All backends, grouped by tier, with the ordering rules of the module docstring."""

    def __init__(self, models: Iterable[ModelConfig]) -> None:
        self.backends: dict[str, BackendState] = {m.name: BackendState(m) for m in models}
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
        accepts: Callable[[ModelConfig], bool] | None = None,
    ) -> tuple[list[BackendState], list[BackendState]]:
        """Backends to try for a request routed to ``tier``, in order, and those skipped.

        The tier's usable backends first (``prefer`` leads if it is usable and as healthy as
        the best), then each higher tier's. The second list holds the backends of those tiers
        that are not usable now, so a caller can explain why nothing was tried. With
        ``accepts``, only the backends it accepts count, as if no other were configured (both
        lists are empty when it accepts none).
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
            usable.sort(key=BackendState.order_key)
            if prefer is not None and t == start:
                for i, backend in enumerate(usable):
                    if backend.name == prefer and backend.status == usable[0].status:
                        usable.insert(0, usable.pop(i))
                        break
            order.extend(usable)
        return order, skipped

    def snapshot(self, now: float) -> list[dict[str, object]]:
        return [b.snapshot(now) for b in self.backends.values()]


def _serving_tier(tiers: list[int], tier: int) -> int:
    above = [t for t in tiers if t >= tier]
    return above[0] if above else tiers[-1]
