"""The familiarity gate (``engine.core.routing.gate``): one request's similarity is the
training matrix's, a familiar request keeps the router's log-odds exactly, an unfamiliar one
is ordered by length, the percentile map inverts exactly (beyond the training range too),
training records the gate in the router file, and the shipped router leans on length for a
request unlike its training rows while the heuristic's signals still count.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_learned import FAST, synthetic_rows

from engine.core.cache.similarity import Embedder
from engine.core.config import Config, LearnedConfig, ModelConfig
from engine.core.routing.decide import decide_route
from engine.core.routing.gate import GRID, Gate, fit_gate, fold
from engine.core.routing.learned import (
    DEFAULT_MODEL_PATH,
    LearnedRouter,
    request_for_prompt,
)
from engine.errors import RouterError
from engine.training.fit import train_router

# The shipped router's training rows are multiple-choice questions, science, coding tasks
# and fill-in-the-blank sentences; these are not.
UNFAMILIAR = [
    "hey!! lol",
    "Can u plan my sister's surprise birthday party this saturday? budget 200 bucks",
    "Write me a cozy bedtime story about a sleepy hedgehog named Pim who can't find his "
    "favourite blanket, with a gentle ending and a little song he hums, for a four year old.",
]
FAMILIAR = ("Which of the following best describes the function of the mitochondria in a "
            "eukaryotic cell? A. protein synthesis B. energy production C. lipid storage "
            "D. cell division")


def random_gate(seed: int = 0, *, rows: int = 200, buckets: int = 64) -> tuple[Gate, dict]:
    """A gate fitted on random sparse rows, and those rows."""
    rng = np.random.default_rng(seed)
    per_row = rng.integers(3, 12, rows)
    indptr = np.concatenate([[0], np.cumsum(per_row)])
    start = 10
    indices = rng.integers(0, start + 5 * buckets, indptr[-1])
    values = rng.random(indptr[-1])
    data = {"indptr": indptr, "indices": indices, "values": values, "start": start}
    gate = fit_gate(indptr, indices, values, rng.normal(-1, 2, rows), rng.normal(5, 1, rows),
                    start=start, buckets=buckets, clusters=8)
    return gate, data


def test_one_request_has_the_similarity_of_its_row_in_the_matrix() -> None:
    gate, data = random_gate()
    matrix = fold(data["indptr"], data["indices"], data["values"], start=data["start"],
                  buckets=gate.buckets)
    nearest = (matrix @ gate.centroids).max(axis=1)
    for row in range(0, 200, 17):
        lo, hi = data["indptr"][row], data["indptr"][row + 1]
        indices, values = data["indices"][lo:hi], data["values"][lo:hi]
        keep = indices >= data["start"]
        alone = gate.similarity(indices[keep] - data["start"], values[keep])
        assert alone == pytest.approx(float(nearest[row]), abs=1e-5)
    assert gate.similarity(np.array([], np.int64), np.array([])) == 0.0


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_the_similarity_is_the_dense_formulation_to_the_bit(data: st.DataObject) -> None:
    # a request's n-gram block as the router gives it: sorted distinct buckets of a block
    # wider than the gate's, positive values (colliding after folding, some of them)
    gate, _ = random_gate(3, buckets=64)
    width = data.draw(st.sampled_from([64, 128, 4096]))
    indices = np.array(sorted(data.draw(st.sets(st.integers(0, width - 1), max_size=80))),
                       np.intp)
    values = np.array(data.draw(st.lists(st.floats(1e-3, 1.0), min_size=len(indices),
                                         max_size=len(indices))), np.float64)
    if not len(indices):
        assert gate.similarity(indices, values) == 0.0
        return
    folded = indices % gate.buckets
    bins = np.bincount(folded, weights=values)  # every bucket squared, then summed
    norm = math.sqrt(float(np.add.reduce(np.square(bins, out=bins))))
    rows = gate.centroids.take(folded, axis=0)
    dense = float(np.maximum.reduce(values.astype(np.float32) @ rows)) / norm
    assert gate.similarity(indices, values) == dense


def test_the_weight_opens_between_low_and_high() -> None:
    gate, _ = random_gate()
    assert float(gate.weight(gate.familiarity[0] - 1)) == 0.0
    assert float(gate.weight(gate.familiarity[-1] + 1)) == 1.0
    middle = float(gate.weight(np.interp((gate.low + gate.high) / 2, GRID, gate.familiarity)))
    assert 0.0 < middle < 1.0


def unfamiliar(gate: Gate) -> float:
    """A similarity at which the gate's weight is 0."""
    return float(gate.familiarity[0]) - 1.0


