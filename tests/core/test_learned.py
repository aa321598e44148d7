"""The trained router (``engine.core.routing.learned``, ``engine.training.fit``) and the ``router``
CLI commands (``api.cli.router``): train -> save -> load gives identical scores, features are the
same in every process, whole-conversation scoring, the shipped model, and the CLI end to end
on small files.
"""

from __future__ import annotations

import argparse
import doctest
import io
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.cli.plot import render_curves_svg
from api.cli.router import ProgressBar, add_router_commands, run_router_command
from engine.core.cache.similarity import Embedder
from engine.core.routing import conversation, learned
from engine.core.routing.learned import (
    DEFAULT_MODEL_PATH,
    FeatureConfig,
    LearnedRouter,
    blend,
    conversation_text,
    extract_features,
    request_for_prompt,
)
from engine.errors import RouterError
from engine.messages import ChatRequest, Message, TextPart, ToolResult
from engine.training.evaluate import RoutingRow, summarize
from engine.training.fit import (
    MONOTONE,
    build_matrix,
    cross_validate,
    stratified_folds,
    targets,
    train_router,
)

FAST = FeatureConfig(embeddings=False, word_buckets=1 << 12, char_buckets=1 << 12)
HARD = "Prove rigorously that the {} group is solvable and derive its composition series."
EASY = "What colour is a ripe {}?"
SUBJECTS = ["banana", "cherry", "lemon", "plum", "mango", "apple", "kiwi", "pear", "lime",
            "fig", "grape", "peach", "melon", "apricot", "olive", "date", "guava", "papaya"]


def turn(role: str, text: str) -> Message:
    return Message(role, (TextPart(text),))  # type: ignore[arg-type]


def synthetic_rows() -> list[RoutingRow]:
    """Hard prompts need the strong model (gain +1); easy ones do not (0, sometimes -1)."""
    rows = []
    for i, s in enumerate(SUBJECTS * 2):
        rows.append(RoutingRow(f"h{i}", HARD.format(s), 0.0, 1.0, source="toy/hard"))
        weak, strong = (1.0, 0.0) if i % 5 == 0 else (1.0, 1.0)
        rows.append(RoutingRow(f"e{i}", EASY.format(s), weak, strong, source="toy/easy"))
    return rows


@pytest.fixture(scope="module")
def toy_router() -> LearnedRouter:
    return train_router(synthetic_rows(), config=FAST, folds=3).router


@pytest.fixture(scope="module")
def shipped() -> LearnedRouter:
    return LearnedRouter.load(DEFAULT_MODEL_PATH, embedder=Embedder())


def test_doctests() -> None:
    assert doctest.testmod(learned).failed == 0
    assert doctest.testmod(conversation).failed == 0


# -- training ------------------------------------------------------------------------------------


def test_training_learns_a_separable_toy_problem() -> None:
    rows = synthetic_rows()
    training = train_router(rows, config=FAST, folds=3, l2=(1e-2, 1e-3))
    assert len(training.validations) == 2
    # ranking every hard prompt first gives 0.89 (easy ones that lose and tie look alike)
    assert training.chosen.apgr > 0.85  # out-of-fold
    router = training.router
    assert router.info["cross_validation"]["folds"] == 3
    assert router.info["trained_on"]["sources"] == {"toy/hard": 36, "toy/easy": 36}
    hard = router.score_prompt(HARD.format("quince"))
    easy = router.score_prompt(EASY.format("quince"))
    assert 0.0 < easy < hard < 1.0


def test_length_weights_stay_non_negative_unless_asked() -> None:
    """On rows where the long prompts are the easy ones, a free fit learns "longer means
    cheaper"; the default holds those weights at zero instead (``MONOTONE``)."""
    rows = []
    for i, s in enumerate(SUBJECTS * 2):
        rows.append(RoutingRow(f"s{i}", EASY.format(s), 0.0, 1.0, source="toy/short"))
        long = EASY.format(s) + " It grows on trees in warm places, people say." * (2 + i % 4)
        rows.append(RoutingRow(f"l{i}", long, 1.0, 1.0, source="toy/long"))

    def weights(router: LearnedRouter) -> dict[str, float]:
        dense = router.to_dict()["dense"]
        return {name: dense[name]["weight"] for name in MONOTONE}

    free = weights(train_router(rows, config=FAST, folds=3, monotone=()).router)
    assert min(free.values()) < 0
    bounded = train_router(rows, config=FAST, folds=3).router
    assert min(weights(bounded).values()) >= 0
    assert 0.0 in weights(bounded).values()  # held at zero, not merely small
    assert bounded.info["monotone"] == list(MONOTONE)
    with pytest.raises(ValueError, match="monotone"):
        train_router(rows, config=FAST, folds=3, monotone=("no_such_feature",))


