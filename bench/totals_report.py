"""The tables of ``bench/totals_load.sh``: ``python3 bench/totals_report.py OUT_DIR [BASE]``
(BASE: the variant the ratios are against, ``none`` unless given).

For each connection count: every run's req/s, the router's CPU ms per request (the harness's
``proxy_cpu_s``: its process tree's user+system time from ``/proc``), errors and foreign CPU;
then per variant the medians, and the median over pairs of each pair's ratio to BASE's.
Redis's side (``totals_watch.py``): totals writes per second (``EVALSHA`` calls: the totals
write is a script, and nothing else the router sends under this load is), every command's
calls per second, Redis CPU, and the ``/stats`` reads after each run against the requests wrk
completed. Prints Markdown."""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

BAD = ("err_connect", "err_read", "err_write", "err_status", "err_timeout", "bad_status",
       "bad_body")


def ratio(mine: dict[int, dict[str, object]], base: dict[int, dict[str, object]],
          pairs: list[int], field: str) -> float:
    """The median over ``pairs`` of each pair's ``field`` in ``mine`` over ``base``'s."""
    return statistics.median(float(mine[p][field]) / float(base[p][field])  # type: ignore[arg-type]
                             for p in pairs)


def main(out: Path, baseline: str = "none") -> None:
    runs: dict[tuple[int, str], Path] = {}
    for path in sorted(out.glob("pair*-*")):
        m = re.fullmatch(r"pair(\d+)-(\w+)", path.name)
        if m and path.is_dir() and (path / "results.jsonl").exists():
            runs[int(m[1]), m[2]] = path
    variants = list(dict.fromkeys(v for _, v in runs))
    rows: dict[tuple[int, str, int], dict[str, object]] = {}
    for (pair, variant), path in runs.items():
        redis = {}
        if (path / "redis.jsonl").exists():
            for line in (path / "redis.jsonl").read_text().splitlines():
                row = json.loads(line)
                redis[int(re.search(r"-c(\d+)-run", row["run"])[1])] = row  # type: ignore[index]
        for line in (path / "results.jsonl").read_text().splitlines():
            r = json.loads(line)
            if r["target"] != "llm-router":
                continue
            wrk = r["wrk"]
            rows[pair, variant, r["conns"]] = {
                "rps": wrk["rps"], "cpu_ms": 1000 * r["proxy_cpu_s"] / wrk["requests"],
                "errors": sum(wrk[k] for k in BAD), "foreign": r["foreign_cpu_s"],
                "redis": redis.get(r["conns"])}
    for conns in sorted({c for _, _, c in rows}):
        print(f"\n### {conns} connection{'s' if conns > 1 else ''}\n")
        print("| pair | variant | req/s | CPU ms/req | errors | foreign CPU s | totals writes/s "
              "| Redis CPU % | load avg |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|---|")
        for (pair, variant, c), row in sorted(rows.items()):
            if c != conns:
                continue
            redis = row["redis"] or {}
            writes = cpu = "-"
            if redis and redis["seconds"]:
                writes = f"{redis['calls'].get('evalsha', 0) / redis['seconds']:.1f}"
                cpu = f"{100 * redis['redis_cpu_s'] / redis['seconds']:.1f}"
            load = "-" if not redis else "{:.1f}-{:.1f}".format(*redis["load"])
            print(f"| {pair} | {variant} | {row['rps']:.0f} | {row['cpu_ms']:.3f} | "
                  f"{row['errors']} | {row['foreign']:.1f} | {writes} | {cpu} | {load} |")
        print(f"\n| variant | median req/s | median CPU ms/req | req/s vs {baseline} (median of "
              f"pairs) | CPU/req vs {baseline} (median of pairs) |")
        print("|---|---:|---:|---:|---:|")
        for variant in variants:
            mine = {p: r for (p, v, c), r in rows.items() if v == variant and c == conns}
            base = {p: r for (p, v, c), r in rows.items() if v == baseline and c == conns}
            if not mine:
                continue
            rps = statistics.median(float(r["rps"]) for r in mine.values())  # type: ignore[arg-type]
            cpu = statistics.median(float(r["cpu_ms"]) for r in mine.values())  # type: ignore[arg-type]
            pairs = [p for p in mine if p in base]
            vs = cpu_vs = "-"
            if pairs and variant != baseline:
                vs = f"{ratio(mine, base, pairs, 'rps'):.3f}"
                cpu_vs = f"{ratio(mine, base, pairs, 'cpu_ms'):.3f}"
            print(f"| {variant} | {rps:.0f} | {cpu:.3f} | {vs} | {cpu_vs} |")
    print("\n### Redis marked unavailable by the router (0.25 s without an answer)\n")
    for (pair, variant), path in sorted(runs.items()):
        downs = sum(log.read_text(errors="replace").count("is unavailable (")
                    for log in path.glob("proxies/llm-router/round*/stdout.log"))
        print(f"- pair {pair} {variant}: {downs}")
    print("\n### Redis commands per second, and /stats after each run\n")
    print("| pair | variant | conns | calls/s by command | /stats total_requests read "
          "(distinct values) | wrk completed | per process in Redis |")
    print("|---:|---|---:|---|---|---:|---|")
    for (pair, variant, conns), row in sorted(rows.items()):
        redis = row["redis"]
        if not redis or not redis["seconds"]:
            continue
        calls = ", ".join(f"{k} {n / redis['seconds']:.1f}" for k, n in
                          sorted(redis["calls"].items(), key=lambda kv: -kv[1]) if k != "info")
        reads = sorted(set(redis["stats_reads"]))
        print(f"| {pair} | {variant} | {conns} | {calls} | {reads} | {redis['wrk_requests']} | "
              f"{sorted(redis['per_process'].values())} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:3])
