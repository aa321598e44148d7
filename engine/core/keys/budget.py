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
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

__all__ = ["PERIODS", "Ledger", "Period", "period_key", "period_reset"]

Period = Literal["day", "week", "month", "total"]
PERIODS: tuple[Period, ...] = ("day", "week", "month", "total")


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