def test_train_save_load_gives_identical_scores(toy_router: LearnedRouter,
                                                tmp_path: Path) -> None:
    path = tmp_path / "router.json"
    toy_router.save(path)
    loaded = LearnedRouter.load(path)
    prompts = [HARD.format("x"), EASY.format("y"), "", "and why?", "ü" * 5000]
    assert [loaded.score_prompt(p) for p in prompts] == [toy_router.score_prompt(p)
                                                        for p in prompts]
    assert loaded.to_dict() == toy_router.to_dict()
    assert json.loads(path.read_text())["format"] == "llm-router/learned-router"


def test_cross_validation_scores_every_row_out_of_fold() -> None:
    rows = synthetic_rows()
    x = build_matrix([r.prompt for r in rows], FAST)
    cv = cross_validate(x, targets(rows, "gain"), rows, folds=4)
    assert len(cv.margins) == len(rows) and len(cv.fold_apgr) == 4
    assert cv.apgr == summarize(rows, cv.margins.tolist()).apgr
    assert set(cv.by_source) == {"toy"}
    with pytest.raises(ValueError, match="folds"):
        cross_validate(x, targets(rows, "gain"), rows, folds=1)


def test_stratified_folds_keep_the_class_mix() -> None:
    classes = [1.0] * 10 + [0.0] * 20
    fold = stratified_folds(classes, 5, seed=3)
    for k in range(5):
        members = [c for c, f in zip(classes, fold, strict=True) if f == k]
        assert members.count(1.0) == 2 and members.count(0.0) == 4


def test_targets() -> None:
    rows = [RoutingRow("a", "", 0, 1), RoutingRow("b", "", 1, 0), RoutingRow("c", "", 0.2, 0.5)]
    assert targets(rows, "binary").tolist() == [1.0, 0.0, 1.0]
    assert targets(rows, "gain").tolist() == pytest.approx([1.0, 0.0, 0.65])
    with pytest.raises(ValueError):
        targets(rows, "soft")  # type: ignore[arg-type]


# -- features ------------------------------------------------------------------------------------

FEATURE_SCRIPT = """
import json, sys
from engine.core.routing.learned import FeatureConfig, extract_features, request_for_prompt
f = extract_features(request_for_prompt(sys.argv[1]), FeatureConfig(embeddings=False))
print(json.dumps([f.dense.tolist(), f.indices.tolist(), f.values.tolist()]))
"""


def test_features_are_the_same_in_every_process() -> None:
    prompt = "Explain step by step why the sky is blue. ```x = 1``` Ünïcode too?"
    mine = extract_features(request_for_prompt(prompt), FeatureConfig(embeddings=False))
    for seed in ("1", "987"):  # Python's str hash differs per seed; our hashes must not
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", FEATURE_SCRIPT, prompt], env=env,
                              capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parents[2])
        dense, indices, values = json.loads(done.stdout)
        assert dense == mine.dense.tolist()
        assert indices == mine.indices.tolist()
        assert values == mine.values.tolist()


def test_feature_blocks() -> None:
    f = extract_features(request_for_prompt("Hello world, hello!"), FAST)
    n_dense = len(learned.DENSE_NAMES)
    assert len(f.dense) == n_dense and len(f.embedding) == 0
    words = f.indices[f.indices < n_dense + FAST.word_buckets]
    chars = f.indices[f.indices >= n_dense + FAST.word_buckets]
    assert len(words) and len(chars) and f.indices.max() < FAST.size
    # each block has unit norm
    in_words = f.indices < n_dense + FAST.word_buckets
    assert np.linalg.norm(f.values[in_words]) == pytest.approx(FAST.word_scale)
    assert np.linalg.norm(f.values[~in_words]) == pytest.approx(FAST.char_scale)
    empty = extract_features(ChatRequest(messages=()), FAST)
    assert len(empty.indices) == 0


