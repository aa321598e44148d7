"""The floors of online learning (engine.core.routing.floor): a lead counts only when it is
sure; too few comparisons open nothing; and a state saved when the floors also judged plain
reports loads with its floors shut."""

from __future__ import annotations

import doctest

import numpy as np

import engine.core.routing.floor
from engine.core.routing.floor import MIN_JUDGED, SURE, concordance, lead, opening
from engine.core.routing.online import OnlineSettings, OnlineState, learn

TOLERANCE = OnlineSettings().tolerance


def test_the_doctests() -> None:
    assert doctest.testmod(engine.core.routing.floor).failed == 0


def test_a_lead_within_its_error_opens_nothing() -> None:
    # Two orders that differ on a single report of 40: one more pair right, within noise.
    rng = np.random.default_rng(3)
    gains = rng.choice([0.0, 0.5, 1.0], size=40)
    before = rng.standard_normal(40)
    after = before.copy()
    wrong = [(i, j) for i in range(40) for j in range(40)
             if gains[i] > gains[j] and before[i] < before[j]]
    i, j = wrong[0]
    after[i] = before[j] + 1e-3  # that pair now right, a few others may move too
    ahead, error = lead(before, after, gains, np.ones(40))
    assert 0 < ahead < SURE * error
    assert opening(before, after, gains, np.ones(40), TOLERANCE) == 0.0


def test_a_sure_lead_opens_in_full_and_a_short_record_not_at_all() -> None:
    gains = np.tile([0.0, 0.5, 1.0], 20)
    noise = np.random.default_rng(5).standard_normal(60)
    better, worse = gains + 0.3 * noise, noise
    assert concordance(better, gains, np.ones(60)) > concordance(worse, gains, np.ones(60))
    assert opening(worse, better, gains, np.ones(60), TOLERANCE) == 1.0
    assert opening(better, worse, gains, np.ones(60), TOLERANCE) == 0.0  # behind
    few = MIN_JUDGED - 1
    assert opening(worse[:few], better[:few], gains[:few], np.ones(few), TOLERANCE) == 0.0


def test_a_state_saved_under_the_old_floor_loads_with_its_floors_shut() -> None:
    settings = OnlineSettings()
    state = OnlineState.fresh("m", 2)
    hard, easy = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    for _ in range(30):
        state, _ = learn(state, 0.0, hard, tier=1, quality=0.0, other=1.0, reporter=None,
                         settings=settings)
        state, _ = learn(state, 0.0, easy, tier=1, quality=1.0, other=1.0, reporter=None,
                         settings=settings)
    assert state.gate == 1.0
    saved = state.to_dict()
    assert OnlineState.from_dict(saved).gate == 1.0
    # The old form kept every report's row (plain ones too) under "recent".
    saved["recent"] = saved.pop("judged")
    old = OnlineState.from_dict(saved)
    assert old.gate == 0.0 and old.recent is None and old.concordance() is None
