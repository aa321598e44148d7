"""The last requests a process answered, and its rate and latency over a recent window:
what the dashboard (``GET /stats/recent``) draws. Pure and synchronous; the caller passes the
time in.

Memory is bounded whatever the traffic: the newest ``keep`` requests as the dashboard lists
them (routing facts, never prompt or answer text), and one bucket per second of the window,
each a count, a failure count and a latency histogram. A latency is kept rounded to two
significant digits (94.2 ms counts as 94 ms, 1234 ms as 1200 ms), so a second's histogram
has at most 90 keys a decade, and histograms *merge*: the percentiles of several processes
(``engine.runtime.shared_recent``) are those of all their requests together, not an average
of each one's. A percentile is off by at most 5% of its value for it.

:meth:`RecentRequests.export` is a process's state as plain JSON data, and
:meth:`RecentRequests.snapshot` merges other processes' exports into its own.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["FinishedRequest", "RecentRequests", "latency_key", "percentile"]

#: What a request may end as without counting as a failure: answered, or left by its client
#: (a chat UI's "stop" button, a closed tab) before the answer was whole.
_NOT_FAILED = frozenset({"ok", "cancelled"})


@dataclass(frozen=True, slots=True)
class FinishedRequest:
    """One chat request once it ended, as the dashboard lists it."""

    at: float  # Unix seconds when it ended
    ms: float  # from the gateway taking it to its last byte (a stream: its end)
    status: str  # "ok", "cancelled" (its client left first), or the error's code
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


def latency_key(ms: float) -> float:
    """``ms`` rounded to two significant digits: the histogram bucket it counts in.

    >>> latency_key(94.24), latency_key(1234.0), latency_key(0.376), latency_key(0.0)
    (94.0, 1200.0, 0.38, 0.0)
    """
    if ms <= 0:
        return 0.0
    digits = 1 - math.floor(math.log10(ms))
    return round(ms, digits)


def _histogram_percentile(counts: Mapping[float, int], q: float) -> float | None:
    """Nearest rank over a histogram (bucket -> count): as :func:`percentile` over the
    bucketed values."""
    total = sum(counts.values())
    if not total:
        return None
    rank = max(1, math.ceil(q / 100 * total))
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= rank:
            return value
    raise AssertionError("unreachable: the ranks add up to the total")


class _Second:
    __slots__ = ("errors", "latency", "requests", "t")

    def __init__(self, t: int) -> None:
        self.t = t
        self.requests = 0
        self.errors = 0
        self.latency: dict[float, int] = {}


class RecentRequests:
    """The newest requests and the window's per-second buckets (see the module docstring).

    >>> recent = RecentRequests(window_sec=10)
    >>> for i in range(4):
    ...     recent.add(FinishedRequest(at=100.0 + i, ms=10.0 * (i + 1), status="ok"))
    >>> snap = recent.snapshot(now=104.0)
    >>> snap["window"]["requests"], snap["window"]["latency_ms"]["p50"]
    (4, 20.0)
    >>> [r["ms"] for r in snap["requests"]]
    [40.0, 30.0, 20.0, 10.0]

    Another process's export merges in:

    >>> other = RecentRequests(window_sec=10)
    >>> other.add(FinishedRequest(at=103.5, ms=5.0, status="ok", model="m"))
    >>> merged = recent.snapshot(now=104.0, others=[other.export()])
    >>> merged["window"]["requests"], merged["requests"][0]["model"]
    (5, 'm')
    """

    def __init__(self, *, keep: int = 100, window_sec: int = 60) -> None:
        self.window_sec = window_sec
        self.keep = keep
        #: Counts every :meth:`add`: an exporter writes again only when it moved.
        self.version = 0
        self._requests: deque[FinishedRequest] = deque(maxlen=keep)
        self._seconds: deque[_Second] = deque(maxlen=window_sec)

    def add(self, request: FinishedRequest) -> None:
        self.version += 1
        self._requests.append(request)
        t = math.floor(request.at)
        seconds = self._seconds
        if not seconds or seconds[-1].t < t:
            seconds.append(_Second(t))  # a full deque drops the oldest second
        second = seconds[-1]  # (a clock that stepped back counts in the newest second)
        second.requests += 1
        second.errors += request.status not in _NOT_FAILED
        key = latency_key(request.ms)
        second.latency[key] = second.latency.get(key, 0) + 1

    def export(self) -> dict[str, Any]:
        """This process's state as JSON data, for :meth:`snapshot` in another process."""
        return {
            "requests": [r.public() for r in self._requests],
            "seconds": [[s.t, s.requests, s.errors, list(s.latency.items())]
                        for s in self._seconds],
        }

    def snapshot(self, now: float, others: Iterable[Mapping[str, Any]] = ()
                 ) -> dict[str, object]:
        """The newest requests first, the window's figures, and a per-second series over
        the window (oldest second first) for the dashboard's sparklines; of this process
        and of ``others`` (other processes' :meth:`export`).

        The window is the last ``window_sec`` whole seconds, the current one included."""
        last = math.floor(now)
        first = last - self.window_sec + 1
        requests: list[Mapping[str, Any]] = [r.public() for r in self._requests]
        series = [_Second(first + i) for i in range(self.window_sec)]
        for s in self._seconds:
            _count(series, s.t - first, s.requests, s.errors, s.latency.items())
        for other in others:
            requests += other["requests"]
            for t, n, errors, latency in other["seconds"]:
                _count(series, t - first, n, errors, latency)
        requests.sort(key=_ended, reverse=True)
        window: dict[float, int] = {}
        for second in series:
            for value, n in second.latency.items():
                window[value] = window.get(value, 0) + n
        total = sum(s.requests for s in series)
        return {
            "requests": requests[:self.keep],
            "window": {
                "seconds": self.window_sec,
                "requests": total,
                "errors": sum(s.errors for s in series),
                "per_sec": round(total / self.window_sec, 3),
                "latency_ms": {f"p{q}": _histogram_percentile(window, q)
                               for q in (50, 90, 99)},
            },
            "series": [{"t": s.t, "requests": s.requests, "errors": s.errors,
                        "p50_ms": _histogram_percentile(s.latency, 50)} for s in series],
        }


def _ended(request: Mapping[str, Any]) -> float:
    return float(request["at"])


def _count(series: list[_Second], index: int, requests: int, errors: int,
           latency: Iterable[Sequence[float]]) -> None:
    if not 0 <= index < len(series):
        return  # outside the window (or another process's clock far off)
    into = series[index]
    into.requests += requests
    into.errors += errors
    for value, n in latency:
        into.latency[value] = into.latency.get(value, 0) + int(n)
