"""Can a second opinion lift ``cache.embedder``'s precision on unaligned pairs? Measured on the
QQP dev pairs split by ``engine.training.cache_split``.

Usage: .venv/bin/python bench/cache_agreement.py --embedder-url URL --embedder-model NAME
       [--second-url URL --second-model NAME] [--data DIR]

Every rule below keeps what the router does today (the guards veto, aligned pairs hit at the
default threshold with the endpoint's cosine) and only changes which *unaligned* pairs the
guards allow may also hit. Each rule's bars are chosen on ``choose`` (the most true hits at
precision >= 0.95 among settings with >= 20 hits; a tie goes to the higher bars), then read once
on ``report``, with 95% Wilson intervals:

* ``endpoint``: the endpoint's cosine >= a bar (``cache.embedder.unaligned_cosine`` as shipped);
* ``endpoint + packaged``: that, and the packaged WordLlama cosine >= a second bar (two
  embedders agreeing);
* ``endpoint + no unmatched content word``: that, and no content word on one side only (the
  pair differs in function words or order alone);
* ``endpoint + second endpoint`` (with ``--second-url``): both models above their bars;
* ``endpoint, margin``: the endpoint's bar chosen by the lower end of the Wilson interval on
  ``choose`` (a choice that asks for margin instead of a point estimate).

Then the pairs labelled *not* duplicates that the endpoint puts at cosine >= 0.98 among the
unaligned pairs the guards allow, on every split, so the reader can judge the labels.
Prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cache_similarity import remote_vectors, wilson

from engine.core.cache.similarity import DEFAULT_THRESHOLD, Embedder, compare
from engine.training.cache_split import SPLITS, split_of

BARS = np.round(np.arange(0.85, 1.0001, 0.0025), 4)
PACKAGED = (0.0, 0.8, 0.85, 0.9, 0.92, 0.94, 0.96, 0.98)

Rule = Callable[[dict], bool]


def rows_with_scores(rows: list[dict], fps: dict, ext: dict, second: dict | None) -> list[dict]:
    """Per pair: its split and label, whether it hits today (endpoint vectors, bar unset), and
    for the unaligned pairs the guards allow, the cosines each rule looks at."""
    out = []
    for r in rows:
        q, c = ext[r["id"], "b"], ext[r["id"], "a"]
        today = compare(q, c)
        full = compare(q, c, all_vetoes=True)
        salience = full.penalty - (0.0 if full.aligned else 0.35)
        out.append({
            "id": r["id"], "split": split_of(r["id"]), "dup": bool(r["duplicate"]),
            "a": r["a"], "b": r["b"],
            "hit": today.score >= DEFAULT_THRESHOLD,
            "open": not full.vetoes and not full.aligned,
            "cos": full.cosine,
            "packaged": float(fps[r["id"], "a"].vector @ fps[r["id"], "b"].vector),
            "unmatched": salience > 1e-6,
            "second": (float(second[r["id"], "a"].vector @ second[r["id"], "b"].vector)
                       if second else 0.0),
        })
    return out


def count(pairs: list[dict], split: str, rule: Rule) -> tuple[int, int]:
    """(true hits, hits) on ``split``: today's hits plus the unaligned pairs ``rule`` opens."""
    hits = [p for p in pairs if p["split"] == split and (p["hit"] or (p["open"] and rule(p)))]
    return sum(p["dup"] for p in hits), len(hits)


def choose(pairs: list[dict], rules: list[tuple[str, Rule]], margin: bool = False
           ) -> tuple[str, Rule] | None:
    """The rule with the most true hits on ``choose`` at precision >= 0.95 (>= 20 hits); with
    ``margin``, the one whose precision's Wilson lower bound on ``choose`` is highest."""
    scored = []
    for i, (name, rule) in enumerate(rules):
        tp, n = count(pairs, "choose", rule)
        if n < 20:
            continue
        if margin:
            scored.append((wilson(tp, n)[0], -i, name, rule))
        elif tp / n >= 0.95:
            scored.append((tp, -i, name, rule))
    if not scored:
        return None
    best = max(scored, key=lambda s: (s[0], -s[1]))  # rules come lowest bars first
    return best[2], best[3]


