"""Online learning fed by an erring judge: `llm-router router replay` with comparison reports
whose grades a judge gets wrong at a given rate (``--judge-errors``), on labelled sets, with
routers trained without the replayed set. Prints, per set, share of comparisons and error
rate, held-back APGR against the static router at each checkpoint (the worst and the last),
and the floors' gates at the end.

    LLM_ROUTER_EVAL_DATA=... python bench/replay_judge_errors.py \\
        --set rb=/tmp/r_no_rb.json --set mmlu=/tmp/r_no_mmlu.json [--errors 0 0.1 0.2 0.3 0.5]

A router for a set is ``llm-router router train`` on the other files (``--folds 2``), e.g.
``router train routellm_mmlu_dev.jsonl alpaca_eval2_gpt35_vs_gpt4turbo_dev.jsonl -o
/tmp/r_no_rb.json``. Deterministic: the replay's order, split and the judge's draws are fixed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

FILES = {"rb": "routerbench_arc_mbpp_winogrande_dev.jsonl", "mmlu": "routellm_mmlu_dev.jsonl",
         "alpaca": "alpaca_eval2_gpt35_vs_gpt4turbo_dev.jsonl"}


def replay(data: Path, router: str, *, compare: float, errors: float, every: int,
           shuffle: int | None) -> dict:
    argv = [str(Path(sys.executable).with_name("llm-router")), "router", "replay", str(data),
            "--model", router, "--every", str(every), "--compare", str(compare),
            "--judge-errors", str(errors), "--json", "--no-progress"]
    if shuffle is not None:
        argv += ["--shuffle", str(shuffle)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", action="append", required=True, metavar="NAME=ROUTER.json",
                        help=f"a set ({', '.join(FILES)}) and its router trained without it")
    parser.add_argument("--errors", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.5])
    parser.add_argument("--compare", type=float, nargs="+", default=[1.0, 0.3])
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--shuffle", type=int, default=None)
    args = parser.parse_args()
    root = Path(os.environ["LLM_ROUTER_EVAL_DATA"]) / "routing"
    print("| set | comparisons | judge errors | grades flipped | static | length | worst vs static "
          "(at reports) | end vs static | gates at the end (correction / mix / regions) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for spec in args.set:
        name, router = spec.split("=", 1)
        for compare in args.compare:
            for errors in args.errors:
                report = replay(root / FILES[name], router, compare=compare, errors=errors,
                                every=args.every, shuffle=args.shuffle)
                static = report["static_apgr"]
                curve = report["curve"][1:]
                worst = min(curve, key=lambda p: p["apgr"])
                end = curve[-1]
                print(f"| {name} | {report['compared']} of {report['traffic']} | {errors:g} | "
                      f"{report['flipped']} | {static:.4f} | {report['length_apgr']:.4f} | "
                      f"{worst['apgr'] - static:+.4f} ({worst['reports']}) | "
                      f"{end['apgr'] - static:+.4f} | {end['gate']:.2f} / "
                      f"{end['mix_gate']:.2f} / {end['regions_gate']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
