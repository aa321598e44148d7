"""What the router's own comparisons spent in the last hour: the figure
``learned.compare.max_usd_per_hour`` bounds.

:class:`SpendWindow` is one process's: a sliding hour of (time, USD). :class:`SharedSpendWindow`
(``state.redis_url``) holds the bound for every process together: each call's cost is also
added to a Redis counter of its minute, ``llmr:compare:{spend}:<minute>`` (kept a little over
an hour), and the hour's spend is the sum of the last :data:`MINUTES` counters, one ``MGET``.
Comparisons are rare (a small share of routed answers), so one round trip to start one and
one to pay each call cost nothing a request waits for: both run in the comparison's own
background task.

With Redis down the shared window answers from this process's own hour, and what this process
paid meanwhile is added to Redis as soon as it answers again (minutes that are still in the
window).
Processes that start comparisons at the same moment may together pass the bound by what
those comparisons cost: each checks it before it starts, none holds a share of it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from engine.errors import StoreUnavailable
from engine.stores.redis import Redis

from .shared import PREFIX

__all__ = ["MINUTES", "SharedSpendWindow", "SpendWindow"]

_HOUR = 3600.0
#: The minutes a shared window sums (the current one included).
MINUTES = 60
_KEY = PREFIX + "compare:{spend}:"  # one hash slot: the minutes are read in one MGET
_KEEP_SEC = _HOUR + 120  # a minute's counter outlives the window it is summed in


class SpendWindow:
    """This process's spend over the last hour (``clock`` in seconds, for tests)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._spent: deque[tuple[float, float]] = deque()

    def own(self) -> float:
        """What this process paid in the last hour."""
        self._forget_old()
        return sum(usd for _, usd in self._spent)

    def _forget_old(self) -> None:
        cutoff = self.clock() - _HOUR
        while self._spent and self._spent[0][0] < cutoff:
            self._spent.popleft()

    async def total(self) -> float:
        """What the comparisons bound by this window paid in the last hour."""
        return self.own()

    async def add(self, usd: float) -> None:
        """One call's cost, paid now (what left the hour goes: the shared window reads
        :meth:`own` only while Redis is down, and must not keep every payment meanwhile)."""
        self._forget_old()
        self._spent.append((self.clock(), usd))


class SharedSpendWindow(SpendWindow):
    """Every process's spend over the last hour, through ``redis`` (see the module)."""

    def __init__(self, redis: Redis, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock=clock)
        self.redis = redis
        self._unsaved: dict[int, float] = {}  # minute -> USD paid while Redis did not answer
        redis.on_up(self._write_back)

    def _minute(self) -> int:
        return int(self.clock() // 60)

    async def total(self) -> float:
        now = self._minute()
        keys = [f"{_KEY}{minute}" for minute in range(now - MINUTES + 1, now + 1)]
        try:
            await self._save()
            values = await self.redis.call("MGET", *keys)
        except StoreUnavailable:
            return self.own()
        assert isinstance(values, list)
        return sum(float(value) for value in values if isinstance(value, bytes))

    async def add(self, usd: float) -> None:
        await super().add(usd)
        minute = self._minute()
        self._unsaved[minute] = self._unsaved.get(minute, 0.0) + usd
        await self._write_back()

    async def _write_back(self) -> None:
        """Write what is unsaved (on every payment, and when Redis is back, perhaps
        restarted empty)."""
        try:
            await self._save()
        except StoreUnavailable:
            pass  # kept: the next call that reaches Redis writes it

    async def _save(self) -> None:
        oldest = self._minute() - MINUTES + 1
        unsaved = {m: usd for m, usd in self._unsaved.items() if m >= oldest}
        self._unsaved = {}
        if not unsaved:
            return
        commands: list[list[str | int]] = []
        for minute, usd in unsaved.items():
            commands += [["INCRBYFLOAT", f"{_KEY}{minute}", repr(usd)],
                         ["EXPIRE", f"{_KEY}{minute}", int(_KEEP_SEC)]]
        try:
            await self.redis.pipeline(commands)
        except StoreUnavailable:
            # A pipeline that timed out may still have been applied: counting it again could
            # only refuse comparisons a little early, while dropping it could overspend.
            for minute, usd in unsaved.items():
                self._unsaved[minute] = self._unsaved.get(minute, 0.0) + usd
            raise
