"""A tenant's similarity threshold under feedback on its cached answers. Sans-IO.

A cache hit rated bad is evidence that, for this tenant's traffic, the threshold lets in
pairs that are not the same question. The answer is to ask more of the next pair, by a
bounded step: one report moves the threshold ``step``, never past ``ceiling``, never below
the configured ``cache.similarity_thresh`` (the floor: feedback tightens, it never loosens
what the operator chose). Steps are taken from the threshold as stored, so two processes
applying the same rule (through Redis) agree on the result.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ThresholdRule"]


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    """``floor``: the configured threshold; ``step``: one bad report's move; ``ceiling``.

    >>> rule = ThresholdRule(floor=0.85, step=0.02, ceiling=0.9)
    >>> rule.tightened(0.85), rule.tightened(0.89), rule.tightened(0.5)
    (0.87, 0.9, 0.87)
    """

    floor: float
    step: float
    ceiling: float

    def tightened(self, current: float) -> float:
        """The threshold after one bad report on a cached answer, from ``current``."""
        ceiling = max(self.ceiling, self.floor)
        return round(min(ceiling, max(self.floor, current) + self.step), 6)

    def bounded(self, value: float) -> float:
        """``value`` within the floor and the ceiling (a stored value the config no longer
        allows: the config changed since)."""
        return min(max(self.ceiling, self.floor), max(self.floor, value))
