"""Redis's side of one peer-harness run, for ``bench/totals_load.sh`` (started by it, in the
background, next to ``run_peer.sh``; stdlib only).

Watches the run folder's ``raw/`` for llm-router's wrk runs: when a run's file appears (wrk
started) and when its summary is written (wrk done) it reads Redis's ``INFO commandstats``
and the redis-server's CPU ticks (``/proc/PID/stat``) and the load average, and appends one
JSON line per wrk run to ``--out``: the calls of each command in that window, Redis CPU
seconds, the window's length. Right after each run it also reads ``GET /stats`` from the
router ``--reads`` times, each on a new connection (with ``--workers 2`` either process may
answer), and every process's own ``total_requests`` as written in Redis, to check the shared
totals against the requests wrk completed.

    python3 bench/totals_watch.py --run-dir DIR --redis-port P --redis-pid PID --port 4101 \
        --out DIR/redis.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def redis_cli(port: int, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True,
                          text=True, check=True, timeout=10).stdout


def commandstats(port: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in redis_cli(port, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line.partition(":")
            fields = dict(part.split("=") for part in rest.split(","))
            out[name.removeprefix("cmdstat_")] = int(fields["calls"])
    return out


def ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def snapshot(args: argparse.Namespace) -> dict[str, object]:
    return {"t": time.monotonic(), "calls": commandstats(args.redis_port),
            "ticks": ticks(args.redis_pid),
            "load": float(Path("/proc/loadavg").read_text().split()[0])}


def stats_reads(args: argparse.Namespace) -> list[str]:
    """``total_requests`` of each read, with its ``scope`` unless ``shared``."""
    values = []
    for _ in range(args.reads):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{args.port}/stats", timeout=5) as r:
                stats = json.load(r)
            scope = "" if stats.get("scope") in ("shared", None) else f" ({stats['scope']})"
            values.append(f"{stats['total_requests']}{scope}")
        except OSError:
            break
    return values


def per_process(args: argparse.Namespace) -> dict[str, int]:
    out = {}
    keys = redis_cli(args.redis_port, "--scan", "--pattern", "llmr:stats:{totals}:proc:*")
    for key in keys.split():
        value = redis_cli(args.redis_port, "HGET", key, "total_requests").strip()
        out[key.rpartition(":proc:")[2]] = int(float(value or 0))
    return out


def wrk_requests(raw: Path) -> int:
    """Requests wrk completed in every llm-router run (warm-ups too) so far."""
    total = 0
    for path in raw.glob("*-llm-router-*.txt"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("WRKJSON "):
                total += json.loads(line[8:])["requests"]
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--redis-port", type=int, required=True)
    parser.add_argument("--redis-pid", type=int, required=True)
    parser.add_argument("--port", type=int, default=4101)
    parser.add_argument("--reads", type=int, default=20)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    raw = args.run_dir / "raw"
    started: dict[Path, dict[str, object]] = {}
    done: set[Path] = set()
    while True:
        for path in sorted(raw.glob("*-llm-router-*-run.txt")) if raw.is_dir() else []:
            if path in done:
                continue
            if path not in started:
                started[path] = snapshot(args)
                continue
            if "WRKJSON " not in path.read_text(errors="replace"):
                continue
            end = snapshot(args)
            reads = stats_reads(args)
            begin = started[path]
            seconds = float(end["t"]) - float(begin["t"])  # type: ignore[arg-type]
            calls = {name: n - begin["calls"].get(name, 0)  # type: ignore[attr-defined]
                     for name, n in end["calls"].items()  # type: ignore[attr-defined]
                     if n != begin["calls"].get(name, 0)}  # type: ignore[attr-defined]
            row = {"run": path.name, "seconds": round(seconds, 3), "calls": calls,
                   "redis_cpu_s": (int(end["ticks"]) - int(begin["ticks"])) / TICK,  # type: ignore[call-overload]
                   "load": [begin["load"], end["load"]], "stats_reads": reads,
                   "wrk_requests": wrk_requests(raw), "per_process": per_process(args)}
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            done.add(path)
        time.sleep(0.02)


if __name__ == "__main__":
    main()
