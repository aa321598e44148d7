"""The routing metrics (``engine.training.evaluate``): hand-computed small cases (ties included),
exact agreement with the reference ``routing_metrics.py`` (in-process on arbitrary rows, and as
a subprocess on a file), multi-model and multi-tier routing.

The agreement tests need the evaluation data folder (its ``routing_metrics.py`` and
``routing/`` files), which is not part of this repository: set ``LLM_ROUTER_EVAL_DATA`` to it,
or they are skipped.
"""

from __future__ import annotations

import doctest
import importlib.util
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.training import evaluate as routing_eval
from engine.training.evaluate import (
    MultiTierPoint,
    RoutingRow,
    cheapest_at,
    curve_at,
    curve_exact,
    evaluate_choices,
    evaluate_routes,
    model_ladder,
    multi_tier_points,
    pareto_front,
    parse_rows,
    summarize,
    tier_split,
)

# The evaluation data folder; unset, a path that does not exist, so the tests using it skip.
EVAL_DATA = Path(os.environ.get("LLM_ROUTER_EVAL_DATA") or "/nonexistent")
SCRIPT = EVAL_DATA / "routing_metrics.py"
needs_eval_data = pytest.mark.skipif(
    not SCRIPT.is_file(),
    reason="set LLM_ROUTER_EVAL_DATA to the evaluation data folder (with routing_metrics.py)",
)


def row(name: str, weak: float, strong: float, **fields: object) -> RoutingRow:
    return RoutingRow(name, f"prompt {name}", weak, strong, **fields)  # type: ignore[arg-type]


# weak 0.5, strong 0.75; B and C tie (one gains, one loses: the tie group nets zero)
FOUR = [row("A", 0, 1), row("B", 0, 1), row("C", 1, 0), row("D", 1, 1)]
FOUR_SCORES = [0.9, 0.5, 0.5, 0.1]


def reference_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("routing_metrics", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_doctests() -> None:
    assert doctest.testmod(routing_eval).failed == 0


def test_exact_curve_by_hand() -> None:
    assert curve_exact(FOUR, FOUR_SCORES) == [(0.0, 0.5), (0.25, 0.75), (0.75, 0.75),
                                              (1.0, 0.75)]
    s = summarize(FOUR, FOUR_SCORES)
    # area 0.25*(0.5+0.75)/2 + 0.5*0.75 + 0.25*0.75 = 0.71875; (0.71875-0.5)/0.25
    assert s.apgr == pytest.approx(0.875)
    assert s.cpt50 == pytest.approx(0.125)  # target 0.625, a quarter into the first segment
    assert s.cpt80 == pytest.approx(0.2)
    assert (s.weak, s.strong) == (0.5, 0.75)


def test_routellm_curve_by_hand() -> None:
    # decile thresholds of [0.1, 0.5, 0.5, 0.9]: 0.1 (all), 0.22-0.5 (A, B, C), 0.54-0.78
    # (A), and "above 0.9" (none): the same corners as the exact curve, so the same area
    s = summarize(FOUR, FOUR_SCORES, mode="routellm")
    assert s.points[0] == (0.0, 0.5)
    assert s.points[-1] == (1.0, 0.75)
    assert sorted(set(s.points)) == [(0.0, 0.5), (0.25, 0.75), (0.75, 0.75), (1.0, 0.75)]
    assert s.apgr == pytest.approx(0.875)


def test_all_tied_is_random_routing() -> None:
    s = summarize(FOUR, [0.3] * 4)
    assert s.points == ((0.0, 0.5), (1.0, 0.75))
    assert (s.apgr, s.cpt50, s.cpt80) == pytest.approx((0.5, 0.5, 0.8))


def test_reversed_scores_fall_below_random() -> None:
    assert summarize(FOUR, [-x for x in FOUR_SCORES]).apgr < 0.5


def test_cpt_never_reached_is_nan() -> None:
    # strong below weak: the 80% target lies above every point of the curve
    assert math.isnan(routing_eval.cpt([(0.0, 0.5), (1.0, 0.0)], 0.5, 0.9, 0.8))


def test_summarize_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="one score per row"):
        summarize(FOUR, [1.0])
    with pytest.raises(ValueError, match="one score per row"):
        summarize([], [])
    with pytest.raises(ValueError, match="mode"):
        summarize(FOUR, FOUR_SCORES, mode="auc")  # type: ignore[arg-type]


