"""The floors of online learning (engine.core.routing.floor): a lead counts only when it is
sure; too few comparisons open nothing; pairs are judged only on scores made by one frozen
state (a block); and a state saved when the floors also judged plain reports, or judged pairs
across states, loads with its floors shut."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest

import engine.core.routing.floor
from engine.core.routing.floor import (
    BLOCK,
    MIN_JUDGED,
    SURE,
    concordance,
    describe,
    lead,
    opening,
)
from engine.core.routing.online import OnlineSettings, OnlineState, learn, predict
from engine.core.routing.snapshot import Snapshot

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


def test_with_blocks_only_pairs_of_one_block_count() -> None:
    # Within each block both orders rank the gains right; across the two blocks ``before``
    # ranks some pairs wrong. Only the pairs within a block count, and rows of a negative
    # block (scored before any snapshot) not at all.
    gains = np.tile([0.0, 1.0], 30)
    blocks = np.repeat([0.0, 1.0], 30)
    after, before = gains.copy(), gains + 2.0 * blocks
    weights = np.ones(60)
    assert lead(before, after, gains, weights)[0] > 0.1  # across blocks
    assert lead(before, after, gains, weights, blocks)[0] == 0.0
    assert opening(before, after, gains, weights, TOLERANCE, blocks) == 0.0
    assert concordance(before, gains, weights, blocks) == 1.0 > concordance(
        before, gains, weights)
    # Rows before the first snapshot are held but not judged.
    unjudged = np.where(np.arange(60) < 45, -1.0, 0.0)
    ties = np.zeros(60)
    assert opening(ties, after, gains, weights, TOLERANCE) == 1.0
    assert opening(ties, after, gains, weights, TOLERANCE, unjudged) == 0.0
    assert describe(ties, after, gains, weights, unjudged) is None
    recorded = describe(ties, after, gains, weights, blocks)
    assert recorded is not None and recorded["comparisons"] == recorded["judged"] == 60


def _repeated(rounds: int, seed: int) -> OnlineState:
    """Every request comes twice in a row, each time a comparison with the same random gain
    (0 or 1), and never again; the shipped model ties them all. A correction can then score
    a request only once it has been told its gain: it knows nothing of a request not yet
    reported."""
    rng = np.random.default_rng(seed)
    settings = OnlineSettings()
    state = OnlineState.fresh("m", rounds)
    for k in range(rounds):
        gain = float(rng.integers(2))
        for _ in range(2):
            state, _ = learn(state, 0.0, np.eye(rounds)[k], tier=1, quality=1.0 - gain,
                             other=gain, reporter=None, settings=settings)
            assert state.gate == 0.0
    return state


def test_a_lead_made_only_by_having_learned_the_earlier_row_opens_nothing() -> None:
    # Judged across states, the second report of each request was scored by a state that
    # had learned the first (the same gain), the first by one that had not: the correction
    # looked ahead on the window (before blocks, this opened the floor in full by 120
    # comparisons). Scored by one frozen state, a block's requests are all new to it.
    state = _repeated(60, seed=0)
    floor = state.describe(OnlineSettings())["floor"]
    assert floor is not None and floor["lead"] - SURE * floor["error"] < 0


def test_a_blocks_rows_are_scored_by_its_snapshot() -> None:
    settings = OnlineSettings()
    rng = np.random.default_rng(11)
    dim = 6
    state = OnlineState.fresh("m", dim)
    snapshots: dict[int, Snapshot] = {}
    seen: list[tuple[float, np.ndarray, int]] = []
    for _ in range(3 * BLOCK):
        x, z = rng.standard_normal(dim), float(rng.standard_normal())
        block = -1 if state.frozen is None else state.compared // BLOCK
        if state.frozen is not None:
            snapshots.setdefault(block, state.frozen)
        state, _ = learn(state, z, x, tier=1, quality=float(rng.integers(2)),
                         other=float(rng.integers(2)), reporter=None, settings=settings)
        seen.append((z, x, block))
    assert isinstance(state.frozen, Snapshot)
    assert state.recent is not None and state.recent_blocks is not None
    assert list(state.recent_blocks) == [float(b) for _, _, b in seen]
    assert sorted(snapshots) == [1, 2]
    for (z, x, block), row in zip(seen, state.recent, strict=True):
        if block >= 0:
            judge = snapshots[block]
            # The correction's score without its gate, as the snapshot made it.
            corrected = (z + settings.max_shift * np.tanh(
                (judge.weights[:-1] @ x + judge.weights[-1]) / settings.max_shift))
            assert row[1] == pytest.approx(corrected) and row[0] == z
    # The mix's "before it learned" score is the snapshot's mix, too.
    assert state.comparisons is not None and state.comparison_blocks is not None
    for (z, _x, block), row, at in zip(seen, state.comparisons, state.comparison_blocks,
                                       strict=True):
        assert at == block
        if block >= 0:
            mix = snapshots[block].mix
            assert mix is not None and row[4] == pytest.approx(mix.logit(z, row[1]))


def test_a_state_saved_before_blocks_loads_with_its_rows_unjudged() -> None:
    state = _agreeing(60)
    assert state.gate == 1.0
    saved = json.loads(json.dumps(state.to_dict()))
    again = OnlineState.from_dict(saved)
    assert again.gate == state.gate and again.mix_gate == state.mix_gate
    assert again.frozen is not None and state.frozen is not None
    assert (again.frozen.weights == state.frozen.weights).all()
    assert again.recent_blocks is not None and state.recent_blocks is not None
    assert (again.recent_blocks == state.recent_blocks).all()
    # The format before blocks: no blocks, no snapshot.
    for key in ("judged_blocks", "comparison_blocks", "frozen"):
        del saved[key]
    old = OnlineState.from_dict(saved)
    assert old.gate == 0.0 and old.mix_gate == 0.0 and old.frozen is None
    assert old.recent is not None and len(old.recent) == 60
    assert old.recent_blocks is not None and (old.recent_blocks == -1).all()
    assert old.concordance() is None
    # Routing with it is the shipped model's until its floors reopen on new blocks.
    hard = np.array([1.0, 0.0])
    assert predict(old, 0.0, hard, OnlineSettings()) == 0.0
    assert _agreeing(BLOCK + MIN_JUDGED, old).gate == 1.0


def _agreeing(comparisons: int, state: OnlineState | None = None) -> OnlineState:
    settings = OnlineSettings()
    state = state or OnlineState.fresh("m", 2)
    hard, easy = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    for _ in range(comparisons // 2):
        state, _ = learn(state, 0.0, hard, tier=1, quality=0.0, other=1.0, reporter=None,
                         settings=settings)
        state, _ = learn(state, 0.0, easy, tier=1, quality=1.0, other=1.0, reporter=None,
                         settings=settings)
    return state
