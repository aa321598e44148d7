"""Quality of the semantic-cache match on the QQP dev pairs, measured by the reference script.

Usage: .venv/bin/python bench/cache_similarity.py [--data DIR] [--out DIR]
       [--embedder-url URL --embedder-model NAME [--embedder-key-env VAR]
        [--unaligned-cosine BAR]]

``--data`` (default: the ``LLM_ROUTER_EVAL_DATA`` environment variable) is the evaluation data
folder, which is not part of this repository. Writes prediction files and runs its
``cache_metrics.py`` on them:

* pairs mode (every pair of ``cache/qqp_pairs_dev.jsonl``): ROC-AUC, and precision / recall /
  false-hit rate at the default threshold and a sweep, for three scorers: the script's token
  Jaccard floor, the bare WordLlama cosine, and ``engine.similarity.similarity`` (cosine,
  guards and word-for-word alignment: the score the cache thresholds); the highest recall at
  precision >= 0.95 / 0.90 over all thresholds, and the best precision with >= 50 hits;
* the three splits of ``engine.training.cache_split`` (design / choose / report, by a hash of
  the pair id): the default on each, the threshold the choose split picks and its figures on
  the report split, where nothing was tuned; and each guard's effect on the design and the
  choose split (pairs it alone vetoes that would otherwise hit, at the default and at 0.6);
* with ``--embedder-url`` (vectors from an embeddings endpoint, as ``cache.embedder``): the
  bar ``cache.embedder.unaligned_cosine`` chosen on the ``choose`` split (the most recall at
  precision >= 0.95 among bars with >= 20 hits, 0.0025 grid; unset if none) and read once on
  ``report``, and the retrieval below at that bar too; ``--unaligned-cosine`` sets the bar
  for every other figure (default: unset, as the configuration);
* retrieval mode, GPTCache's protocol, on every duplicate pair and on those of the report
  split alone: insert the "a" of every duplicate pair into an empty
  cache (a ``VectorIndex``), query with every "b": top-8 candidates by vector, re-scored with
  ``similarity``, a hit when the best reaches the threshold. Positive = the right entry,
  negative = a wrong one, fail = a miss. QQP repeats questions, so a "negative" may be a
  question labelled a duplicate elsewhere in the file: counted separately.

Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.core.cache.guards import ALIGNED_GUARDS, TEXT_GUARDS
from engine.core.cache.similarity import (
    DEFAULT_THRESHOLD,
    Embedder,
    Fingerprint,
    compare,
    similarity,
)
from engine.core.cache.vector_index import VectorIndex
from engine.training.cache_split import SPLITS, split_of

SWEEP = (0.5, 0.6, 0.7, 0.75, 0.8, 0.825, 0.85, 0.9, 0.95)
GRID = np.round(np.arange(0.5, 1.0, 0.005), 3)  # thresholds the choose split chooses from
BARS = np.round(np.arange(0.8, 1.0001, 0.0025), 4)  # unaligned_cosine bars, likewise


def metrics(script: Path, mode: str, data: Path, pred: Path | None, *extra: str) -> dict:
    args = [sys.executable, str(script), mode, str(data), *extra]
    if pred is not None:
        args += ["--pred", str(pred)]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def token_jaccard(a: str, b: str) -> float:
    """The metrics script's floor, computed here so it can be swept like the others."""
    ta, tb = set(re.findall(r"[a-z0-9]+", a.lower())), set(re.findall(r"[a-z0-9]+", b.lower()))
    return len(ta & tb) / max(1, len(ta | tb))


def top_precision(labels: np.ndarray, scores: np.ndarray, at: float) -> tuple[float, float]:
    """Highest recall among thresholds whose hits have precision >= ``at``, and the best
    precision over all thresholds with at least 50 hits."""
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(labels[order])
    hits = np.arange(1, len(labels) + 1)
    ends = np.r_[np.flatnonzero(np.diff(scores[order])), len(labels) - 1]  # tie-group ends
    precision, recall = tp[ends] / hits[ends], tp[ends] / labels.sum()
    ok = precision >= at
    return float(recall[ok].max()) if ok.any() else 0.0, float(precision[hits[ends] >= 50].max())


