"""How sensitive per-region levels are to their constants: ``router replay`` run in-process
with one constant of ``engine.core.routing.regions`` changed at a time (BENCHMARKS.md,
section 11, "Per-region levels").

Usage: .venv/bin/python bench/regions_knobs.py DATA.jsonl ROUTER.json [--compare SHARE]
       [--at 300]

Prints one line per setting: the constant, its value, and the held-back APGR at ``--at``
reports and at the end, with the regions' floor (``gate``) at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import engine.core.routing.regions as regions
from api.cli.router import add_router_commands, run_router_command

GRID = {"SCALE": (30.0, 100.0, 300.0), "PRIOR": (2.0, 5.0, 20.0), "TAU": (0.2, 0.3, 0.5),
        "LEADERS": (16, 32, 64)}


def replay(data: str, model: str, compare: float) -> dict:
    parser = argparse.ArgumentParser(prog="llm-router")
    add_router_commands(parser.add_subparsers(dest="command"))
    out, err = io.StringIO(), io.StringIO()
    argv = ["router", "replay", data, "--model", model, "--every", "50", "--json",
            "--compare", str(compare)]
    status = run_router_command(parser.parse_args(argv), out=out, err=err)
    if status != 0:
        raise SystemExit(err.getvalue())
    return json.loads(out.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data")
    parser.add_argument("model")
    parser.add_argument("--compare", type=float, default=0.0)
    parser.add_argument("--at", type=int, default=300)
    args = parser.parse_args()
    for name, values in GRID.items():
        shipped = getattr(regions, name)
        for value in values:
            setattr(regions, name, value)
            report = replay(args.data, args.model, args.compare)
            curve = {p["reports"]: p["apgr"] for p in report["curve"]}
            end = report["curve"][-1]
            print(f"{name}={value}: APGR at {args.at} {curve.get(args.at, float('nan')):.4f}, "
                  f"at {end['reports']} {end['apgr']:.4f} (static {report['static_apgr']:.4f}, "
                  f"regions gate {report['learning']['regions']['gate']})", flush=True)
        setattr(regions, name, shipped)


if __name__ == "__main__":
    main()
