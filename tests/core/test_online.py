"""The online learning rule (engine.core.routing.online) on synthetic reports: it learns what
the feedback says, within its bounds; one reporter's weight is capped; the floor keeps the
correction off until it ranks reports better than the shipped model; a state survives its
JSON form; and calibration moves the cut without moving a score."""

from __future__ import annotations

import doctest

import numpy as np

import engine.core.routing.online
from engine.core.routing.floor import BLOCK, MIN_JUDGED
from engine.core.routing.online import (
    OnlineSettings,
    OnlineState,
    label,
    learn,
    predict,
)

SETTINGS = OnlineSettings()
HARD = np.array([1.0, 0.0, 0.0])
EASY = np.array([0.0, 1.0, 0.0])


def teach(state: OnlineState, rounds: int, *, reporter: str | None = None,
          settings: OnlineSettings = SETTINGS, compare: bool = True) -> OnlineState:
    """Both kinds of traffic on tier 1 at the same shipped log-odds: HARD fails, EASY passes;
    the strong model passes both (said only by comparison reports, ``compare``)."""
    other = 1.0 if compare else None
    for _ in range(rounds):
        state, _ = learn(state, -1.0, HARD, tier=1, quality=0.0, other=other,
                         reporter=reporter, settings=settings)
        state, _ = learn(state, -1.0, EASY, tier=1, quality=1.0, other=other,
                         reporter=reporter, settings=settings)
    return state


def test_the_doctests() -> None:
    assert doctest.testmod(engine.core.routing.online).failed == 0


def test_what_a_report_teaches() -> None:
    assert label(1, 0.25) == (0.75, 1.0)  # the cheap model mostly failed: strong was needed
    assert label(3, 0.25) == (0.0, 0.75)  # a poor strong answer: no gain from it
    assert label(2, 1.0)[1] == 0.0  # a good strong answer says nothing about the cheap one


def test_learning_separates_what_the_shipped_model_tied() -> None:
    state = teach(OnlineState.fresh("m", 3), 40)
    assert state.gate == 1.0
    ranks = state.concordance()
    assert ranks is not None and ranks[1] > ranks[0] == 0.5
    assert predict(state, -1.0, HARD, SETTINGS) > predict(state, -1.0, EASY, SETTINGS)
    # A request like the shipped model's training data keeps the shipped belief.
    assert predict(state, -1.0, HARD, SETTINGS, known=1.0) == -1.0


def test_the_floor_holds_the_correction_back_until_it_has_evidence() -> None:
    state = teach(OnlineState.fresh("m", 3), MIN_JUDGED // 2 - 1)
    assert state.gate == 0.0
    assert predict(state, -1.0, HARD, SETTINGS) == -1.0
    # A lead on the first few comparisons is not yet sure (the floor discounts it by its
    # standard error); some more that say the same open the floor in full.
    assert teach(state, 30).gate == 1.0


def test_plain_reports_teach_but_never_open_the_floor() -> None:
    # "The cheap model failed" ranks how hard a request is, not what the strong model gains:
    # however clearly the correction learns it, only comparisons may let it apply.
    state = teach(OnlineState.fresh("m", 3), 200, compare=False)
    assert state.gate == 0.0 and state.concordance() is None
    assert predict(state, -1.0, HARD, SETTINGS) == -1.0
    assert float(np.linalg.norm(state.weights)) > 0.5  # it learned, all the same
    # Comparisons that agree then open it as soon as a snapshot of the state has scored
    # enough of them: the lesson was kept.
    assert teach(state, (BLOCK + MIN_JUDGED) // 2 + 1).gate == 1.0


def test_the_floor_judges_the_gain_not_the_failure() -> None:
    # HARD is failed by both models: no gain there, where EASY's strong answer is a gain
    # (the cheap one is poor there too). Plain reports would rank HARD first; the gain says
    # otherwise, and a correction that learned "HARD is harder" is behind on it.
    state = OnlineState.fresh("m", 3)
    for _ in range(100):
        state, _ = learn(state, -1.0, HARD, tier=1, quality=0.0, reporter=None,
                         settings=SETTINGS)
    for _ in range(30):
        state, _ = learn(state, -1.0, HARD, tier=1, quality=0.0, other=0.0, reporter=None,
                         settings=SETTINGS)
        state, _ = learn(state, -1.0, EASY, tier=1, quality=0.5, other=1.0, reporter=None,
                         settings=SETTINGS)
    ranks = state.concordance()
    assert ranks is not None and ranks[1] < ranks[0]
    assert state.gate == 0.0


def test_feedback_the_shipped_model_already_ranks_opens_no_gate() -> None:
    # The shipped log-odds already order HARD above EASY: a correction cannot rank better.
    state = OnlineState.fresh("m", 3)
    for _ in range(40):
        state, _ = learn(state, 2.0, HARD, tier=1, quality=0.0, reporter=None,
                         settings=SETTINGS)
        state, _ = learn(state, -2.0, EASY, tier=1, quality=1.0, reporter=None,
                         settings=SETTINGS)
    assert state.gate == 0.0
    assert predict(state, 2.0, HARD, SETTINGS) == 2.0


def test_steps_and_shifts_are_bounded() -> None:
    settings = OnlineSettings(rate=50.0, max_step=0.25, max_shift=1.0)
    state = OnlineState.fresh("m", 3)
    for _ in range(200):
        state, outcome = learn(state, -1.0, HARD, tier=1, quality=0.0, reporter=None,
                               settings=settings)
        assert outcome.moved <= 0.25 + 1e-12
        state, _ = learn(state, -1.0, EASY, tier=1, quality=1.0, reporter=None,
                         settings=settings)
    assert abs(predict(state, -1.0, HARD, settings) + 1.0) <= 1.0


def test_one_reporter_is_capped_and_others_are_not() -> None:
    settings = OnlineSettings(key_cap=5)
    state = OnlineState.fresh("m", 3)
    weights = []
    for _ in range(10):
        state, outcome = learn(state, -1.0, HARD, tier=1, quality=0.0, reporter="mallory",
                               settings=settings)
        weights.append(outcome.weight)
    assert weights[:5] == [1.0] * 5 and max(weights[5:]) < 0.01
    state, outcome = learn(state, -1.0, EASY, tier=1, quality=1.0, reporter="alice",
                           settings=settings)
    assert outcome.weight == 1.0
    assert sorted(state.reporters) == ["alice", "mallory"]


def test_old_evidence_decays() -> None:
    settings = OnlineSettings(half_life=10)
    state = teach(OnlineState.fresh("m", 3), 40, settings=settings)
    norm = float(np.linalg.norm(state.weights))
    for _ in range(100):  # reports that teach nothing: good strong answers
        state, _ = learn(state, -1.0, HARD, tier=2, quality=1.0, reporter=None,
                         settings=settings)
    assert float(np.linalg.norm(state.weights)) < norm / 100


def test_a_state_survives_its_json_form() -> None:
    state = teach(OnlineState.fresh("m", 3), 30, reporter="r")
    again = OnlineState.from_dict(state.to_dict())
    assert again.gate == state.gate and again.reports == state.reports == 60
    assert predict(again, -1.0, HARD, SETTINGS) == predict(state, -1.0, HARD, SETTINGS)
    assert again.describe(SETTINGS) == state.describe(SETTINGS)
    assert state.describe(SETTINGS)["reporters"] == 1
    assert "r" not in state.describe(SETTINGS)
