"""Budgets: the period a spend counts in, and admission that reserves a request's most
expensive outcome before it runs and settles the real cost after. Sans-IO.

Admission is allowed while what is spent plus what is reserved is below the budget, and then
reserves the request's maximum cost; so concurrent requests overspend by at most one request's
maximum cost (the one admitted just below the line), never by all that were in flight.

>>> ledger = Ledger()
>>> [ledger.admit(1.0, budget=3.0) for _ in range(5)]
[True, True, True, False, False]
>>> ledger.settle(reserved=1.0, actual=0.25); ledger.spent, ledger.reserved
(0.25, 2.0)
>>> period_key("month", 1764892800.0), period_key("week", 1764892800.0), period_key("total", 0)
('2025-12', '2025-W49', 'total')
>>> [period_end(period_key(p, 1764892800.0)) == period_reset(p, 1764892800.0) for p in PERIODS]
[True, True, True, True]
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

__all__ = ["PERIODS", "SPEND_KEPT_SEC", "Ledger", "Period", "period_end", "period_key",
           "period_reset"]

Period = Literal["day", "week", "month", "total"]
PERIODS: tuple[Period, ...] = ("day", "week", "month", "total")
#: How long stores keep a period's spend once the period has ended (late settlements, clocks
#: a little apart); only the current period's is ever read.
SPEND_KEPT_SEC = 2 * 86400.0


def period_key(period: Period, now: float) -> str:
    """Names the budget period ``now`` falls in (UTC; weeks start on Monday, ISO numbering)."""
    at = datetime.fromtimestamp(now, UTC)
    if period == "day":
        return at.strftime("%Y-%m-%d")
    if period == "week":
        year, week, _ = at.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return at.strftime("%Y-%m")
    return "total"


def period_reset(period: Period, now: float) -> float | None:
    """When the period ``now`` falls in ends (a Unix time), or None for ``total``."""
    at = datetime.fromtimestamp(now, UTC)
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        end = day + timedelta(days=1)
    elif period == "week":
        end = day + timedelta(days=7 - day.weekday())
    elif period == "month":
        end = (day.replace(day=1) + timedelta(days=32)).replace(day=1)
    else:
        return None
    return end.timestamp()


def period_end(key: str) -> float | None:
    """When the period :func:`period_key` named ``key`` ends (a Unix time), or None for
    ``total`` and for a name it does not make. Stores drop a period's spend some time after.

    >>> period_end("2025-12-31") == period_end("2026-01") - 31 * 86400
    True
    >>> period_end("2026-W01"), period_end("total"), period_end("2026-13")
    (1767571200.0, None, None)
    """
    try:
        if len(key) == 10:  # a day: 2025-12-05
            start = datetime.strptime(key, "%Y-%m-%d").replace(tzinfo=UTC)
            return (start + timedelta(days=1)).timestamp()
        if len(key) == 8 and key[4:6] == "-W":  # an ISO week: 2025-W49
            monday = datetime.fromisocalendar(int(key[:4]), int(key[6:]), 1)
            return (monday.replace(tzinfo=UTC) + timedelta(days=7)).timestamp()
        if len(key) == 7:  # a month: 2025-12
            start = datetime.strptime(key, "%Y-%m").replace(tzinfo=UTC)
            return (start + timedelta(days=32)).replace(day=1).timestamp()
    except ValueError:
        return None
    return None


@dataclass(slots=True)
class Ledger:
    """One key's money in one period: what is spent and what is reserved by requests in
    flight."""

    spent: float = 0.0
    reserved: float = 0.0

    def admit(self, max_cost: float, *, budget: float) -> bool:
        if self.spent + self.reserved >= budget:
            return False
        self.reserved += max_cost
        return True

    def settle(self, *, reserved: float, actual: float) -> None:
        self.reserved = max(0.0, self.reserved - reserved)
        self.spent += actual