def test_embeddings_need_an_embedder() -> None:
    with pytest.raises(RouterError, match="embedder"):
        extract_features(request_for_prompt("hi"), FeatureConfig(embeddings=True))


def test_feature_config_checks_buckets() -> None:
    with pytest.raises(ValueError, match="power of two"):
        FeatureConfig(word_buckets=1000)
    assert FeatureConfig.from_dict({"char_ngrams": [3], "unknown": 1}).char_ngrams == (3,)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["user", "assistant"]), st.text(max_size=300)),
                max_size=6))
def test_any_conversation_scores_in_0_1(toy_router: LearnedRouter,
                                        turns: list[tuple[str, str]]) -> None:
    p = toy_router.score(ChatRequest(messages=tuple(turn(r, t) for r, t in turns)))
    assert 0.0 <= p <= 1.0


# -- whole conversations -------------------------------------------------------------------------


def test_conversation_text_puts_the_last_message_first() -> None:
    request = ChatRequest(messages=(turn("user", "first"), turn("assistant", "ok"),
                                    turn("user", "second"), turn("user", "third")))
    assert conversation_text(request) == "third\nsecond\nfirst"
    assert conversation_text(request, max_chars=8) == "third\nse"
    tools = ChatRequest(messages=(Message("user", (ToolResult("t1", "42 rows"),)),))
    assert conversation_text(tools) == "42 rows"
    assert conversation_text(ChatRequest(messages=())) == ""


def follow_up(question: str) -> tuple[ChatRequest, ChatRequest]:
    alone = ChatRequest(messages=(turn("user", "and why?"),))
    after = ChatRequest(messages=(turn("user", question), turn("assistant", "Here it is."),
                                  turn("user", "and why?")))
    return alone, after


def test_a_follow_up_scores_like_its_question(toy_router: LearnedRouter) -> None:
    alone, after = follow_up(HARD.format("quince"))
    assert toy_router.score(after) > toy_router.score(alone)


def test_shipped_model_scores_follow_ups_by_their_question(shipped: LearnedRouter) -> None:
    question = ("Prove that every finite integral domain is a field, and analyze whether the "
                "statement still holds for infinite rings.")
    alone, after = follow_up(question)
    assert shipped.score(after) > shipped.score(alone)


# -- the shipped model ---------------------------------------------------------------------------


def test_shipped_model_is_trained_on_permissive_rows_only(shipped: LearnedRouter) -> None:
    sources = shipped.info["trained_on"]["sources"]
    assert set(sources) == {"routellm/mmlu", "routerbench/arc-challenge",
                            "routerbench/mbpp", "routerbench/winogrande"}
    names = [f["name"] for f in shipped.info["files"]]
    assert names == ["routellm_mmlu_dev.jsonl", "routerbench_arc_mbpp_winogrande_dev.jsonl"]
    assert shipped.config.embeddings


def test_shipped_model_scores_a_long_prompt(shipped: LearnedRouter) -> None:
    # How fast is a benchmark's question (BENCHMARKS.md), not this test's.
    request = request_for_prompt("Compare the trade-offs of B-trees and LSM trees. " * 20)
    p = shipped.score(request)
    assert 0.0 < p < 1.0
    assert shipped.score(request) == p  # deterministic


def test_remembered_features_are_the_fresh_ones_read_only(shipped: LearnedRouter) -> None:
    # A repeated question (a cache hit is one) is routed from its remembered features; they
    # must be exactly what extracting them again gives, and nobody may change them.
    _, after = follow_up("What is the capital of France, and why did it become the capital?")
    fresh = extract_features(after, shipped.config, embedder=shipped.embedder)
    first, again = shipped.features(after), shipped.features(after)
    assert again is first
    for name in ("dense", "embedding", "indices", "values"):
        assert np.array_equal(getattr(first, name), getattr(fresh, name))
        assert not getattr(first, name).flags.writeable
    assert shipped.assess(after).p == shipped.assess(after).p
    long = request_for_prompt("Compare B-trees and LSM trees. " * 200)  # not remembered
    assert shipped.features(long) is not shipped.features(long)


# -- loading and blending ------------------------------------------------------------------------


