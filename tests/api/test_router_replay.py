"""``llm-router router replay``: a labelled set as traffic with feedback, through the router's
own routing policy; the learning curve as a table, JSON and SVG. A subset of the RouterBench
dev rows when the evaluation data is there (``LLM_ROUTER_EVAL_DATA``), and bad arguments."""

from __future__ import annotations

import argparse
import io
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from api.cli.router import add_router_commands, run_router_command

DATA = os.environ.get("LLM_ROUTER_EVAL_DATA")
ROUTERBENCH = "routing/routerbench_arc_mbpp_winogrande_dev.jsonl"


def cli(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="llm-router")
    add_router_commands(parser.add_subparsers(dest="command"))
    out, err = io.StringIO(), io.StringIO()
    status = run_router_command(parser.parse_args(list(argv)), out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def subset(tmp_path: Path, rows: int) -> Path:
    """Every 3rd RouterBench dev row, so each subset (ARC, MBPP, Winogrande) is in it."""
    if DATA is None:
        pytest.skip("LLM_ROUTER_EVAL_DATA is not set")
    lines = (Path(DATA) / ROUTERBENCH).read_text().splitlines()[::3][:rows]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_replay_reports_the_learning_curve(tmp_path: Path) -> None:
    data = subset(tmp_path, 120)
    svg = tmp_path / "curve.svg"
    status, out, err = cli("router", "replay", str(data), "--every", "20", "--json",
                           "--plot", str(svg))
    assert status == 0, err
    report = json.loads(out)
    assert (report["traffic"], report["held_back"], report["every"]) == (60, 60, 20)
    assert [p["reports"] for p in report["curve"]] == [0, 20, 40, 60]
    assert report["curve"][0]["apgr"] == report["static_apgr"]
    assert all(0 <= p["apgr"] <= 1.5 and 0 <= p["gate"] <= 1 for p in report["curve"])
    assert report["learning"]["reports"] == 60 and report["learning"]["enabled"] is True
    root = ET.fromstring(svg.read_text())
    assert root.tag.endswith("svg") and len(root.findall("{*}polyline")) == 3

    status, table, _ = cli("router", "replay", str(data), "--every", "30")
    assert status == 0
    assert "held back" in table and "vs shipped" in table and "vs length" in table
    assert [line.split()[0] for line in table.splitlines()
            if line.split() and line.split()[0].isdigit()] == ["0", "30", "60"]


def test_replay_without_learning_stays_the_static_router(tmp_path: Path) -> None:
    data = subset(tmp_path, 60)
    status, out, err = cli("router", "replay", str(data), "--every", "10", "--json",
                           "--no-learning")
    assert status == 0, err
    report = json.loads(out)
    assert {p["apgr"] for p in report["curve"]} == {report["static_apgr"]}
    assert report["learning"] == {"enabled": False}


def test_a_shuffled_replay_is_fixed_by_its_seed(tmp_path: Path) -> None:
    """``--shuffle SEED``: another split and order than the file's, the same for one seed."""
    data = subset(tmp_path, 80)
    runs = []
    for seed in ("0", "0", "1", None):
        argv = ["router", "replay", str(data), "--every", "20", "--json"]
        status, out, err = cli(*argv, *(["--shuffle", seed] if seed else []))
        assert status == 0, err
        runs.append(json.loads(out))
    statics = [r["static_apgr"] for r in runs]
    assert runs[0]["curve"] == runs[1]["curve"]
    assert len(set(statics)) == 3 and statics[0] == statics[1]


def test_replay_with_comparisons_reports_both_tiers_on_a_share(tmp_path: Path) -> None:
    """``--compare 0.25``: a quarter of the reports, spread evenly, carry the other tier's
    labelled quality too, as a deployment's comparison reports would."""
    data = subset(tmp_path, 80)
    status, out, err = cli("router", "replay", str(data), "--every", "20", "--json",
                           "--compare", "0.25")
    assert status == 0, err
    report = json.loads(out)
    assert report["compared"] == 10 and report["learning"]["compared"] == 10
    assert report["learning"]["reports"] == 40


def test_an_erring_judge_flips_grades_of_comparisons_only(tmp_path: Path) -> None:
    """``--judge-errors RATE``: each grade of a comparison report is flipped with that
    probability (fixed draws), as a judge model that errs would grade; plain reports (a
    client's own verdict) are left alone."""
    data = subset(tmp_path, 80)
    runs = []
    for rate in ("0", "0.3", "0.3", "1"):
        status, out, err = cli("router", "replay", str(data), "--every", "20", "--json",
                               "--compare", "0.5", "--judge-errors", rate)
        assert status == 0, err
        runs.append(json.loads(out))
    assert [r["compared"] for r in runs] == [20] * 4
    assert [r["flipped"] for r in runs][0::3] == [0, 40]  # none, then both grades of each
    assert 0 < runs[1]["flipped"] < 40 and runs[1] == runs[2]


@pytest.mark.parametrize("argv, message", [
    (["--every", "0"], "--every must be at least 1"),
    (["--plot", "curve.png"], "write .svg"),
    (["--model", "router.txt"], "learned or FILE.json"),
    (["--compare", "1.5"], "--compare must be a share from 0 to 1"),
    (["--judge-errors", "-0.1"], "--judge-errors must be a probability from 0 to 1"),
])
def test_bad_arguments_exit_2_with_the_reason(tmp_path: Path, argv: list[str],
                                              message: str) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({
        "id": str(i), "prompt": f"question {i}", "weak_score": i % 2, "strong_score": 1,
    }) + "\n" for i in range(8)))
    status, _, err = cli("router", "replay", str(data), *argv)
    assert status == 2 and message in err


