"""Requests and tokens per minute: the generic cell rate algorithm (GCRA), sans-IO.

One number per limit and key: the *theoretical arrival time* (``tat``), when the key's
allowance would be back to full. A request of ``cost`` units (1 for requests, its tokens for
tokens) moves ``tat`` on by ``cost * 60 / limit`` seconds; it is admitted while ``tat`` stays
within one minute of now, so a key may use a whole minute's allowance at once and then at the
steady rate. The same arithmetic runs in a Redis script when processes share the limits.

>>> tat, d = 0.0, None
>>> for _ in range(3):
...     d = take(tat, now=100.0, cost=1, per_minute=2)
...     tat = d.tat if d.allowed else tat
...     print(d.allowed, d.remaining, round(d.retry_after, 1))
True 1 0.0
True 0 0.0
False 0 30.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Decision", "settle", "take"]

WINDOW_SEC = 60.0


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    tat: float  # the new theoretical arrival time (unchanged when refused)
    remaining: int  # units still available now, for X-RateLimit-Remaining
    retry_after: float  # seconds until ``cost`` units would be admitted (0 when allowed)
    reset_after: float  # seconds until the allowance is whole again, for X-RateLimit-Reset


def take(tat: float, *, now: float, cost: float, per_minute: int,
         admit_over: bool = False) -> Decision:
    """Admit ``cost`` units at ``now`` or say when they would be. ``admit_over``: admit while
    any allowance is left even if ``cost`` exceeds it (tokens: the real count is only known
    afterwards, and one request may overshoot; :func:`settle` charges the difference)."""
    interval = WINDOW_SEC / per_minute
    base = max(tat, now)
    new_tat = base + cost * interval
    limit_at = now + WINDOW_SEC
    allowed = new_tat <= limit_at + 1e-9 or (admit_over and base < limit_at - 1e-9)
    if allowed:
        return Decision(True, new_tat, _remaining(new_tat, now, interval, per_minute), 0.0,
                        max(0.0, new_tat - now))
    wait = new_tat - limit_at if not admit_over else base - limit_at + interval
    return Decision(False, tat, _remaining(base, now, interval, per_minute), max(wait, 0.0),
                    max(0.0, base - now))


def settle(tat: float, *, reserved: float, actual: float, per_minute: int) -> float:
    """Correct ``tat`` once a request's real cost is known (it may be below what was taken)."""
    return tat + (actual - reserved) * WINDOW_SEC / per_minute


def _remaining(tat: float, now: float, interval: float, per_minute: int) -> int:
    left = (now + WINDOW_SEC - tat) / interval
    return max(0, min(per_minute, math.floor(left + 1e-9)))
