"""``llm-router router replay``: a labelled set played as traffic with honest feedback, and
the learning curve it draws.

::

    llm-router router replay DATA.jsonl [DATA2 ...] [--model learned|FILE.json] [--every 25]
                             [--reports N] [--compare SHARE] [--judge-errors RATE]
                             [--no-regions] [--shuffle SEED] [--plot curve.svg] [--json]

The rows are split in file order: every other row (the 2nd, 4th, ...) is held back for
evaluation, the rest is the traffic, in order. ``--shuffle SEED`` first puts the rows in a
random order fixed by the seed: a file sorted by kind (MMLU's is, by subject) otherwise
teaches one kind after another, while the held-back rows hold them all. Each traffic row goes
through the router's own routing policy (``engine.runtime.RoutingPolicy``, with a feedback
database in a temporary directory, as a one-process router has): it is routed, and the feedback
it earns is the labelled quality of the model of the tier that answered (``weak_score`` on tier
1, ``strong_score`` above), reported by request id, as a deployment would; with ``--compare``
that share of the reports (spread evenly) also carries the other tier's labelled quality, as a
deployment that asks both tiers on a sample would report it (``other_quality``);
``--judge-errors RATE`` flips each of a comparison's two grades with that probability (a fixed
seed), as a judge model that errs would (``learned.compare``). After every ``--every`` reports
the held-back rows are scored by the policy as it stands (the score before the cut; no feedback)
and their APGR is measured, beside the router as shipped (no learning) and prompt length.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import trio

from engine.core import DEFAULT_MODEL_PATH, Config, LearnedRouter
from engine.core import request_for_prompt as _request
from engine.runtime import FeedbackReport, RoutingPolicy
from engine.stores import FeedbackStore
from engine.training import RoutingRow, summarize

from .plot import render_lines_svg

__all__ = ["add_replay_command", "run_replay"]


def add_replay_command(commands: Any) -> None:
    """Register ``router replay`` on the ``router`` subcommands."""
    rp = commands.add_parser(
        "replay", help="replay labelled rows as traffic with feedback; the learning curve")
    rp.add_argument("data", nargs="+", help="labelled JSONL rows")
    rp.add_argument("--model", default="learned",
                    help="the trained router: learned (shipped, default) or FILE.json")
    rp.add_argument("--every", type=int, default=25,
                    help="measure the held-back rows after every N reports (25)")
    rp.add_argument("--reports", type=int, default=None,
                    help="stop after N reports (default: all the traffic rows)")
    rp.add_argument("--no-learning", dest="learning", action="store_false",
                    help="feedback calibrates thresholds only (learned.online: false)")
    rp.add_argument("--no-regions", dest="regions", action="store_false",
                    help="learn without per-region levels (learned.online_regions: false)")
    rp.add_argument("--compare", type=float, default=0.0, metavar="SHARE",
                    help="share of reports (0-1) that carry both tiers' quality, as from a "
                         "deployment that also asks the other tier on a sample (0)")
    rp.add_argument("--judge-errors", type=float, default=0.0, metavar="RATE",
                    help="flip each grade of a comparison with this probability, as an "
                         "erring judge would (0)")
    rp.add_argument("--shuffle", type=int, default=None, metavar="SEED",
                    help="replay the rows in a random order fixed by SEED (default: file "
                         "order)")
    rp.add_argument("--plot", metavar="FILE.svg", help="write the learning curve as SVG")
    rp.add_argument("--json", action="store_true", help="print one JSON object instead")
    rp.add_argument("--decontaminated", action="store_true")
    rp.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)


@dataclass(frozen=True, slots=True)
class Point:
    reports: int
    apgr: float
    tier1_share: float  # of the traffic so far
    tier1_max: int
    gate: float  # how much of the learned correction applies (the floor)
    mix_gate: float  # how much of the comparison-learned mix applies (its floor)
    regions_gate: float  # how much of the per-region levels applies (their floor)


def run_replay(args: argparse.Namespace, rows: list[RoutingRow], files: list[dict],
               out: TextIO) -> int:
    """Run a parsed ``router replay`` (rows already loaded); the exit status."""
    if args.every < 1:
        raise ValueError("--every must be at least 1")
    if not 0.0 <= args.compare <= 1.0:
        raise ValueError("--compare must be a share from 0 to 1")
    if not 0.0 <= args.judge_errors <= 1.0:
        raise ValueError("--judge-errors must be a probability from 0 to 1")
    if args.plot and Path(args.plot).suffix.lower() != ".svg":
        raise ValueError(f"--plot {args.plot}: write .svg")
    if len(rows) < 4:
        raise ValueError("replay needs at least 4 rows (half are held back)")
    if args.shuffle is not None:
        rows = list(rows)
        random.Random(args.shuffle).shuffle(rows)
    held, traffic = rows[1::2], rows[0::2]
    if args.reports is not None:
        traffic = traffic[: max(0, args.reports)]
    report = trio.run(_replay, args, held, traffic)
    report["files"] = files
    if args.plot:
        Path(args.plot).write_text(_svg(report), encoding="utf-8")
    if args.json:
        out.write(json.dumps(report, indent=1) + "\n")
    else:
        _print(report, out)
    return 0


async def _replay(args: argparse.Namespace, held: list[RoutingRow],
                  traffic: list[RoutingRow]) -> dict[str, Any]:
    path = DEFAULT_MODEL_PATH if args.model == "learned" else Path(args.model)
    if args.model != "learned" and path.suffix != ".json":
        raise ValueError(f"--model {args.model}: learned or FILE.json")
    learned = LearnedRouter.load(path)
    with tempfile.TemporaryDirectory(prefix="llm-router-replay-") as tmp:
        config = _config(path, Path(tmp) / "feedback.db", learning=args.learning,
                         regions=args.regions)
        store = FeedbackStore(Path(tmp) / "feedback.db",
                              base=(config.classifier.tier1_max, config.classifier.tier2_max))
        await store.open()
        try:
            policy = RoutingPolicy(config, learned=learned, store=store)
            await policy.load()
            return await _play(policy, held, traffic, every=args.every,
                               progress=bool(args.progress), compare=args.compare,
                               judge_errors=args.judge_errors)
        finally:
            await store.close()


def _config(model: Path, database: Path, *, learning: bool, regions: bool = True) -> Config:
    return Config.model_validate({
        "models": [{"name": "weak", "provider": "openai", "model": "weak", "tier": 1},
                   {"name": "strong", "provider": "openai", "model": "strong", "tier": 2}],
        "learned": {"model": str(model), "feedback_db": str(database), "online": learning,
                    "online_regions": regions},
    })


def _scores(policy: RoutingPolicy, rows: list[RoutingRow]) -> list[float]:
    out = []
    for row in rows:
        route = policy.decide(_request(row.prompt))
        out.append(route.value if route.value is not None else float(route.score.total
                                                                     if route.score else 0))
    return out


async def _play(policy: RoutingPolicy, held: list[RoutingRow], traffic: list[RoutingRow], *,
                every: int, progress: bool, compare: float = 0.0,
                judge_errors: float = 0.0) -> dict[str, Any]:
    static = summarize(held, _scores(policy, held)).apgr
    length = summarize(held, [float(len(r.prompt)) for r in held]).apgr
    curve = [Point(0, static, 0.0, policy.tier1_max, *_gates(policy))]
    tier1 = compared = flipped = 0
    judge = random.Random(0)  # the erring judge's draws: the same for every run
    for n, row in enumerate(traffic, 1):
        route = await policy.route(_request(row.prompt))
        request_id = f"replay-{n}"
        policy.remember(request_id, score=route.score.total if route.score else 0,
                        tier=route.tier, model="weak" if route.tier == 1 else "strong",
                        belief=route.belief)
        tier1 += route.tier == 1
        quality, other = ((row.weak_score, row.strong_score) if route.tier == 1
                          else (row.strong_score, row.weak_score))
        # Evenly spread: the n-th report compares when the running count falls behind.
        compares = compared < compare * n
        compared += compares
        if compares and judge_errors > 0:
            grades = [1.0 - g if judge.random() < judge_errors else g for g in (quality, other)]
            flipped += (grades[0] != quality) + (grades[1] != other)
            quality, other = grades
        await policy.feedback(FeedbackReport(quality, request_id=request_id,
                                             other_quality=other if compares else None))
        if n % every == 0 or n == len(traffic):
            apgr = summarize(held, _scores(policy, held)).apgr
            curve.append(Point(n, apgr, tier1 / n, policy.tier1_max, *_gates(policy)))
            if progress:
                print(f"  {n} reports: APGR {apgr:.4f}", file=sys.stderr, flush=True)
    state = await policy.describe()
    return {
        "held_back": len(held), "traffic": len(traffic), "every": every,
        "compared": compared, "judge_errors": judge_errors, "flipped": flipped,
        "static_apgr": round(static, 4), "length_apgr": round(length, 4),
        "curve": [{"reports": p.reports, "apgr": round(p.apgr, 4),
                   "tier1_share": round(p.tier1_share, 4), "tier1_max": p.tier1_max,
                   "gate": round(p.gate, 4), "mix_gate": round(p.mix_gate, 4),
                   "regions_gate": round(p.regions_gate, 4)}
                  for p in curve],
        "learning": state.get("learning"),
    }


def _gates(policy: RoutingPolicy) -> tuple[float, float, float]:
    learning = policy.learning
    if learning is None or learning.state is None:
        return 0.0, 0.0, 0.0
    state = learning.state
    return state.gate, state.mix_gate, 0.0 if state.regions is None else state.regions.gate


def _print(report: dict[str, Any], out: TextIO) -> None:
    names = ", ".join(f["name"] for f in report["files"])
    out.write(f"{names}: {report['traffic']} rows replayed as traffic, "
              f"{report['held_back']} held back (every other row)\n")
    out.write(f"APGR on the held-back rows: shipped router {report['static_apgr']:.4f}, "
              f"prompt length {report['length_apgr']:.4f}\n")
    if report["compared"]:
        out.write(f"{report['compared']} comparison reports; {report['flipped']} of their "
                  f"grades flipped (judge errors {report['judge_errors']:g})\n")
    out.write("\n")
    out.write(f"{'reports':>8}  {'APGR':>7}  {'vs shipped':>10}  {'vs length':>9}  "
              f"{'tier 1 so far':>13}  {'tier1_max':>9}  {'gate':>5}  {'mix':>5}  {'regions':>7}\n")
    for p in report["curve"]:
        out.write(f"{p['reports']:>8}  {p['apgr']:>7.4f}  "
                  f"{p['apgr'] - report['static_apgr']:>+10.4f}  "
                  f"{p['apgr'] - report['length_apgr']:>+9.4f}  "
                  f"{100 * p['tier1_share']:>12.1f}%  {p['tier1_max']:>9}  {p['gate']:>5.2f}  "
                  f"{p['mix_gate']:>5.2f}  {p['regions_gate']:>7.2f}\n")


def _svg(report: dict[str, Any]) -> str:
    xs = [p["reports"] for p in report["curve"]]
    names = ", ".join(f["name"] for f in report["files"])
    return render_lines_svg(
        [("learning from feedback", [(x, p["apgr"]) for x, p in zip(xs, report["curve"],
                                                                      strict=True)]),
         ("shipped router (no learning)", [(xs[0], report["static_apgr"]),
                                           (xs[-1], report["static_apgr"])]),
         ("prompt length", [(xs[0], report["length_apgr"]), (xs[-1], report["length_apgr"])])],
        title=f"APGR on held-back rows while learning: {names}",
        x_label="feedback reports", y_label="APGR")