def two_kinds(tmp_path: Path) -> Path:
    """200 labelled rows of two kinds of request in blocks of two (so the traffic and the
    held-back rows both hold both): greetings, which the shipped router believes easy
    (log-odds about -4) but the cheap model fails, and a C++ task it believes three log-odds
    harder, where the strong model is no gain (both pass, or both fail). The shipped order
    between the kinds is the wrong way round by more than the correction's bound."""
    rows = []
    for i in range(200):
        greeting = (i // 2) % 2 == 1
        if greeting:
            prompt = f"hi {i + 3}"
            weak, strong = (1.0 if i % 5 == 0 else 0.0), 1.0
        else:
            prompt = (f"Implement a thread-safe LRU cache in C++ with O(1) operations, "
                      f"capacity {i + 3}, and explain the invariants step by step.")
            weak = strong = 0.0 if (i // 4) % 2 == 0 else 1.0
        rows.append({"id": f"r{i}", "prompt": prompt, "source": "fixture",
                     "subset": "greeting" if greeting else "code", "weak_model": "w",
                     "strong_model": "s", "weak_score": weak, "strong_score": strong})
    path = tmp_path / "two_kinds.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_regions_learn_which_kind_of_request_needs_the_strong_model(tmp_path: Path) -> None:
    """With comparison reports, what online learning adds (per-region levels, the default,
    and the mix) puts the kind that needs the strong model above the other; plain reports
    alone move nothing (only comparisons open the floors)."""
    data = two_kinds(tmp_path)
    status, out, err = cli("router", "replay", str(data), "--every", "50", "--json",
                           "--compare", "1")
    assert status == 0, err
    learned = json.loads(out)
    status, out, err = cli("router", "replay", str(data), "--every", "50", "--json",
                           "--compare", "1", "--no-regions")
    assert status == 0, err
    alone = json.loads(out)
    static = learned["static_apgr"]
    assert alone["static_apgr"] == static < 0.5  # the shipped order is the wrong way round
    assert learned["curve"][-1]["apgr"] > static + 0.3
    regions = learned["learning"]["regions"]
    assert regions["count"] == 2 and regions["shift"]["max"] > 0 > regions["shift"]["min"]
    assert alone["learning"]["regions"] is None
    assert alone["learning"]["settings"]["regions"] is False
    status, out, err = cli("router", "replay", str(data), "--every", "50", "--json")
    assert status == 0, err
    plain = json.loads(out)
    assert {point["apgr"] for point in plain["curve"]} == {static}
    assert plain["learning"]["regions"]["gate"] == 0.0