def line(pairs: list[dict], family: str, picked: tuple[str, Rule] | None) -> str:
    if picked is None:
        return f"| {family} | none reaches 0.95 on choose (aligned only) | | | | |"
    name, rule = picked
    cells = []
    for split, _ in SPLITS:
        tp, n = count(pairs, split, rule)
        cells.append(f"{tp / max(1, n):.3f} / {n} ({n - tp})")
    tp, n = count(pairs, "report", rule)
    low, high = wilson(tp, n)
    return f"| {family} | {name} | {' | '.join(cells)} | {low:.3f}-{high:.3f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("LLM_ROUTER_EVAL_DATA") or None)
    parser.add_argument("--embedder-url", required=True)
    parser.add_argument("--embedder-model", required=True)
    parser.add_argument("--second-url")
    parser.add_argument("--second-model")
    args = parser.parse_args()
    if args.data is None:
        parser.error("give --data DIR or set LLM_ROUTER_EVAL_DATA")
    rows = [json.loads(line) for line in
            (args.data / "cache" / "qqp_pairs_dev.jsonl").open(encoding="utf-8")]
    embedder = Embedder()
    fps = {(r["id"], side): embedder.fingerprint(r[side]) for r in rows for side in "ab"}
    ext = remote_vectors(fps, args.embedder_url, args.embedder_model, "")
    second = (remote_vectors(fps, args.second_url, args.second_model or "", "")
              if args.second_url else None)
    pairs = rows_with_scores(rows, fps, ext, second)

    tp, n = count(pairs, "report", lambda p: False)
    print(f"# Unaligned pairs with {args.embedder_model}"
          f"{' and ' + args.second_model if second else ''}\n")
    print(f"today, bar unset (aligned pairs only), report: {tp} / {n}\n")
    print("| rule | chosen on choose | design P / hits (false) | choose P / hits (false) |"
          " **report** P / hits (false) | report 95% Wilson |")
    print("|---|---|---|---|---|---|")
    endpoint = [(f"cosine >= {b:g}", lambda p, b=b: p["cos"] >= b) for b in BARS]
    print(line(pairs, "endpoint", choose(pairs, endpoint)))
    both = [(f"cosine >= {b:g}, packaged >= {w:g}",
             lambda p, b=b, w=w: p["cos"] >= b and p["packaged"] >= w)
            for b in BARS for w in PACKAGED]
    print(line(pairs, "endpoint + packaged", choose(pairs, both)))
    clean = [(f"cosine >= {b:g}, no unmatched word",
              lambda p, b=b: p["cos"] >= b and not p["unmatched"]) for b in BARS]
    print(line(pairs, "endpoint + no unmatched content word", choose(pairs, clean)))
    if second:
        two = [(f"cosine >= {b:g}, second >= {s:g}",
                lambda p, b=b, s=s: p["cos"] >= b and p["second"] >= s)
               for b in BARS for s in BARS]
        print(line(pairs, "endpoint + second endpoint", choose(pairs, two)))
    print(line(pairs, "endpoint, margin (Wilson lower bound)",
               choose(pairs, endpoint, margin=True)))

    print("\n## Labelled not duplicate, unaligned, allowed, endpoint cosine >= 0.98\n")
    print("| split | cosine | a | b |")
    print("|---|---:|---|---|")
    for p in sorted(pairs, key=lambda p: -p["cos"]):
        if p["open"] and not p["dup"] and p["cos"] >= 0.98:
            print(f"| {p['split']} | {p['cos']:.3f} | {p['a']} | {p['b']} |")
    for split, _ in SPLITS:
        top = [p for p in pairs if p["split"] == split and p["open"] and p["cos"] >= 0.98]
        print(f"\n{split}: unaligned allowed pairs at cosine >= 0.98: "
              f"{sum(p['dup'] for p in top)} duplicates of {len(top)}", end="")
    print()


if __name__ == "__main__":
    main()
