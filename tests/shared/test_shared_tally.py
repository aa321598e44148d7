"""Calibration shared through Redis reads a tally, not the report stream: two routers (in this
one process) report in turn and calibrate, thresholds move, and at every step the tally the
calibration is given holds exactly the reports not yet spent on each threshold, whichever
router counted them and however long the backlog (a stream written before the tally existed
is counted in chunks, once)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from support_redis import RedisServer

from engine.core.redis_address import RedisAddress
from engine.core.routing.calibration import (
    THRESHOLD_TIERS,
    Adjustment,
    Report,
    Tally,
    calibrate,
)
from engine.runtime import shared_feedback
from engine.runtime.shared import open_shared
from engine.runtime.shared_feedback import SharedFeedback

SETTINGS = {"target": 0.85, "min_samples": 6, "max_step": 5, "band": 10}


@asynccontextmanager
async def open_feedback(redis: RedisServer) -> AsyncIterator[SharedFeedback]:
    async with open_shared(RedisAddress.from_url(redis.url), timeout=2.0) as shared:
        yield SharedFeedback(shared, base=(30, 70), on_thresholds=lambda _: None)


class Reference:
    """Every report in the order Redis has them, and where each threshold's evidence starts."""

    def __init__(self) -> None:
        self.reports: list[Report] = []
        self.spent = {1: 0, 2: 0}

    def unspent(self) -> Tally:
        """Tier 3 has no threshold: its reports are not counted."""
        return Tally.of(r for i, r in enumerate(self.reports, start=1)
                        if r.tier in self.spent and i > self.spent[r.tier])


async def calibrate_and_check(feedback: SharedFeedback, reference: Reference,
                              ) -> list[Adjustment]:
    given: list[Tally] = []

    def step(tally: Tally, saved: dict[str, int]) -> list[Adjustment]:
        given.append(tally)
        return calibrate(tally, tier1_max=saved.get("tier1_max", 30),
                         tier2_max=saved.get("tier2_max", 70), **SETTINGS)

    changes = await feedback.calibrate(step)
    assert changes is not None
    assert given == [reference.unspent()]
    for change in changes:
        reference.spent[THRESHOLD_TIERS[change.name]] = len(reference.reports)
    return changes


async def test_two_routers_calibrate_on_the_unspent_reports(redis_server: RedisServer) -> None:
    rng = random.Random(11)
    reference = Reference()
    moves = []
    async with open_feedback(redis_server) as a, open_feedback(redis_server) as b:
        for i in range(400):
            report = Report(rng.choice((0.21, 0.25, 0.3, 0.33, 0.62, 0.7, rng.random())),
                            rng.choice((1, 1, 2, 3)), rng.choice((0.5, 0.9, 1.0)))
            router = (a, b)[i % 2]
            await router.add(report, request_id=None, model="m")
            reference.reports.append(report)
            if i % 3 == 0:
                moves += await calibrate_and_check((a, b)[rng.randrange(2)], reference)
        await calibrate_and_check(a, reference)
    assert len(moves) > 5  # the thresholds moved, and the tally was cleared each time
    assert {c.name for c in moves} == {"tier1_max", "tier2_max"}


async def test_a_stream_written_before_the_tally_is_counted_once(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shared_feedback, "_COUNT_READ", 64)  # a backlog of several reads
    rng = random.Random(12)
    reference = Reference()
    async with open_feedback(redis_server) as a:
        for _ in range(500):
            report = Report(rng.random(), rng.choice((1, 2)), rng.random())
            await a.add(report, request_id=None, model="m")
            reference.reports.append(report)
        await calibrate_and_check(a, reference)
        await calibrate_and_check(a, reference)  # nothing new: nothing counted twice
    async with open_feedback(redis_server) as b:
        await calibrate_and_check(b, reference)