def halfway(gate: Gate) -> float:
    """A similarity at which the gate's weight is 0.5."""
    return float(np.interp((gate.low + gate.high) / 2, GRID, gate.familiarity))


def lean_all(gate: Gate, z: np.ndarray, lengths: np.ndarray, similarity: float) -> np.ndarray:
    return np.array([gate.lean(float(a), float(b), similarity)
                     for a, b in zip(z, lengths, strict=True)])


def test_a_familiar_request_keeps_its_log_odds_exactly() -> None:
    gate, _ = random_gate()
    z = np.array([-30.0, -1.234567, 0.0, 2.5, 40.0])
    assert np.array_equal(lean_all(gate, z, np.full(5, 3.0), float(gate.familiarity[-1]) + 1), z)
    top = float(gate.familiarity[-1])
    assert [gate.lean(float(v), 3.0, top) for v in z] == z.tolist()


def test_an_unfamiliar_request_is_ordered_by_length_alone() -> None:
    gate, _ = random_gate()
    lengths = np.linspace(-2.0, 12.0, 60)  # beyond the training range on both sides
    for z in (-8.0, 0.0, 8.0):
        leaned = lean_all(gate, np.full(60, z), lengths, unfamiliar(gate))
        assert np.all(np.diff(leaned) > 0)
        assert np.allclose(leaned, lean_all(gate, np.full(60, -z), lengths, unfamiliar(gate)))
    # A training row at a length's percentile gets the log-odds at that same percentile.
    assert gate.lean(7.0, float(gate.lengths[30]), unfamiliar(gate)) == pytest.approx(
        gate.logits[30])
    # Halfway: between the two orders, and still increasing in each.
    half = lean_all(gate, np.array([-1.0, 1.0]), np.array([5.0, 5.0]), halfway(gate))
    assert half[0] < half[1]


def test_the_percentile_map_inverts_exactly() -> None:
    from engine.core.routing.gate import _inverse, _percentile

    gate, _ = random_gate()
    q = gate.logits.tolist()
    z = np.concatenate([np.linspace(-50, 50, 101), gate.logits])
    assert np.allclose([_inverse(_percentile(float(v), q), q) for v in z], z, atol=1e-9)


def test_one_request_is_leaned_as_the_formula_says() -> None:
    # The module docstring's map, written here with numpy: percentiles through the
    # quantiles (linear beyond them), mixed by the weight, put back on the log-odds' scale.
    def percentile(v: np.ndarray, q: np.ndarray) -> np.ndarray:
        span = q[-1] - q[0]
        return np.where(v < q[0], (v - q[0]) / span,
                        np.where(v > q[-1], 1 + (v - q[-1]) / span, np.interp(v, q, GRID)))

    def inverse(c: np.ndarray, q: np.ndarray) -> np.ndarray:
        span = q[-1] - q[0]
        return np.where(c < 0, q[0] + c * span,
                        np.where(c > 1, q[-1] + (c - 1) * span, np.interp(c, GRID, q)))

    gate, _ = random_gate(1)
    rng = np.random.default_rng(7)
    sims = np.concatenate([rng.uniform(-0.1, 1.1, 300), gate.familiarity,
                           np.interp(np.linspace(0.04, 0.07, 50), GRID, gate.familiarity)])
    z = np.concatenate([rng.normal(-1, 4, len(sims) - 101), gate.logits])
    length = np.concatenate([rng.normal(5, 2, len(sims) - 101), gate.lengths])
    m = np.interp(sims, gate.familiarity, GRID)
    w = np.clip((m - gate.low) / (gate.high - gate.low), 0.0, 1.0)
    want = np.where(w >= 1.0, z, inverse(w * percentile(z, gate.logits)
                                         + (1 - w) * percentile(length, gate.lengths),
                                         gate.logits))
    for i in range(len(sims)):
        assert gate.weight(float(sims[i])) == pytest.approx(float(w[i]), abs=1e-9)
        got = gate.lean(float(z[i]), float(length[i]), float(sims[i]))
        assert got == pytest.approx(float(want[i]), abs=1e-9)
        if w[i] >= 1.0:
            assert got == z[i]