def at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float, int]:
    """Precision (1.0 without hits, as the metrics script), recall and hits at ``threshold``."""
    hit = scores >= threshold
    tp = int((hit & labels).sum())
    return tp / max(1, int(hit.sum())) if hit.any() else 1.0, tp / labels.sum(), int(hit.sum())


def three_way(rows: list[dict], labels: np.ndarray, scores: np.ndarray, default: float) -> None:
    """The split of ``engine.training.cache_split``: rules were designed on ``design``; the
    threshold is chosen on ``choose`` (the most recall at precision >= 0.95 among thresholds
    with >= 20 hits on a 0.005 grid; failing that, the most precise); everything is then
    reported on ``report``, where nothing was tuned."""
    split = np.array([split_of(r["id"]) for r in rows])
    print("\n## The three splits (engine.training.cache_split)\n")
    print(f"| split | pairs | duplicates | default {default:.3f}: precision | recall | hits |"
          " false hits |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, _ in SPLITS:
        part = split == name
        p, r, n = at(labels[part], scores[part], default)
        print(f"| {name} | {part.sum()} | {labels[part].sum()} | {p:.3f} | {r:.3f} | {n} |"
              f" {n - round(p * n)} |")
    choose, report = split == "choose", split == "report"
    stats = [(t, *at(labels[choose], scores[choose], t)) for t in GRID]
    stats = [s for s in stats if s[3] >= 20]
    safe = [s for s in stats if s[1] >= 0.95]
    chosen = max(safe, key=lambda s: (s[2], -s[0])) if safe else max(stats, key=lambda s: s[1])
    hp, hr, hn = at(labels[report], scores[report], chosen[0])
    low, high = wilson(round(hp * hn), hn)
    print(f"\nthreshold chosen on `choose`: {chosen[0]:.3f} (precision {chosen[1]:.3f}, recall"
          f" {chosen[2]:.3f}, {chosen[3]} hits); on `report`: precision {hp:.3f} (95% Wilson"
          f" interval {low:.3f}-{high:.3f}), recall {hr:.3f}, {hn} hits")


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion: how far a precision measured on a few dozen
    hits can be from the precision on traffic."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def guard_effects(rows: list[dict], labels: np.ndarray, fps: dict, thresholds: tuple) -> None:
    """Per guard, on the design and the choose split: the duplicates and non-duplicates it
    alone vetoes among the pairs that would hit without it (at the score the pair would have
    without vetoes)."""
    keep = {r["id"] for r in rows if split_of(r["id"]) != "report"}
    rows = [r for r in rows if r["id"] in keep]
    labels = np.array([bool(r["duplicate"]) for r in rows])
    odd = np.array([split_of(r["id"]) == "choose" for r in rows])
    names = [name for name, _ in TEXT_GUARDS + ALIGNED_GUARDS]
    lost = {(n, t, h, y): 0 for n in names for t in thresholds for h in (0, 1)
            for y in (False, True)}
    for r, y, half in zip(rows, labels, odd, strict=True):
        c = compare(fps[r["id"], "b"], fps[r["id"], "a"], all_vetoes=True)
        free = 0.5 + 0.5 * min(1.0, max(0.0, c.cosine - c.penalty))  # the score without vetoes
        for t in thresholds:
            if len(c.vetoes) == 1 and free >= t:
                lost[c.vetoes[0], t, int(half), bool(y)] += 1
    print("\n## Guards: pairs each guard alone keeps from hitting (design / choose)\n")
    print("| guard |" + "".join(f" duplicates lost at {t:.2f} | false hits prevented at {t:.2f} |"
                                for t in thresholds))
    print("|---|" + "---:|---:|" * len(thresholds))
    for n in names:
        print(f"| {n} |" + "".join(f" {lost[n, t, 0, True]} / {lost[n, t, 1, True]} |"
                                   f" {lost[n, t, 0, False]} / {lost[n, t, 1, False]} |"
                                   for t in thresholds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("LLM_ROUTER_EVAL_DATA") or None,
                        help="the evaluation data folder (default: $LLM_ROUTER_EVAL_DATA)")
    parser.add_argument("--out", type=Path, help="keep prediction files here")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--embedder-url", help="an OpenAI-compatible /v1/embeddings endpoint:"
                        " its vectors replace the packaged ones (as cache.embedder does)")
    parser.add_argument("--embedder-model", default="text-embedding-3-small")
    parser.add_argument("--embedder-key-env", help="the variable holding the endpoint's key")
    parser.add_argument("--unaligned-cosine", type=float, help="cache.embedder.unaligned_cosine"
                        " for every figure but the bar's own choice (default: unset)")
    args = parser.parse_args()
    if args.data is None:
        parser.error("give --data DIR or set LLM_ROUTER_EVAL_DATA")
    pairs_file = args.data / "cache" / "qqp_pairs_dev.jsonl"
    script = args.data / "cache_metrics.py"
    out = args.out or Path(tempfile.mkdtemp(prefix="cache-sim-"))
    out.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in pairs_file.open(encoding="utf-8")]
    labels = np.array([bool(r["duplicate"]) for r in rows])

    embedder = Embedder()
    embedder.fingerprint("warm up")  # load the model outside the timing
    started = time.perf_counter()
    fps = {(r["id"], side): embedder.fingerprint(r[side]) for r in rows for side in "ab"}
    per_text_us = (time.perf_counter() - started) / len(fps) * 1e6
    if args.embedder_url:
        fps = remote_vectors(fps, args.embedder_url, args.embedder_model,
                             os.environ.get(args.embedder_key_env or "", ""))
        print(f"vectors: {args.embedder_model} at {args.embedder_url}\n")
    started = time.perf_counter()
    bar = args.unaligned_cosine
    ours = np.array([similarity(fps[r["id"], "b"], fps[r["id"], "a"], unaligned_cosine=bar)
                     for r in rows])
    per_pair_us = (time.perf_counter() - started) / len(rows) * 1e6
    cosine = np.array([float(fps[r["id"], "a"].vector @ fps[r["id"], "b"].vector) for r in rows])

    print(f"## Pairs: {pairs_file.name}, {len(rows)} pairs, {labels.sum()} duplicates\n")
    print(f"fingerprint {per_text_us:.0f} us/text, similarity() {per_pair_us:.0f} us/pair\n")
    print("| scorer | ROC-AUC | threshold | precision | recall | false-hit rate | hits |"
          " recall at P>=0.95 | recall at P>=0.90 | max precision (>=50 hits) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    jaccard = np.array([token_jaccard(r["a"], r["b"]) for r in rows])
    for name, scores in (("token Jaccard (the script's floor)", jaccard),
                         ("cosine (WordLlama, or --embedder-url)", cosine),
                         ("similarity(): cosine + guards", ours)):
        tag = name.split()[0].strip("():").lower()
        preds = [{"id": r["id"], "similarity": float(s)} for r, s in zip(rows, scores, strict=True)]
        pred = write(out / f"pairs_{tag}.jsonl", preds)
        r95, _ = top_precision(labels, scores, 0.95)
        r90, best = top_precision(labels, scores, 0.90)
        for i, t in enumerate(dict.fromkeys((args.threshold, *SWEEP))):
            m = metrics(script, "pairs", pairs_file, pred, "--threshold", str(t))
            hits = int((scores >= t).sum())
            head = (f"**{name}** | {m['ROC_AUC']:.4f} | {t:.3g} (default)" if i == 0
                    else f" | | {t:.3g}")
            tail = f"{r95:.3f} | {r90:.3f} | {best:.3f}" if i == 0 else " | | "
            print(f"| {head} | {m['precision']:.4f} | {m['recall']:.4f} |"
                  f" {m['false_hit_rate']:.4f} | {hits} | {tail} |")

    three_way(rows, labels, ours, args.threshold)
    guard_effects(rows, labels, fps, (args.threshold, 0.6))
    report = [r for r in rows if split_of(r["id"]) == "report"]
    bars = [bar]
    if args.embedder_url:
        chosen = choose_bar(rows, labels, fps, args.threshold)
        bars += [b for b in (chosen, 0.95) if b not in bars]
    for b in bars:
        retrieval(rows, rows, fps, out, script, args.threshold, "all", b)
        retrieval(rows, report, fps, out, script, args.threshold, "report", b)


def choose_bar(rows: list[dict], labels: np.ndarray, fps: dict, threshold: float) -> float | None:
    """``cache.embedder.unaligned_cosine`` chosen on ``choose`` (the most recall at precision
    >= 0.95 among bars with >= 20 hits; None, aligned pairs only, if no bar gets there), read
    once on ``report``; with the split figures of a few fixed bars for comparison."""
    split = np.array([split_of(r["id"]) for r in rows])
    choose, report = split == "choose", split == "report"

    def scores(b: float | None) -> np.ndarray:
        return np.array([similarity(fps[r["id"], "b"], fps[r["id"], "a"], unaligned_cosine=b)
                         for r in rows])

    by_bar = {b: scores(b) for b in [None, *BARS]}
    stats = [(b, *at(labels[choose], s[choose], threshold)) for b, s in by_bar.items()]
    safe = [s for s in stats if s[3] >= 20 and s[1] >= 0.95]
    # the most recall; on a tie, unset (no unaligned hit), else the lowest bar
    chosen = max(safe, key=lambda s: (s[2], s[0] is None, -(s[0] or 0.0)))[0] if safe else None
    print(f"\n## cache.embedder.unaligned_cosine (at threshold {threshold:.3f})\n")
    print("| bar | split | precision | recall | hits | false hits | 95% Wilson interval |")
    print("|---|---|---:|---:|---:|---:|---|")
    shown = dict.fromkeys([None, 0.9, 0.95, 0.97, 0.98, 0.99, chosen])
    for b in shown:
        for name in ("design", "choose", "report"):
            part = split == name
            p, r, n = at(labels[part], by_bar[b][part], threshold)
            low, high = wilson(round(p * n), n)
            tag = "unset" if b is None else f"{b:.4g}"
            tag += " (chosen on choose)" if b == chosen and name == "choose" else ""
            print(f"| {tag} | {name} | {p:.3f} | {r:.3f} | {n} | {n - round(p * n)} |"
                  f" {low:.3f}-{high:.3f} |")
    p, r, n = at(labels[report], by_bar[chosen][report], threshold)
    low, high = wilson(round(p * n), n)
    print(f"\nbar chosen on `choose`: {'unset' if chosen is None else chosen}; on `report`:"
          f" precision {p:.3f} (95% Wilson interval {low:.3f}-{high:.3f}), recall {r:.3f},"
          f" {n} hits, {n - round(p * n)} false")
    return chosen


def remote_vectors(fps: dict, url: str, model: str, key: str) -> dict:
    """The fingerprints with their sentence vectors from an embeddings endpoint, 64 texts a
    call (``Fingerprint.with_vector``: what ``cache.embedder`` does)."""
    import httpx

    url = url.rstrip("/")
    url = url if url.endswith("/embeddings") else url + "/embeddings"
    headers = {"authorization": f"Bearer {key}"} if key else {}
    items = list(fps.items())
    out = {}
    with httpx.Client(timeout=60) as http:
        for start in range(0, len(items), 64):
            chunk = items[start:start + 64]
            answer = http.post(url, headers=headers, json={
                "model": model, "input": [fp.text for _, fp in chunk]})
            answer.raise_for_status()
            data = sorted(answer.json()["data"], key=lambda d: d["index"])
            for (k, fp), row in zip(chunk, data, strict=True):
                out[k] = fp.with_vector(np.asarray(row["embedding"], np.float32))
    return out


def duplicate_groups(rows: list[dict]) -> dict[str, str]:
    """Each question's representative under the transitive closure of the duplicate labels
    (QQP repeats questions across pairs: a "negative" may return one labelled a duplicate)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x] = parent[parent[x]]
        return x

    for r in rows:
        if r["duplicate"]:
            parent[find(canonical(r["a"]))] = find(canonical(r["b"]))
    return {text: find(text) for text in list(parent)}


def canonical(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def retrieval(rows: list[dict], part: list[dict], fps: dict, out: Path, script: Path,
              threshold: float, name: str, bar: float | None = None) -> None:
    dups = [r for r in part if r["duplicate"]]
    texts = {r["id"]: r for r in dups}
    groups = duplicate_groups(rows)
    dup_file = write(out / f"qqp_duplicates_{name}.jsonl", dups)
    print(f"\n## Retrieval (GPTCache protocol), {name} pairs: {len(dups)} duplicate pairs;"
          f" insert every a, query every b; unaligned_cosine {bar}\n")
    print("| cache | threshold | positive | negative | of which labelled duplicates (the very"
          " text stored under another id) | fail (miss) |"
          " precision of hits | counting labelled duplicates | lookup median |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    floor = metrics(script, "retrieval", dup_file, None)
    print(f"| token-Jaccard nearest neighbour (script floor) | 0.50 | {floor['positive']} |"
          f" {floor['negative']} | | {floor['fail']} |"
          f" {floor['positive'] / max(1, floor['positive'] + floor['negative']):.3f} | | |")
    for name, exact_below, rescore in (
        ("cosine nearest neighbour", 2048, False),
        ("similarity(), exact index (k=8)", 2048, True),
        ("similarity(), HNSW index (k=8)", 0, True),
    ):
        index = VectorIndex(fps[dups[0]["id"], "a"].vector.shape[0], exact_below=exact_below)
        for r in dups:
            index.add(r["id"], fps[r["id"], "a"].vector)
        preds, times = [], []
        for r in dups:
            query: Fingerprint = fps[r["id"], "b"]
            started = time.perf_counter()
            candidates = index.search(query.vector, k=8)
            if rescore:
                scored = [(similarity(query, fps[key, "a"], unaligned_cosine=bar), key)
                          for key, _ in candidates]
            else:
                scored = [(score, key) for key, score in candidates]
            best = max(scored, key=lambda s: s[0], default=(0.0, None))
            times.append(time.perf_counter() - started)
            preds.append({"id": r["id"], "hit_id": best[1] if best[0] >= threshold else None})
        m = metrics(script, "retrieval", dup_file, write(out / f"retrieval_{name}_{exact_below}"
                                                        f"{'_rescored' if rescore else ''}_{bar}"
                                                        ".jsonl", preds))
        wrong = [p for p in preds if p["hit_id"] not in (None, p["id"])]
        labelled = sum(1 for p in wrong if groups.get(canonical(texts[p["hit_id"]]["a"]))
                       == groups.get(canonical(texts[p["id"]]["b"])))
        same_text = sum(1 for p in wrong if canonical(texts[p["hit_id"]]["a"])
                        == canonical(texts[p["id"]]["a"]))
        hits = max(1, m["positive"] + m["negative"])
        print(f"| {name} | {threshold:.2f} | {m['positive']} | {m['negative']} |"
              f" {labelled} ({same_text}) |"
              f" {m['fail']} | {m['positive'] / hits:.3f} | {(m['positive'] + labelled) / hits:.3f}"
              f" | {np.median(times) * 1e6:.0f} us |")
    print(f"\nprediction files: {out}")


if __name__ == "__main__":
    main()
