"""Per-region levels (engine.core.routing.regions) on synthetic reports: two kinds of
request the shipped model ranks the wrong way round, by more than the correction's bound
can undo; the regions learn which kind needs the strong model, keep the shipped order inside
a region, wait for evidence and for their floor, hold back on familiar traffic, and survive
the online state's JSON form."""

from __future__ import annotations

import doctest
import json
from dataclasses import replace

import numpy as np
import pytest

import engine.core.routing.regions
from engine.core.routing.floor import BLOCK, MIN_JUDGED
from engine.core.routing.learned import DENSE_NAMES
from engine.core.routing.online import (
    COMPARED_WEIGHT,
    OnlineSettings,
    OnlineState,
    learn,
    predict,
)
from engine.core.routing.regions import LEADERS, MIN_REPORTS, Regions

SETTINGS = OnlineSettings()
DIM = 8
CODE = np.eye(DIM)[0]  # one kind of request (its sentence vector): the cheap model fails it
CHAT = np.eye(DIM)[1]  # another, far from it: the cheap model serves it
BELIEF = {0: -6.0, 1: 2.0}  # the shipped log-odds: CODE believed far easier than CHAT
#: Rounds (two comparisons each) by which the first snapshot has scored enough comparisons
#: for the floors to judge.
OPEN = (BLOCK + MIN_JUDGED + 1) // 2 + 2


def logit(vector: np.ndarray) -> float:
    return BELIEF[int(np.argmax(vector))]


def inputs(vector: np.ndarray, logit: float = -1.0) -> np.ndarray:
    """A belief's inputs: the log-odds (halved), the dense block, the sentence vector."""
    return np.concatenate([[0.5 * logit], np.zeros(len(DENSE_NAMES)), vector])


def teach(state: OnlineState, rounds: int, *, known: float = 0.0,
          settings: OnlineSettings = SETTINGS, compare: bool = True) -> OnlineState:
    """Both kinds on tier 1: CODE fails, CHAT passes; the strong model passes both (said
    only by comparison reports, ``compare``: the floor opens on nothing else)."""
    other = 1.0 if compare else None
    for _ in range(rounds):
        for vector, quality in ((CODE, 0.0), (CHAT, 1.0)):
            state, _ = learn(state, logit(vector), inputs(vector, logit(vector)), tier=1,
                             quality=quality, other=other, reporter=None, settings=settings,
                             known=known)
    return state


def routed(state: OnlineState, vector: np.ndarray, settings: OnlineSettings = SETTINGS,
           at: float | None = None) -> float:
    z = logit(vector) if at is None else at
    return predict(state, z, inputs(vector, z), settings)


def test_the_doctests() -> None:
    assert doctest.testmod(engine.core.routing.regions).failed == 0


def test_a_region_harder_than_believed_goes_up_and_keeps_the_shipped_order_inside() -> None:
    state = teach(OnlineState.fresh("m", len(inputs(CODE))), OPEN)
    assert state.regions is not None and len(state.regions.leaders) == 2
    # Open once the first snapshot (which had learned levels but no mix yet) has scored
    # enough comparisons.
    assert state.regions.gate > 0.5
    assert routed(state, CODE) > routed(state, CHAT)
    # Later snapshots route with the mix, which already ranks the kinds right: in their
    # blocks the levels add nothing, and as those blocks fill the window the floor shuts.
    later = teach(state, 2 * BLOCK)
    assert later.regions is not None and later.regions.gate < state.regions.gate
    assert routed(later, CODE) > routed(later, CHAT)
    # Inside the region, a request the shipped model believed harder stays above (the
    # levels alone: the correction, learned beside them, may reweigh the log-odds).
    levels = replace(state, gate=0.0, mix_gate=0.0)
    assert routed(levels, CODE, at=-5.0) > routed(levels, CODE, at=-6.0)
    # Off, the same state keeps the shipped order: the correction's bound cannot undo it,
    # even applied in full (the mix, which reorders by other means, switched off).
    off, unmixed = OnlineSettings(regions=False), replace(state, gate=1.0, mix_gate=0.0)
    assert routed(unmixed, CODE, off) < routed(unmixed, CHAT, off)


def test_nothing_applies_before_the_regions_have_evidence() -> None:
    rounds = int(MIN_REPORTS / COMPARED_WEIGHT) // 2 - 1  # two comparisons a round
    state = teach(OnlineState.fresh("m", len(inputs(CODE))), rounds)
    assert state.regions is not None and state.regions.gate == 0.0
    assert state.regions.shift(CODE, known=0.0, gated=False) == 0.0