def test_a_damaged_gate_record_is_a_router_error() -> None:
    router = train_router(synthetic_rows(), config=FAST, folds=3).router
    raw = router.to_dict()
    assert raw["info"]["gate"]["measure"] == "character n-grams"
    for damage in ({"logits": list(range(101))[::-1]}, {"lengths": [1.0, 2.0]},
                   {"centroids": {**raw["info"]["gate"]["centroids"], "length": 3}},
                   {"low": "soon"}):
        bad = {**raw, "info": {**raw["info"], "gate": {**raw["info"]["gate"], **damage}}}
        with pytest.raises(RouterError, match="damaged"):
            LearnedRouter.from_dict(bad)


def test_training_records_the_gate_and_the_file_scores_the_same(tmp_path) -> None:
    rows = synthetic_rows()
    router = train_router(rows, config=FAST, folds=3).router
    assert router.gate is not None
    path = tmp_path / "router.json"
    router.save(path)
    again = LearnedRouter.load(path)
    ungated = replace(router, gate=None)
    for text in [*UNFAMILIAR, FAMILIAR, rows[0].prompt, rows[1].prompt]:
        one, two = router.assess(request_for_prompt(text)), again.assess(request_for_prompt(text))
        assert one.logit == two.logit
    # Its own training rows are what it knows: the gate leaves nearly all of them alone.
    kept = [router.assess(request_for_prompt(r.prompt)).logit
            == ungated.assess(request_for_prompt(r.prompt)).logit for r in rows]
    assert sum(kept) >= 0.9 * len(rows)


@pytest.fixture(scope="module")
def shipped() -> LearnedRouter:
    return LearnedRouter.load(DEFAULT_MODEL_PATH, embedder=Embedder())


def test_the_shipped_router_leans_on_length_for_what_it_never_saw(
    shipped: LearnedRouter,
) -> None:
    assert shipped.gate is not None
    ungated = replace(shipped, gate=None)
    known = request_for_prompt(FAMILIAR)
    assert shipped.assess(known).logit == ungated.assess(known).logit
    beliefs = [shipped.assess(request_for_prompt(text)) for text in UNFAMILIAR]
    assert all(b.logit != ungated.assess(request_for_prompt(t)).logit
               for b, t in zip(beliefs, UNFAMILIAR, strict=True))
    assert beliefs[0].logit < beliefs[1].logit < beliefs[2].logit  # by length

    # The heuristic's signals still count: a reasoning cue raises the routed score.
    config = Config(models=(ModelConfig(name="cheap", provider="openai", model="c", tier=1),
                            ModelConfig(name="strong", provider="openai", model="s", tier=2)),
                    learned=LearnedConfig(model="builtin", model_weight=0.7))
    plain, cued = (decide_route(request_for_prompt(t), config, learned=shipped)
                   for t in (UNFAMILIAR[1], UNFAMILIAR[1] + ". Think step by step."))
    assert cued.value - plain.value >= 0.3 * 15  # the cue's 15 points at weight 0.3, at least
    assert plain.router == "heuristic+learned"


def test_fitting_is_deterministic() -> None:
    one, _ = random_gate(3)
    two, _ = random_gate(3)
    assert one.to_dict() == two.to_dict()


def test_a_file_without_a_gate_scores_as_its_router_alone() -> None:
    # Files written before the gate existed load, and their beliefs are the router's own.
    router = train_router(synthetic_rows(), config=FAST, folds=3).router
    raw = router.to_dict()
    del raw["info"]["gate"]
    old = LearnedRouter.from_dict(raw)
    assert old.gate is None
    for text in UNFAMILIAR:
        request = request_for_prompt(text)
        assert old.assess(request).logit == replace(router, gate=None).assess(request).logit
