"""Per-region levels learned from feedback, simulated offline: how the estimator and its
knobs were chosen before ``engine.core.routing.regions`` was built (BENCHMARKS.md,
section 11, "Per-region levels").

Usage::

    .venv/bin/python bench/routing_regions.py SET.jsonl=ROUTER.json [...]
        [--compare 0,0.1,0.3] [--at 50,100,200,300] [--regions leaders|subset]
        [--estimate residual|gain] [--tau 0.3] [--leaders 32] [--prior 5] [--scale 100]
        [--region-power 4] [--bound 0] [--json OUT]

``ROUTER`` is ``learned`` (the shipped router) or a file from ``llm-router router train``.
The split is ``router replay``'s: file order, every other row (the 2nd, 4th, ...) held back,
the rest played as traffic in order. Each traffic row is routed by the default policy (the
trained router blended 0.7 with the heuristic, default thresholds) and reported with the
labelled quality of the tier that answered; a ``--compare`` share of the reports (spread
evenly, as ``router replay --compare``) also carries the other tier's quality.

Regions: online leader clustering of the reports' sentence vectors (a vector not within
cosine ``--tau`` of a leader becomes one, at most ``--leaders``; a request belongs to its
nearest leader), or ``--regions subset``: the labelled subset (an upper bound on what
finding regions can give). Per region, ``--estimate``:

* ``residual`` (what shipped): the mean of ``target - p`` over the region's reports (the
  report's target and weight as ``engine.core.routing.online.label`` makes them, less the
  shipped model's belief), shrunk toward the traffic's mean by ``--prior`` reports, less
  that mean, times ``--scale``;
* ``gain``: the strong model's quality on higher tiers and the cheap model's failure rate on
  tier 1, each shrunk toward the traffic's, their sum less the traffic's, times
  ``--scale``, replacing the region's mean shipped log-odds (``s × (scale × gain_r -
  (z_r - z))``, ``s = n_r / (n_r + prior)``).

The shift is held back by ``1 - known`` of the request times ``(1 - known)`` of the region's
reports to ``--region-power``; ``--bound`` (0: none) bounds it softly (``b × tanh(x / b)``).

What it does not simulate: the tier that answers stays the one the policy chose before any
learning (in ``router replay`` the learned score moves requests across the cut, threshold
calibration moves the cut, and the correction and the mix learn too), and there is no
floor. ``router replay``'s static APGR on RouterBench (0.5212) and its tier-1 share before
learning (86%) match this script's.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.core import DEFAULT_MODEL_PATH, Config, LearnedRouter
from engine.core.routing.decide import decide_route, model_threshold, to_score
from engine.core.routing.learned import DENSE_NAMES
from engine.core.routing.learned import request_for_prompt as ask
from engine.core.routing.scoring import score_request
from engine.training.evaluate import parse_rows, summarize

COMPARED_WEIGHT = 4.0


def beliefs(data: Path, model: str) -> dict[str, Any]:
    """Every row as the default policy sees it."""
    path = DEFAULT_MODEL_PATH if model == "learned" else Path(model)
    router = LearnedRouter.load(path)
    config = Config.model_validate({
        "models": [{"name": "weak", "provider": "openai", "model": "weak", "tier": 1},
                   {"name": "strong", "provider": "openai", "model": "strong", "tier": 2}],
        "learned": {"model": str(path)}})
    rows = parse_rows(data.read_text(encoding="utf-8").splitlines())
    out: dict[str, list[Any]] = {k: [] for k in (
        "z", "known", "vector", "heuristic", "value", "tier", "subset")}
    for row in rows:
        request = ask(row.prompt)
        route = decide_route(request, config, learned=router)
        belief = route.belief
        assert belief is not None
        out["z"].append(belief.logit)
        out["known"].append(belief.known)
        vector = belief.inputs[1 + len(DENSE_NAMES):]
        out["vector"].append(vector / max(float(np.linalg.norm(vector)), 1e-12))
        out["heuristic"].append(float(score_request(request).total))
        out["value"].append(route.value)
        out["tier"].append(route.tier)
        out["subset"].append(row.subset)
    arrays: dict[str, Any] = {k: np.array(v) for k, v in out.items()}
    arrays["rows"] = rows
    arrays["weak"] = np.array([r.weak_score for r in rows])
    arrays["strong"] = np.array([r.strong_score for r in rows])
    arrays["threshold"] = model_threshold(config, router)
    arrays["weight"] = config.learned.model_weight
    arrays["anchor"] = config.classifier.tier1_max
    return arrays


def score(d: dict[str, Any], idx: np.ndarray, z: np.ndarray) -> list[float]:
    """The default policy's unrounded score with log-odds ``z`` (decide_route's blend)."""
    w = d["weight"]
    return [(1 - w) * float(d["heuristic"][i]) + w * to_score(
        1.0 / (1.0 + math.exp(-float(zi))), threshold=d["threshold"], tier1_max=d["anchor"])
        for i, zi in zip(idx, z, strict=True)]


def apgr(d: dict[str, Any], idx: np.ndarray, scores: list[float]) -> float:
    return summarize([d["rows"][i] for i in idx], scores).apgr


def replay(d: dict[str, Any], args: argparse.Namespace, compare: float) -> dict[int, float]:
    n = len(d["z"])
    held, traffic = np.arange(1, n, 2), np.arange(0, n, 2)
    at = set(args.at)
    size = max(args.leaders, 1) if args.regions == "leaders" else 0
    subsets = np.unique(d["subset"], return_inverse=True)[1]
    cells = size or int(subsets.max()) + 1
    weak_n, weak_fail = np.zeros(cells), np.zeros(cells)
    strong_n, strong_q = np.zeros(cells), np.zeros(cells)
    seen, z_sum = np.zeros(cells), np.zeros(cells)
    res_w, res_sum = np.zeros(cells), np.zeros(cells)
    known_sum = np.zeros(cells)
    leaders: list[np.ndarray] = []
    compared = 0
    curve: dict[int, float] = {}
    shares: dict[int, float] = {}

    def region(i: int) -> int:
        return int((np.array(leaders) @ d["vector"][i]).argmax()) if size else int(subsets[i])

    for j, i in enumerate(traffic[: max(at)], 1):
        if size:
            near = (np.array(leaders) @ d["vector"][i]).max() if leaders else -1.0
            if near < args.tau and len(leaders) < size:
                leaders.append(d["vector"][i])
        c = region(i)
        both = compared < compare * j
        compared += both
        weight = COMPARED_WEIGHT if both else 1.0
        if d["tier"][i] == 1 or both:
            weak_n[c] += weight
            weak_fail[c] += weight * (1 - d["weak"][i])
        if d["tier"][i] != 1 or both:
            strong_n[c] += weight
            strong_q[c] += weight * d["strong"][i]
        seen[c] += 1
        z_sum[c] += d["z"][i]
        known_sum[c] += d["known"][i]
        p = 1.0 / (1.0 + math.exp(-float(d["z"][i])))
        if both:
            target, w = (1 + d["strong"][i] - d["weak"][i]) / 2, COMPARED_WEIGHT
        elif d["tier"][i] == 1:
            target, w = 1 - d["weak"][i], 1.0
        else:
            target, w = 0.0, 1 - d["strong"][i]
        res_w[c] += w
        res_sum[c] += w * (target - p)
        if j in at:
            fail = weak_fail.sum() / max(weak_n.sum(), 1e-9)
            good = strong_q.sum() / max(strong_n.sum(), 1e-9)
            z_mean = z_sum.sum() / seen.sum()
            gain = ((strong_q + args.prior * good) / (strong_n + args.prior)
                    + (weak_fail + args.prior * fail) / (weak_n + args.prior)) - (good + fail)
            z_dev = np.where(seen > 0, z_sum / np.maximum(seen, 1) - z_mean, 0.0)
            if args.estimate == "residual":
                mean = res_sum.sum() / max(res_w.sum(), 1e-9)
                shift = args.scale * (res_sum + args.prior * mean) / (res_w + args.prior) - (
                    args.scale * mean)
            else:
                shift = seen / (seen + args.prior) * (args.scale * gain - z_dev)
            cell = np.array([region(h) for h in held])
            own = 1 - d["known"][held]
            region_known = known_sum / np.maximum(seen, 1)
            hold = own * (1 - region_known[cell]) ** args.region_power
            if args.bound > 0:
                shift = args.bound * np.tanh(shift / args.bound)
            z = d["z"][held] + shift[cell] * hold
            scores = score(d, held, z)
            curve[j] = round(apgr(d, held, scores), 4)
            shares[j] = round(float(np.mean(np.array(scores) <= d["anchor"])), 3)
    curve["tier1"] = shares  # type: ignore[assignment]
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sets", nargs="+", help="DATA.jsonl=ROUTER (learned or FILE.json)")
    parser.add_argument("--compare", default="0,0.1,0.3")
    parser.add_argument("--at", default="50,100,200,300")
    parser.add_argument("--regions", choices=("leaders", "subset"), default="leaders")
    parser.add_argument("--tau", type=float, default=0.3)
    parser.add_argument("--leaders", type=int, default=32)
    parser.add_argument("--prior", type=float, default=5.0)
    parser.add_argument("--scale", type=float, default=100.0)
    parser.add_argument("--estimate", choices=("gain", "residual"), default="residual")
    parser.add_argument("--region-power", type=float, default=4.0)
    parser.add_argument("--bound", type=float, default=0.0)
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args()
    args.at = [int(a) for a in args.at.split(",")]
    shares = [float(s) for s in args.compare.split(",")]
    results = []
    print(f"regions={args.regions} estimate={args.estimate} tau={args.tau} "
          f"leaders={args.leaders} prior={args.prior} scale={args.scale} "
          f"region_power={args.region_power} bound={args.bound}")
    print("| set | compare | static | length | " + " | ".join(f"{a}" for a in args.at)
          + " |")
    print("|---|---:|---:|---:|" + "---:|" * len(args.at))
    for spec in args.sets:
        data, _, model = spec.partition("=")
        d = beliefs(Path(data), model or "learned")
        held = np.arange(1, len(d["z"]), 2)
        static = round(apgr(d, held, [float(d["value"][i]) for i in held]), 4)
        length = round(apgr(d, held, [float(len(d["rows"][i].prompt)) for i in held]), 4)
        for share in shares:
            curve = replay(d, args, share)
            results.append({"set": Path(data).name, "router": model, "compare": share,
                            "static": static, "length": length, "curve": curve})
            print(f"| {Path(data).stem} ({model}) | {share} | {static:.4f} | {length:.4f} | "
                  + " | ".join(f"{curve[a]:.4f}" if a in curve else "-" for a in args.at)
                  + f" | tier 1 {curve['tier1']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": {
            k: getattr(args, k) for k in ("regions", "estimate", "tau", "leaders", "prior", "scale",
                                          "region_power", "bound")},
            "results": results}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
