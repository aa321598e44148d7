"""The last requests a process answered, and its rate and latency over a recent window:
what the dashboard (``GET /stats/recent``) draws. Pure and synchronous; the caller passes the
time in.

Two bounded buffers, so memory does not grow with traffic: the newest ``keep`` requests as
the dashboard lists them (routing facts, never prompt or answer text), and up to ``samples``
``(time, latency, ok)`` triples for the window's figures. Past ``samples`` requests in one
window the oldest fall out first, so the window shrinks to what the samples cover and the
rate is taken over that span (it stays right; the series' earliest seconds go empty).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["FinishedRequest", "RecentRequests", "percentile"]


@dataclass(frozen=True, slots=True)
class FinishedRequest:
    """One chat request once it ended, as the dashboard lists it."""

    at: float  # Unix seconds when it ended
    ms: float  # from the gateway taking it to its last byte (a stream: its end)
    status: str  # "ok", or the error's code
    stream: bool = False
    model: str | None = None
    tier: int | None = None
    cache: str | None = None  # "HIT" or "MISS"
    dedup: str | None = None  # "LEADER" or "FOLLOWER"
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0

    def public(self) -> dict[str, object]:
        out: dict[str, object] = {name: getattr(self, name) for name in self.__slots__}
        out["ms"] = round(self.ms, 1)
        out["cost_usd"] = round(self.cost_usd, 8)
        return out


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) of ascending ``ordered``, nearest rank; None if empty.

    >>> percentile([10.0, 20.0, 30.0, 40.0], 50), percentile([10.0, 20.0, 30.0, 40.0], 99)
    (20.0, 40.0)
    >>> percentile([], 50) is None
    True
    """
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class RecentRequests:
    """The newest requests and a window of latency samples (see the module docstring).

    >>> recent = RecentRequests(window_sec=10)
    >>> for i in range(4):
    ...     recent.add(FinishedRequest(at=100.0 + i, ms=10.0 * (i + 1), status="ok"))
    >>> snap = recent.snapshot(now=104.0)
    >>> snap["window"]["requests"], snap["window"]["latency_ms"]["p50"]
    (4, 20.0)
    >>> [r["ms"] for r in snap["requests"]]
    [40.0, 30.0, 20.0, 10.0]
    """

    def __init__(self, *, keep: int = 100, window_sec: int = 60, samples: int = 4096) -> None:
        self.window_sec = window_sec
        self._requests: deque[FinishedRequest] = deque(maxlen=keep)
        self._samples: deque[tuple[float, float, bool]] = deque(maxlen=samples)

    def add(self, request: FinishedRequest) -> None:
        self._requests.append(request)
        self._samples.append((request.at, request.ms, request.status == "ok"))

    def snapshot(self, now: float) -> dict[str, object]:
        """The newest requests first, the window's figures, and a per-second series over
        the window (oldest second first) for the dashboard's sparklines."""
        start = now - self.window_sec
        samples = [s for s in self._samples if s[0] > start]
        if samples and len(self._samples) == self._samples.maxlen:
            start = max(start, self._samples[0][0])  # the samples cover less than the window
        span = max(now - start, 1e-9)
        ordered = sorted(ms for _, ms, _ in samples)
        errors = sum(1 for _, _, ok in samples if not ok)
        return {
            "requests": [r.public() for r in reversed(self._requests)],
            "window": {
                "seconds": self.window_sec,
                "requests": len(samples),
                "errors": errors,
                "per_sec": round(len(samples) / span, 3),
                "latency_ms": {f"p{q}": _round(percentile(ordered, q)) for q in (50, 90, 99)},
            },
            "series": self._series(samples, now),
        }

    def _series(self, samples: Sequence[tuple[float, float, bool]], now: float
                ) -> list[dict[str, object]]:
        last = math.floor(now)
        first = last - self.window_sec + 1
        buckets: list[list[float]] = [[] for _ in range(self.window_sec)]
        errors = [0] * self.window_sec
        for at, ms, ok in samples:
            index = math.floor(at) - first
            if 0 <= index < self.window_sec:
                buckets[index].append(ms)
                errors[index] += not ok
        return [{"t": first + i, "requests": len(b), "errors": errors[i],
                 "p50_ms": _round(percentile(sorted(b), 50))}
                for i, b in enumerate(buckets)]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