def test_load_rejects_bad_files(toy_router: LearnedRouter, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    for text, match in (("not json", "cannot read"), ("{}", "not an llm-router"),
                        (json.dumps({**toy_router.to_dict(), "version": 99}), "version 99")):
        bad.write_text(text)
        with pytest.raises(RouterError, match=match):
            LearnedRouter.load(bad)
    raw = toy_router.to_dict()
    raw["features"]["word_buckets"] = 1 << 13
    with pytest.raises(RouterError, match="weights"):
        LearnedRouter.from_dict(raw)
    del raw["bias"]
    with pytest.raises(RouterError, match="damaged"):
        LearnedRouter.from_dict(raw)
    with pytest.raises(RouterError, match="cannot read"):
        LearnedRouter.load(tmp_path / "missing.json")


def test_blend() -> None:
    assert blend(0.3, 20, 0.5) == pytest.approx(25.0)
    assert blend(1.0, 100, 1.0) == 100.0
    with pytest.raises(ValueError, match=r"0\.\.1"):
        blend(0.3, 20, 1.5)


# -- the CLI -------------------------------------------------------------------------------------


def cli(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="llm-router")
    add_router_commands(parser.add_subparsers(dest="command"))
    out, err = io.StringIO(), io.StringIO()
    status = run_router_command(parser.parse_args(list(argv)), out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def write_rows(path: Path, rows: list[RoutingRow], *, tiers: bool = False) -> Path:
    with path.open("w") as f:
        for r in rows:
            raw = {"id": r.id, "prompt": r.prompt, "source": r.source, "subset": "",
                   "weak_model": "cheap", "strong_model": "big", "weak_score": r.weak_score,
                   "strong_score": r.strong_score}
            if tiers:
                mid = r.strong_score if len(r.prompt) % 2 else r.weak_score
                raw |= {"weak_cost_usd": 1.0, "strong_cost_usd": 10.0,
                        "scores": {"cheap": r.weak_score, "mid": mid, "big": r.strong_score},
                        "costs_usd": {"cheap": 1.0, "mid": 2.0, "big": 10.0}}
            f.write(json.dumps(raw) + "\n")
    return path


def test_cli_eval_prints_metrics_and_draws_svg(tmp_path: Path) -> None:
    rows = synthetic_rows()
    data = write_rows(tmp_path / "rows.jsonl", rows, tiers=True)
    svg = tmp_path / "curve.svg"
    status, out, err = cli("router", "eval", str(data), "--router", "heuristic", "--router",
                           "length", "--router", "random", "--plot", str(svg), "--no-progress")
    assert status == 0, err
    assert "APGR" in out and "CPT(50%)" in out and "quality / cost curve" in out
    assert "multi-tier routing over cheap < mid < big" in out
    root = ET.fromstring(svg.read_text())
    assert root.tag.endswith("svg") and len(root.findall("{*}polyline")) == 3

    status, out, _ = cli("router", "eval", str(data), "--router", "length", "--json",
                         "--mode", "routellm")
    report = json.loads(out)
    expected = summarize(rows, [float(len(r.prompt)) for r in rows], mode="routellm")
    assert report["routers"]["length"]["APGR"] == expected.apgr
    assert report["routers"]["length"]["CPT80"] == expected.cpt80
    assert report["multi_tier"]["ladder"] == ["cheap", "mid", "big"]


def test_cli_train_then_eval(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "rows.jsonl", synthetic_rows())
    model = tmp_path / "router.json"
    status, out, err = cli("router", "train", str(data), "-o", str(model), "--folds", "3",
                           "--no-embeddings", "--l2", "0.01,0.001", "--no-progress")
    assert status == 0, err
    assert "cross-validated APGR" in out and "<- chosen" in out and model.is_file()
    pred = tmp_path / "pred.jsonl"
    status, out, err = cli("router", "eval", str(data), "--router", str(model), "--router",
                           f"blend:{model}:0.5", "--json", "--pred-out", str(pred))
    assert status == 0
    assert "trained on these rows" in err  # in-sample numbers are flagged
    report = json.loads(out)
    assert report["routers"][str(model)]["APGR"] > 0.85
    assert len(pred.read_text().splitlines()) == 72


def test_cli_progress_bar_and_errors(tmp_path: Path) -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream, enabled=True, width=10)
    for i in range(1, 201):
        bar("scoring", i, 200)
    text = stream.getvalue()
    assert text.count("\r") == 101 and text.endswith("100% 200/200\n")
    data = write_rows(tmp_path / "rows.jsonl", synthetic_rows()[:6])
    assert cli("router", "eval", str(data), "--router", "nonsense")[0] == 2
    assert cli("router", "eval", str(data), "--router", "blend:x.json:7")[0] == 2
    assert cli("router", "eval", str(tmp_path / "missing.jsonl"))[0] == 2
    (tmp_path / "bad.jsonl").write_text("{}\n")
    status, _, err = cli("router", "eval", str(tmp_path / "bad.jsonl"))
    assert status == 2 and "line 1" in err
    assert "no 'id' (a row needs id, prompt, weak_score and strong_score)" in err
    assert "KeyError" not in err
    (tmp_path / "bad.jsonl").write_text('{"id": 1, "prompt": "p"}\n[1, 2]\n')
    status, _, err = cli("router", "eval", str(tmp_path / "bad.jsonl"))
    assert status == 2 and "line 1: not a routing row: no 'weak_score'" in err
    (tmp_path / "bad.jsonl").write_text('{"id": 1,\n')
    status, _, err = cli("router", "eval", str(tmp_path / "bad.jsonl"))
    assert status == 2 and "line 1: not a routing row: not JSON" in err
    assert cli("router", "eval", str(data), "--plot", str(tmp_path / "x.gif"))[0] == 2
    status, _, err = cli("router", "eval", str(data), "--tier1-max", "90", "--tier2-max", "10")
    assert status == 2 and "need 0 <= tier1-max <= tier2-max <= 100" in err


def test_cli_png_without_a_renderer_prints_results_then_falls_back_to_svg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_rows(tmp_path / "rows.jsonl", synthetic_rows()[:12])
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no rsvg-convert, no ImageMagick
    status, out, err = cli("router", "eval", str(data), "--plot", str(tmp_path / "x.png"),
                           "--no-progress")
    assert status == 0, err
    assert "APGR" in out  # the results are not thrown away
    assert "rsvg-convert" in err and "ImageMagick" in err and "x.svg" in err
    assert not (tmp_path / "x.png").exists()
    ET.fromstring((tmp_path / "x.svg").read_text())


def test_svg_legend_below_curves_rounded_ticks_and_in_sample_note() -> None:
    curves = [("a", [(0.0, 0.677), (0.5, 0.69), (1.0, 0.708)]),
              ("b", [(0.0, 0.677), (1.0, 0.708)])]
    svg = render_curves_svg(curves, weak=0.677, strong=0.708, title="t",
                            note="in-sample: learned trained on these rows")
    root = ET.fromstring(svg)
    frame = root.findall("{*}rect")[1]
    plot_bottom = float(frame.get("y", 0)) + float(frame.get("height", 0))
    texts = {t.text: t for t in root.findall("{*}text")}
    assert all(float(texts[label].get("y", 0)) > plot_bottom for label in ("a", "b"))
    assert "in-sample: learned trained on these rows" in texts
    ticks = [t.text for t in root.findall("{*}text") if t.get("text-anchor") == "end"
             and t.text and t.text[0].isdigit() and "." in t.text]
    assert ticks == ["0.67", "0.68", "0.69", "0.70", "0.71"]


def has_imagemagick() -> bool:
    tool = shutil.which("magick") or shutil.which("convert")
    if tool is None:
        return False
    done = subprocess.run([tool, "-version"], capture_output=True, text=True, check=False)
    return done.returncode == 0 and "ImageMagick" in done.stdout


@pytest.mark.skipif(not has_imagemagick(), reason="no ImageMagick")
def test_cli_png_through_imagemagick(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "rows.jsonl", synthetic_rows())
    png = tmp_path / "curve.png"
    status, _, err = cli("router", "eval", str(data), "--plot", str(png))
    assert status == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_svg_escapes_labels() -> None:
    svg = render_curves_svg([("a<b & c", [(0.0, 0.1), (1.0, 0.2)])], weak=0.1, strong=0.2,
                            title="t")
    assert "a&lt;b &amp; c" in svg
    ET.fromstring(svg)
