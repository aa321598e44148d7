"""The comparison-learned mix (engine.core.routing.mix, applied by online learning): on
traffic where prompt length, not the shipped model, tells where the strong model gains,
comparison reports reorder requests by length once the mix ranks them better than the
shipped model, without moving the spread the cut relies on, and not on traffic the shipped
model knows; served-tier reports alone never touch it; the state keeps it through its JSON
form."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from engine.core.routing.floor import MIN_JUDGED
from engine.core.routing.learned import DENSE_NAMES
from engine.core.routing.mix import fit_mix
from engine.core.routing.online import OnlineSettings, OnlineState, learn, predict

SETTINGS = OnlineSettings()
WIDTH = 1 + len(DENSE_NAMES)
LENGTH = 1 + DENSE_NAMES.index("log_chars_last")


def request(length: float) -> np.ndarray:
    """A belief's inputs whose standardised log length is ``length``."""
    inputs = np.zeros(WIDTH)
    inputs[LENGTH] = length / math.sqrt(len(DENSE_NAMES))
    return inputs


# The shipped model believes short prompts need the strong model; feedback says long ones do.
SHORT, LONG = (1.0, request(-1.0)), (-1.0, request(1.0))


def mixed(state: OnlineState, request: tuple[float, np.ndarray], *,
          known: float = 0.0) -> float:
    """The log-odds with the mix alone (the correction, learned beside it, switched off)."""
    return predict(replace(state, gate=0.0), *request, SETTINGS, known=known)


def compare(state: OnlineState, rounds: int) -> OnlineState:
    for n in range(rounds):
        for (logit, inputs), gain in ((SHORT, 0.25), (LONG, 0.75)):
            jitter = 0.1 * ((n % 5) - 2)  # distinct log-odds, so pairs are not all ties
            state, _ = learn(state, logit + jitter, inputs, tier=1, quality=1 - gain,
                             other=gain, reporter=None, settings=SETTINGS)
    return state


def test_comparisons_reorder_by_length_once_the_mix_ranks_better() -> None:
    state = OnlineState.fresh("m", WIDTH)
    early = compare(state, MIN_JUDGED // 2 - 1)
    assert early.mix_gate == 0.0  # too few comparisons: the shipped order stands
    assert mixed(early, SHORT) > mixed(early, LONG)

    state = compare(state, 30)
    assert state.compared == 60 and state.mix_gate == 1.0
    short, long = mixed(state, SHORT), mixed(state, LONG)
    assert long > short
    # The mix reorders; the spread of the shipped log-odds (the cut's scale) stays.
    assert abs((short + long) / 2) < 0.2 and 1.5 < long - short < 2.5
    described = state.describe(SETTINGS)["mix"]
    assert described["comparisons"] == 60 and described["gate"] == 1.0
    assert described["weights"]["length"] > 0 > described["weights"]["shipped"] - 0.05
    assert described["concordance"]["mix"] > described["concordance"]["shipped"]

    again = OnlineState.from_dict(state.to_dict())
    assert again.mix_gate == 1.0
    assert mixed(again, LONG) == long
    # On traffic like the shipped model's training rows (``known``) the mix is held back.
    assert mixed(state, SHORT, known=1.0) > mixed(state, LONG, known=1.0)


def test_served_tier_reports_leave_the_mix_alone() -> None:
    state = OnlineState.fresh("m", WIDTH)
    for _ in range(40):
        state, _ = learn(state, *SHORT, tier=1, quality=1.0, reporter=None, settings=SETTINGS)
        state, _ = learn(state, *LONG, tier=1, quality=0.0, reporter=None, settings=SETTINGS)
    assert state.compared == 0 and state.mix is None and state.mix_gate == 0.0
    assert state.describe(SETTINGS)["mix"]["comparisons"] == 0


def test_without_evidence_against_it_the_mix_keeps_the_shipped_order() -> None:
    """Ties everywhere (both tiers equally good): the prior holds the shipped order."""
    rows = np.array([[z, length, 0.5, 1.0] for z in (-1.0, 1.0) for length in (-1.0, 1.0)]
                    * 10)
    mix = fit_mix(rows)
    assert mix is not None and mix.weights[0] > 0 and abs(mix.weights[1]) < 1e-9
    assert mix.logit(1.0, 0.0) > mix.logit(-1.0, 0.0)