def test_plain_reports_teach_the_levels_but_never_open_their_floor() -> None:
    state = teach(OnlineState.fresh("m", len(inputs(CODE))), 4 * int(MIN_REPORTS),
                  compare=False)
    assert state.regions is not None and state.regions.gate == 0.0
    assert state.regions.shift(CODE, known=0.0, gated=False) > 0
    assert routed(state, CODE) < routed(state, CHAT)  # the shipped order stands


def test_the_floor_keeps_levels_that_rank_no_better_than_routing_without_them() -> None:
    # The shipped model already ranks the two kinds right: levels cannot rank better.
    state = OnlineState.fresh("m", len(inputs(CODE)))
    for _ in range(int(MIN_REPORTS)):
        for vector, z, quality in ((CODE, 2.0, 0.0), (CHAT, -6.0, 1.0)):
            state, _ = learn(state, z, inputs(vector, z), tier=1, quality=quality, other=1.0,
                             reporter=None, settings=SETTINGS)
    assert state.regions is not None and state.regions.gate == 0.0
    assert state.regions.shift(CODE, known=0.0) == 0.0 != state.regions.shift(
        CODE, known=0.0, gated=False)


def test_familiar_traffic_keeps_the_shipped_belief() -> None:
    state = teach(OnlineState.fresh("m", len(inputs(CODE))), int(MIN_REPORTS))
    assert state.regions is not None
    assert state.regions.shift(CODE, known=0.0, gated=False) != 0.0
    assert state.regions.shift(CODE, known=1.0, gated=False) == 0.0  # a familiar request
    familiar = teach(OnlineState.fresh("m", len(inputs(CODE))), int(MIN_REPORTS), known=1.0)
    assert familiar.regions is not None  # so were the region's reports
    assert familiar.regions.shift(CODE, known=0.0, gated=False) == 0.0


def test_leaders_are_capped_and_far_requests_join_the_nearest() -> None:
    rng = np.random.default_rng(7)
    regions = Regions.fresh(64)
    for _ in range(3 * LEADERS):
        regions = regions.learn(rng.standard_normal(64), p=0.5, target=1.0, weight=1.0,
                                known=0.0, decay=1.0)
    assert len(regions.leaders) == LEADERS
    assert float(regions.sums[:, 2].sum()) == 3 * LEADERS


def test_the_regions_survive_the_states_json_form() -> None:
    state = teach(OnlineState.fresh("m", len(inputs(CODE))), OPEN)
    again = OnlineState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again.regions is not None and state.regions is not None
    for v in (CODE, CHAT):
        assert routed(again, v) == pytest.approx(routed(state, v))
    assert again.regions.gate == state.regions.gate > 0.5
    assert again.regions.blocks is not None and state.regions.blocks is not None
    assert (again.regions.blocks == state.regions.blocks).all()
    # The snapshot that scores the floors' comparisons comes back too, and goes on alike.
    assert again.frozen is not None and state.frozen is not None
    assert again.frozen.regions is not None and state.frozen.regions is not None
    assert again.frozen.regions.gate == state.frozen.regions.gate
    for v in (CODE, CHAT):
        assert routed(again.frozen, v) == pytest.approx(routed(state.frozen, v))
    on, on_again = teach(state, 5), teach(again, 5)
    assert on_again.regions is not None and on.regions is not None
    assert on_again.regions.gate == pytest.approx(on.regions.gate)
    described = state.describe(SETTINGS)["regions"]
    assert described["count"] == 2 and described["gate"] == round(state.regions.gate, 4)
    assert described["shift"]["max"] > 0 > described["shift"]["min"]


def test_a_damaged_or_foreign_record_is_refused_or_ignored() -> None:
    state = teach(OnlineState.fresh("m", len(inputs(CODE))), 5)
    raw = state.to_dict()
    raw["regions"] = dict(raw["regions"], dim=3)
    with pytest.raises(ValueError):
        OnlineState.from_dict(raw)
    assert state.regions is not None
    bad = state.regions.sums.copy()
    bad[0, 1] = np.nan  # a level that would make every score of the region NaN
    raw["regions"] = Regions(state.regions.leaders, bad).to_dict()
    with pytest.raises(ValueError):
        OnlineState.from_dict(raw)
    assert state.regions is not None
    # A vector of another size (another embedder) is shifted by nothing and starts afresh.
    assert state.regions.shift(np.ones(5), known=0.0) == 0.0
    fresh = state.regions.learn(np.ones(5), p=0.5, target=1.0, weight=1.0, known=0.0,
                                decay=1.0)
    assert fresh.leaders.shape == (1, 5)