def test_curve_at_reads_quality_pgr_and_cost() -> None:
    rows = [row(n, w, s, weak_cost=1.0, strong_cost=9.0) for n, w, s in
            (("A", 0, 1), ("B", 0, 1), ("C", 1, 0), ("D", 1, 1))]
    points = curve_at(rows, FOUR_SCORES, shares=[0.0, 0.25, 0.5, 1.0])
    assert [p["quality"] for p in points] == pytest.approx([0.5, 0.75, 0.75, 0.75])
    assert [p["PGR"] for p in points] == pytest.approx([0.0, 1.0, 1.0, 1.0])
    # costs: 4 weak calls = 4/36; each strong call adds 8/36; half the B/C tie at 0.5
    assert [p["cost_vs_strong"] for p in points] == pytest.approx(
        [4 / 36, 12 / 36, 20 / 36, 1.0])
    assert "cost_vs_strong" not in curve_at(FOUR, FOUR_SCORES)[0]


def test_evaluate_routes_one_operating_point() -> None:
    rows = [row(n, w, s, weak_cost=1.0, strong_cost=3.0) for n, w, s in
            (("A", 0, 1), ("B", 0, 1), ("C", 1, 0), ("D", 1, 1))]
    out = evaluate_routes(rows, [True, False, False, False])
    assert out["quality"] == 0.75
    assert out["PGR"] == 1.0
    assert out["strong_fraction"] == 0.25
    assert out["cost_vs_always_strong"] == pytest.approx(6 / 12)


# -- parsing ------------------------------------------------------------------------------


def test_parse_rows_fields_and_filters() -> None:
    lines = [
        json.dumps({"id": 1, "prompt": "p", "weak_score": 0, "strong_score": 1,
                    "contaminated": True}),
        "",
        json.dumps({"id": "b", "prompt": "q", "weak_score": 0.2, "strong_score": 0.5,
                    "weak_cost_usd_est": 0.1, "strong_cost_usd_est": 0.3,
                    "scores": {"m": 1}, "costs_usd": {"m": 0.5}}),
    ]
    rows = parse_rows(lines)
    assert [r.id for r in rows] == ["1", "b"]
    assert rows[1].weak_cost == 0.1 and rows[1].strong_cost == 0.3
    assert rows[1].scores == {"m": 1.0} and rows[1].costs == {"m": 0.5}
    assert rows[1].gain == pytest.approx(0.3)
    assert [r.id for r in parse_rows(lines, decontaminated=True)] == ["b"]


@pytest.mark.parametrize("line", ["not json", '{"id": 1, "prompt": "p"}', "[1, 2]"])
def test_parse_rows_rejects_malformed_lines(line: str) -> None:
    with pytest.raises(ValueError, match="line 1"):
        parse_rows([line])


# -- agreement with the reference script -----------------------------------------------------

scores_st = st.floats(0, 1, allow_nan=False).map(lambda x: round(x, 1))  # plenty of ties
pairs_st = st.tuples(st.sampled_from([0.0, 1.0, 0.5]), st.sampled_from([0.0, 1.0, 0.25]))


@needs_eval_data
@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(pairs_st, scores_st), min_size=2, max_size=40),
       st.sampled_from(["exact", "routellm"]))
def test_matches_reference_script_exactly(data: list, mode: str) -> None:
    rows = [row(str(i), w, s) for i, ((w, s), _) in enumerate(data)]
    if sum(r.weak_score for r in rows) == sum(r.strong_score for r in rows):
        return  # no gap to recover: both divide by zero
    scores = [x for _, x in data]
    script = reference_script()
    raw = [{"weak_score": r.weak_score, "strong_score": r.strong_score} for r in rows]
    theirs = script.summarize(raw, scores, mode)
    mine = summarize(rows, scores, mode=mode).as_dict()
    for key in ("APGR", "CPT50", "CPT80"):
        assert mine[key] == theirs[key] or (math.isnan(mine[key]) and math.isnan(theirs[key]))


