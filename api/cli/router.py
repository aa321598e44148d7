"""``llm-router router eval`` and ``llm-router router train``: score any router on labelled
rows (JSON Lines; the format is in docs/cli.md, "Labelled rows") and train the router of
``engine.core.routing.learned``.

::

    llm-router router eval DATA.jsonl [DATA2 ...] [--router SPEC]... [--mode exact|routellm]
                           [--plot curve.svg|curve.png] [--decontaminated] [--json]
        SPEC: heuristic (default) | length | random | learned (the shipped model)
              | FILE.json (a trained router) | blend:MODEL:WEIGHT (MODEL is learned or a file)
    llm-router router train DATA.jsonl [DATA2 ...] -o router.json [--folds 5]
                            [--embeddings | --no-embeddings] [--l2 0.003[,0.01,...]]
                            [--monotone-length | --no-monotone-length]
    llm-router router replay DATA.jsonl [DATA2 ...]   see api/cli/replay.py

``api.cli.main`` hooks these in with :func:`add_router_commands` and :func:`run_router_command`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from engine.core import (
    DEFAULT_MODEL_PATH,
    FeatureConfig,
    LearnedRouter,
    Score,
    blend,
    score_request,
)
from engine.core import request_for_prompt as _request
from engine.errors import RouterError
from engine.training import (
    RoutingRow,
    cheapest_at,
    curve_at,
    evaluate_choices,
    model_ladder,
    multi_tier_points,
    parse_rows,
    summarize,
    tier_split,
)

from .replay import add_replay_command, run_replay

__all__ = ["ProgressBar", "add_router_commands", "run_router_command"]

EXIT_USAGE = 2


class ProgressBar:
    """A one-line text bar on ``stream`` (stderr), redrawn when the percentage moves."""

    def __init__(self, stream: TextIO, *, enabled: bool, width: int = 30) -> None:
        self.stream, self.enabled, self.width = stream, enabled, width
        self._last: tuple[str, int] | None = None

    def __call__(self, label: str, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        percent = 100 * done // total
        if self._last == (label, percent) and done < total:
            return
        self._last = (label, percent)
        filled = self.width * done // total
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r{label[:40]:40s} [{bar}] {percent:3d}% {done}/{total}")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def add_router_commands(subparsers: Any) -> None:
    """Register ``router eval``, ``train`` and ``replay`` on an argparse subparsers object."""
    router = subparsers.add_parser("router", help="evaluate or train the request router")
    commands = router.add_subparsers(dest="router_command", metavar="SUBCOMMAND",
                                     required=True)
    ev = commands.add_parser(
        "eval", help="APGR, CPT(50%%), CPT(80%%) and the quality/cost curve of routers "
        "on labelled rows")
    ev.add_argument("data", nargs="+",
                    help="labelled JSONL rows (id, prompt, weak_score, strong_score, ...)")
    ev.add_argument("--router", action="append", dest="routers", metavar="SPEC",
                    help="heuristic (default), length, random, learned, FILE.json or "
                    "blend:MODEL:WEIGHT; repeat to compare")
    ev.add_argument("--mode", choices=["exact", "routellm"], default="exact",
                    help="exact: every score is a threshold; routellm: score deciles")
    ev.add_argument("--plot", metavar="FILE", help="write the curves as .svg (or .png)")
    ev.add_argument("--decontaminated", action="store_true",
                    help="drop rows marked contaminated (RouteLLM's decontaminated MMLU)")
    ev.add_argument("--pred-out", metavar="FILE",
                    help="write the first router's {id, p_strong} rows (for routing_metrics.py)")
    ev.add_argument("--tier1-max", type=float, default=30.0,
                    help="classifier.tier1_max for the as-configured multi-tier split")
    ev.add_argument("--tier2-max", type=float, default=70.0)
    ev.add_argument("--json", action="store_true", help="print one JSON object instead")
    ev.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="progress bar on stderr (default: when stderr is a terminal)")
    tr = commands.add_parser("train", help="fit a trained router on labelled rows")
    tr.add_argument("data", nargs="+", help="labelled JSONL rows")
    tr.add_argument("-o", "--output", required=True, help="where to write router.json")
    tr.add_argument("--folds", type=int, default=5, help="cross-validation folds (5)")
    tr.add_argument("--embeddings", action=argparse.BooleanOptionalAction, default=True,
                    help="add the WordLlama sentence vector to the features (default on)")
    tr.add_argument("--l2", default="0.003",
                    help="L2 strength, or a comma list to choose from by cross-validation")
    tr.add_argument("--monotone-length", action=argparse.BooleanOptionalAction, default=True,
                    help="keep the length measures' weights from going negative (default on)")
    tr.add_argument("--target", choices=["gain", "binary"], default="gain")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--decontaminated", action="store_true")
    tr.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    add_replay_command(commands)


def run_router_command(args: argparse.Namespace, *, out: TextIO | None = None,
                       err: TextIO | None = None) -> int:
    """Run a parsed ``router`` command; the exit status (2: bad data or arguments)."""
    out = out or sys.stdout
    err = err or sys.stderr
    enabled = err.isatty() if args.progress is None else args.progress
    progress = ProgressBar(err, enabled=enabled)
    try:
        rows, files = _load(args.data, decontaminated=args.decontaminated)
        if args.router_command == "eval":
            return _eval(args, rows, files, out, err, progress)
        if args.router_command == "replay":
            return run_replay(args, rows, files, out)
        return _train(args, rows, files, out, progress)
    except (RouterError, ValueError, OSError) as exc:
        print(f"llm-router router {args.router_command}: {exc}", file=err)
        return EXIT_USAGE


def _load(paths: Sequence[str], *, decontaminated: bool) -> tuple[list[RoutingRow], list[dict]]:
    rows: list[RoutingRow] = []
    files = []
    for path in paths:
        data = Path(path).read_bytes()
        try:
            more = parse_rows(data.decode("utf-8").splitlines(), decontaminated=decontaminated)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        rows += more
        files.append({"name": Path(path).name, "sha256": hashlib.sha256(data).hexdigest(),
                      "rows": len(more)})
    if not rows:
        raise ValueError("no rows")
    return rows, files


# -- eval ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Router:
    name: str
    score: Callable[[RoutingRow, Score], float]
    scale_100: bool  # scores are on the 0-100 tier scale (the as-configured split applies)
    model: LearnedRouter | None = None


def _resolve(spec: str, embedder: Any) -> _Router:
    if spec == "heuristic":
        return _Router(spec, lambda row, h: float(h.total), True)
    if spec == "length":
        return _Router(spec, lambda row, h: float(len(row.prompt)), False)
    if spec == "random":  # every prompt tied: the exact curve is random routing's expectation
        return _Router("random (expected)", lambda row, h: 0.0, False)
    if spec.startswith("blend:"):
        inner, _, weight_text = spec[len("blend:"):].rpartition(":")
        weight = float(weight_text)
        if not inner or not 0 <= weight <= 1:
            raise ValueError(f"--router {spec}: write blend:MODEL:WEIGHT, WEIGHT in 0..1")
        model = _load_model(inner, embedder)
        return _Router(spec, lambda row, h: blend(model.score(_request(row.prompt), heuristic=h),
                                                 h.total, weight), True, model)
    model = _load_model(spec, embedder)
    return _Router(spec, lambda row, h: 100.0 * model.score(_request(row.prompt), heuristic=h),
                   True, model)


def _load_model(spec: str, embedder: Any) -> LearnedRouter:
    path = DEFAULT_MODEL_PATH if spec == "learned" else Path(spec)
    if spec != "learned" and path.suffix != ".json":
        raise ValueError(f"unknown router {spec!r}: heuristic, length, random, learned, "
                         "FILE.json or blend:MODEL:WEIGHT")
    return LearnedRouter.load(path, embedder=embedder)


def _eval(args: argparse.Namespace, rows: list[RoutingRow], files: list[dict],
          out: TextIO, err: TextIO, progress: ProgressBar) -> int:
    from engine.core import Embedder  # loads its table on first use only

    if args.plot and Path(args.plot).suffix.lower() not in (".svg", ".png"):
        raise ValueError(f"--plot {args.plot}: write .svg or .png")
    if not 0 <= args.tier1_max <= args.tier2_max <= 100:  # as classifier's in the config
        raise ValueError(f"--tier1-max {args.tier1_max:g} and --tier2-max {args.tier2_max:g}: "
                         "need 0 <= tier1-max <= tier2-max <= 100")
    embedder = Embedder()
    routers = [_resolve(spec, embedder) for spec in args.routers or ["heuristic"]]
    hashes = {f["sha256"] for f in files}
    in_sample = []
    for r in routers:
        trained = {f.get("sha256") for f in (r.model.info.get("files", []) if r.model else [])}
        if trained & hashes:
            in_sample.append(r.name)
            print(f"warning: {r.name} was trained on these rows: its numbers are in-sample",
                  file=err)
    heuristic = []
    for i, row in enumerate(rows):
        heuristic.append(score_request(_request(row.prompt)))
        progress("heuristic scores", i + 1, len(rows))
    scores: dict[str, list[float]] = {}
    for r in routers:
        values = []
        for i, (row, h) in enumerate(zip(rows, heuristic, strict=True)):
            values.append(r.score(row, h))
            progress(f"scoring: {r.name}", i + 1, len(rows))
        scores[r.name] = values
    report = _report(args, rows, files, routers, scores)
    if args.pred_out:
        # Raw scores: the metrics only rank them, so any scale is a valid p_strong.
        with open(args.pred_out, "w", encoding="utf-8") as f:
            for row, s in zip(rows, scores[routers[0].name], strict=True):
                f.write(json.dumps({"id": row.id, "p_strong": s}) + "\n")
    if args.json:
        out.write(json.dumps(report, indent=1) + "\n")
    else:
        _print_report(report, out)
    if args.plot:  # after the results: a plot that cannot be drawn loses nothing else
        _plot(args.plot, report, files, in_sample=in_sample, err=err)
    return 0


def _report(args: argparse.Namespace, rows: list[RoutingRow], files: list[dict],
            routers: list[_Router], scores: dict[str, list[float]]) -> dict[str, Any]:
    first = rows[0]
    report: dict[str, Any] = {
        "files": files, "n": len(rows), "mode": args.mode,
        "weak_model": first.weak_model, "strong_model": first.strong_model,
        "routers": {},
    }
    multi = bool(first.scores and first.costs and all(r.scores and r.costs for r in rows))
    ladder = model_ladder(rows) if multi else []
    if multi:
        report["multi_tier"] = {
            "ladder": ladder,
            "always": {m: evaluate_choices(rows, [m] * len(rows)) for m in ladder},
            "tier_cuts": [args.tier1_max, args.tier2_max],
        }
    for r in routers:
        values = scores[r.name]
        summary = summarize(rows, values, mode=args.mode)
        entry: dict[str, Any] = {**summary.as_dict(), "points": summary.points,
                                 "curve": curve_at(rows, values)}
        if multi:
            points = multi_tier_points(rows, values, ladder)
            entry["multi_tier"] = {
                f"cost_at_{int(q * 100)}": _point(cheapest_at(points, q))
                for q in (0.95, 0.98, 1.0)
            }
            if r.scale_100:
                tiers = tier_split(values, [args.tier1_max, args.tier2_max][: len(ladder) - 1])
                chosen = [ladder[t] for t in tiers]
                entry["multi_tier"]["as_configured"] = {
                    **evaluate_choices(rows, chosen),
                    "shares": [tiers.count(k) / len(rows) for k in range(len(ladder))]}
        report["routers"][r.name] = entry
    return report


def _point(p: Any) -> dict[str, Any] | None:
    if p is None:
        return None
    return {"cost_vs_strong": p.cost_vs_strong, "quality_vs_strong": p.quality_vs_strong,
            "shares": list(p.shares)}


def _pct(x: float) -> str:
    return "  n/a " if math.isnan(x) else f"{x:6.1%}"


def _print_report(report: dict[str, Any], out: TextIO) -> None:
    names = ", ".join(f["name"] for f in report["files"])
    first = next(iter(report["routers"].values()))
    print(f"{names}: {report['n']} rows, weak {report['weak_model']} {first['weak']:.4f}, "
          f"strong {report['strong_model']} {first['strong']:.4f} (mode {report['mode']})",
          file=out)
    width = max(24, *(len(n) for n in report["routers"]))
    print(f"\n{'router':{width}s}   APGR   CPT(50%)  CPT(80%)", file=out)
    for name, e in report["routers"].items():
        print(f"{name:{width}s}  {e['APGR']:6.4f}  {_pct(e['CPT50'])}    {_pct(e['CPT80'])}",
              file=out)
    for name, e in report["routers"].items():
        costs = "cost_vs_strong" in e["curve"][0]
        print(f"\nquality / cost curve: {name}", file=out)
        print("  strong calls  quality    PGR" + ("   cost vs always-strong" if costs else ""),
              file=out)
        for p in e["curve"]:
            line = f"  {p['share']:11.0%}  {p['quality']:7.4f}  {p['PGR']:6.3f}"
            if costs:
                line += f"   {p['cost_vs_strong']:6.1%}"
            print(line, file=out)
    if "multi_tier" in report:
        mt = report["multi_tier"]
        print(f"\nmulti-tier routing over {' < '.join(mt['ladder'])}", file=out)
        print("(quality and cost relative to always calling the strongest; the cheapest split "
              "in 5% steps reaching each quality)", file=out)
        for model, d in mt["always"].items():
            print(f"  always {model}: quality {d['quality_vs_strong']:.1%}, "
                  f"cost {d['cost_vs_always_strong']:.1%}", file=out)
        for name, e in report["routers"].items():
            parts = []
            for key, label in (("cost_at_95", "95%"), ("cost_at_98", "98%"),
                               ("cost_at_100", "100%")):
                p = e["multi_tier"][key]
                parts.append(f"{label} quality at {p['cost_vs_strong']:.1%} cost "
                             f"(split {'/'.join(f'{s:.0%}' for s in p['shares'])})"
                             if p else f"{label} quality: not reached")
            print(f"  {name}: " + "; ".join(parts), file=out)
            conf = e["multi_tier"].get("as_configured")
            if conf:
                cuts = "/".join(f"{c:g}" for c in mt["tier_cuts"])
                print(f"    as configured (tier cuts {cuts}): quality "
                      f"{conf['quality_vs_strong']:.1%} at {conf['cost_vs_always_strong']:.1%} "
                      f"cost (split {'/'.join(f'{s:.0%}' for s in conf['shares'])})", file=out)


def _plot(path: str, report: dict[str, Any], files: list[dict], *, in_sample: list[str],
          err: TextIO) -> None:
    from .plot import render_curves_svg

    first = next(iter(report["routers"].values()))
    curves = [(f"{name} (APGR {e['APGR']:.3f})", e["points"])
              for name, e in report["routers"].items()]
    title = ", ".join(f["name"] for f in files)
    note = (f"in-sample: {', '.join(in_sample)} trained on these rows" if in_sample else None)
    svg = render_curves_svg(curves, weak=first["weak"], strong=first["strong"], title=title,
                            note=note)
    target = Path(path)
    if target.suffix.lower() == ".svg":
        target.write_text(svg, encoding="utf-8")
        return
    # No plotting library is a dependency: a PNG is the SVG rendered by an installed tool.
    # Without one, the SVG is written beside it, and the message says what a PNG needs.
    problem = _render_png(svg, target)
    if problem is not None:
        fallback = target.with_suffix(".svg")
        fallback.write_text(svg, encoding="utf-8")
        print(f"note: {problem}; wrote {fallback} instead", file=err)


def _render_png(svg: str, target: Path) -> str | None:
    """Render ``svg`` to ``target`` with rsvg-convert or ImageMagick; the problem, if any."""
    tools = [(tool, [tool, "-o", str(target)]) for tool in ("rsvg-convert",) if shutil.which(tool)]
    tools += [(tool, [tool]) for tool in ("magick", "convert") if shutil.which(tool)]
    if not tools:
        return ("a PNG needs rsvg-convert (librsvg) or ImageMagick (magick or convert), "
                "and neither is installed")
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "curve.svg"
        source.write_text(svg, encoding="utf-8")
        name, command = tools[0]
        args = [*command, str(source)] if name == "rsvg-convert" else [*command, str(source),
                                                                         str(target)]
        done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"{name} could not render the PNG ({done.stderr.strip()[:200]})"
    return None


# -- train --------------------------------------------------------------------------------


def _train(args: argparse.Namespace, rows: list[RoutingRow], files: list[dict],
           out: TextIO, progress: ProgressBar) -> int:
    from engine.training import MONOTONE, train_router

    try:
        l2 = tuple(float(v) for v in args.l2.split(","))
    except ValueError:
        raise ValueError(f"--l2 {args.l2!r}: a number or a comma list of numbers") from None
    config = replace(FeatureConfig(), embeddings=args.embeddings)
    embedder = None
    if args.embeddings:
        from engine.core import Embedder

        embedder = Embedder()
    training = train_router(rows, config=config, target=args.target, l2=l2, folds=args.folds,
                            seed=args.seed, embedder=embedder, info={"files": files},
                            progress=progress, monotone=MONOTONE if args.monotone_length else ())
    training.router.save(args.output)
    print(f"{len(rows)} rows from {', '.join(f['name'] for f in files)}; "
          f"{args.folds}-fold cross-validated APGR (exact mode, out-of-fold scores):", file=out)
    for v in training.validations:
        sources = ", ".join(f"{k} {a:.4f}" for k, a in v.by_source.items())
        mark = "  <- chosen" if v is training.chosen else ""
        print(f"  l2={v.l2:g}: APGR {v.apgr:.4f} (folds {min(v.fold_apgr):.3f}.."
              f"{max(v.fold_apgr):.3f}){'; ' + sources if sources else ''}{mark}", file=out)
    size = Path(args.output).stat().st_size
    print(f"wrote {args.output} ({size / 1024:.0f} KiB); route with it by setting "
          f"learned.model: {args.output} in the config", file=out)
    return 0