@needs_eval_data
def test_matches_reference_script_on_a_file(tmp_path: Path) -> None:
    source = EVAL_DATA / "routing" / "routerbench_arc_mbpp_winogrande_dev.jsonl"
    lines = source.read_text(encoding="utf-8").splitlines()[:120]
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = parse_rows(lines)
    rng = random.Random(7)
    scores = [round(rng.random(), 2) for _ in rows]
    pred = tmp_path / "pred.jsonl"
    pred.write_text("".join(json.dumps({"id": r.id, "p_strong": s}) + "\n"
                            for r, s in zip(rows, scores, strict=True)), encoding="utf-8")
    for mode in ("exact", "routellm"):
        done = subprocess.run([sys.executable, str(SCRIPT), str(data), "--pred", str(pred),
                               "--mode", mode], capture_output=True, text=True, check=True)
        theirs = json.loads(done.stdout)
        mine = summarize(rows, scores, mode=mode).as_dict()
        assert {k: theirs[k] for k in mine} == mine
    # multi-model rows: one model per prompt
    models = [rng.choice(sorted(r.scores)) for r in rows]
    pred.write_text("".join(json.dumps({"id": r.id, "model": m}) + "\n"
                            for r, m in zip(rows, models, strict=True)), encoding="utf-8")
    done = subprocess.run([sys.executable, str(SCRIPT), str(data), "--pred", str(pred)],
                          capture_output=True, text=True, check=True)
    assert evaluate_choices(rows, models) == json.loads(done.stdout)


# -- multi-tier ---------------------------------------------------------------------------


def two_models(name: str, cheap_ok: float) -> RoutingRow:
    return row(name, cheap_ok, 1.0, weak_model="m0", strong_model="m1",
               weak_cost=1.0, strong_cost=10.0, scores={"m0": cheap_ok, "m1": 1.0},
               costs={"m0": 1.0, "m1": 10.0})


def test_multi_tier_by_hand() -> None:
    rows = [two_models("a", 1.0), two_models("b", 0.0)]
    points = {p.shares: p for p in multi_tier_points(rows, [0.1, 0.9], ["m0", "m1"], steps=2)}
    assert points[(1.0, 0.0)].quality_vs_strong == 0.5
    assert points[(1.0, 0.0)].cost_vs_strong == pytest.approx(0.1)
    assert points[(0.5, 0.5)].quality_vs_strong == 1.0  # "a" cheap, "b" strong
    assert points[(0.5, 0.5)].cost_vs_strong == pytest.approx(0.55)
    assert points[(0.0, 1.0)].cost_vs_strong == pytest.approx(1.0)
    best = cheapest_at(points.values(), 1.0)
    assert best is not None and best.shares == (0.5, 0.5)
    assert cheapest_at(points.values(), 1.01) is None


def test_multi_tier_ties_split_in_proportion() -> None:
    rows = [two_models("a", 1.0), two_models("b", 0.0)]
    points = {p.shares: p for p in multi_tier_points(rows, [0.5, 0.5], ["m0", "m1"], steps=2)}
    assert points[(0.5, 0.5)].quality_vs_strong == pytest.approx(0.75)
    assert points[(0.5, 0.5)].cost_vs_strong == pytest.approx(0.55)


def test_pareto_front_and_tier_split() -> None:
    pts = [MultiTierPoint((1.0,), 0.5, 0.1), MultiTierPoint((1.0,), 0.4, 0.2),
           MultiTierPoint((1.0,), 0.9, 0.5), MultiTierPoint((1.0,), 0.9, 0.6)]
    assert [p.cost_vs_strong for p in pareto_front(pts)] == [0.1, 0.5]
    assert tier_split([0, 30, 30.5, 70, 71], [30, 70]) == [0, 0, 1, 1, 2]


@needs_eval_data
def test_model_ladder_on_routerbench() -> None:
    rows = parse_rows((EVAL_DATA / "routing" / "routerbench_arc_mbpp_winogrande_dev.jsonl")
                      .read_text(encoding="utf-8").splitlines())
    ladder = model_ladder(rows)
    assert ladder[0] == rows[0].weak_model and ladder[-1] == rows[0].strong_model
    assert ladder == ["mistralai/mixtral-8x7b-chat", "zero-one-ai/Yi-34B-Chat",
                      "gpt-4-1106-preview"]
    with pytest.raises(ValueError, match="per-model"):
        model_ladder(FOUR)
