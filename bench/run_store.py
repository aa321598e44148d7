"""Run store overhead per op, as a durable run pays it.

Every op of a durable run is two store writes before the run moves on (``Runs._progress``):
``op_started`` (the op's state and its event) and ``op_finished`` (the op's state with its
answer, the run's cost, and the event carrying the answer), each its own ``BEGIN IMMEDIATE``
transaction, through ``trio.to_thread.run_sync`` like every store call. This times those two
commits per op on the embedded ``SqliteRunStore`` (WAL, ``synchronous=NORMAL``: no fsync per
commit) over ``--ops`` ops, in runs of ``--ops-per-run`` ops recorded as ``Runs.submit``
records them, while the store is tidied (its write-ahead log checkpointed) every second as
the runtime does; then, for scale, one thread round trip with no work (what any store call costs
before SQLite does anything) and one ``create`` per run.

With ``--redis URL`` the same is timed on the shared ``RedisRunStore`` (each commit one
``EVALSHA``), and the round trip for scale is a ``PING`` on the same connection. The keys it
writes stay in that Redis: point it at a database of its own (``redis://host:6379/15``).

    .venv/bin/python bench/run_store.py [--ops 2000] [--ops-per-run 4] [--output-bytes 500]
                                        [--dir DIR | --redis URL] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.core.redis_address import RedisAddress
from engine.core.workflow.runs import OpState, RunChange, RunRecord, RunSpec, new_run_id
from engine.stores import RunStore, SqliteRunStore
from engine.stores.redis import RedisRunStore, open_redis

WORKFLOW = """\
ops:
  op0: {prompt: "Step 0.", model: m}
  op1: {prompt: "Step 1.", model: m, input_ops: [op0]}
  op2: {prompt: "Step 2.", model: m, input_ops: [op1]}
  op3: {prompt: "Step 3.", model: m, input_ops: [op2]}
"""
WARMUP_RUNS = 10


def stats(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {"p50_ms": round(statistics.median(ms), 4),
            "p99_ms": round(statistics.quantiles(ms, n=100)[98], 4),
            "mean_ms": round(statistics.fmean(ms), 4), "n": len(ms)}


def op_changes(record: RunRecord, name: str, now: float, answer: str
               ) -> tuple[RunChange, RunChange]:
    """The two changes ``Runs._progress`` writes for an op that succeeds."""
    started = OpState(status="running", tier=1, started_at=now)
    finished = OpState(status="succeeded", model="m", tier=1, cost_usd=0.00042,
                       input_tokens=120, output_tokens=80, attempts=1, ms=850.0,
                       output=answer, started_at=now, finished_at=now + 0.85)
    summary = {"status": "done", "model": "m", "tier": 1, "cache": None, "cost_usd": 0.00042,
               "tokens": {"input": 120, "output": 80}, "ms": 850.0, "attempts": 1}
    record.cost_usd += finished.cost_usd
    return (
        RunChange(ops={name: started},
                  event=("op_started", {"op": name, "tier": 1, "model": "m"})),
        RunChange(ops={name: finished}, fields={"cost_usd": record.cost_usd},
                  event=("op_finished", {"op": name, "output": answer} | summary)),
    )


async def measure(store: RunStore, *, ops: int, per_run: int, answer: str
                  ) -> dict[str, Any]:
    per_op: list[float] = []
    started_commits: list[float] = []
    finished_commits: list[float] = []
    creates: list[float] = []
    runs = -(-ops // per_run)
    for run in range(WARMUP_RUNS + runs):
        counted = run >= WARMUP_RUNS
        names = [f"op{i}" for i in range(per_run)]
        record = RunRecord(run_id=new_run_id(), created_at=time.time(),
                           spec=RunSpec(workflow_text=WORKFLOW, input=f"item {run}"),
                           ops={name: OpState() for name in names})
        began = time.perf_counter()
        await store.create(record, owner="bench", lease_sec=15.0, now=time.time())
        if counted:
            creates.append(time.perf_counter() - began)
        for name in names:
            if counted and len(per_op) == ops:
                break
            first, second = op_changes(record, name, time.time(), answer)
            began = time.perf_counter()
            await store.commit(record.run_id, first, now=time.time())
            middle = time.perf_counter()
            await store.commit(record.run_id, second, now=time.time())
            ended = time.perf_counter()
            if counted:
                per_op.append(ended - began)
                started_commits.append(middle - began)
                finished_commits.append(ended - middle)
    limiter = trio.CapacityLimiter(1)
    hops = []
    for _ in range(ops):
        began = time.perf_counter()
        if isinstance(store, RedisRunStore):
            await store.redis.call("PING")
        else:
            await trio.to_thread.run_sync(int, limiter=limiter)
        hops.append(time.perf_counter() - began)
    return {"per_op": stats(per_op), "op_started_commit": stats(started_commits),
            "op_finished_commit": stats(finished_commits), "thread_hop": stats(hops),
            "create": stats(creates)}


def machine() -> str:
    with open("/proc/cpuinfo") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info
                    if line.startswith("model name")), platform.processor())
    return (f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu};"
            f" Python {platform.python_version()}")


async def tidy_every_second(store: SqliteRunStore) -> None:
    while True:
        await trio.sleep(1)
        await store.tidy()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--ops-per-run", type=int, default=4)
    parser.add_argument("--output-bytes", type=int, default=500,
                        help="each op's answer (kept in its state and its op_finished event)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the store file goes (default: a fresh temporary folder)")
    parser.add_argument("--redis", metavar="URL", default=None,
                        help="time the shared Redis store at URL instead of the SQLite file")
    parser.add_argument("--json")
    args = parser.parse_args()
    answer = ("The answer, word by word. " * (args.output_bytes // 26 + 1))[: args.output_bytes]
    if args.redis:
        address = RedisAddress.from_url(args.redis)
        async with open_redis(address) as redis:
            info = await redis.call("INFO", "server")
            text = info.decode() if isinstance(info, bytes) else ""
            version = next((line.split(":", 1)[1] for line in text.split()
                            if line.startswith("redis_version:")), "?")
            results = await measure(RedisRunStore(redis), ops=args.ops,
                                    per_run=args.ops_per_run, answer=answer)
        where = f"Redis {version} at {address.describe()}"
        scale = "Redis PING round trip"
    else:
        folder = Path(tempfile.mkdtemp(prefix="llmr-bench-store-", dir=args.dir))
        store = SqliteRunStore(folder / "state.db")
        await store.open()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(tidy_every_second, store)  # as the runtime's upkeep does
                results = await measure(store, ops=args.ops, per_run=args.ops_per_run,
                                        answer=answer)
                nursery.cancel_scope.cancel()
            size = sum(f.stat().st_size for f in folder.iterdir())
        finally:
            await store.close()
            shutil.rmtree(folder)
        where = f"SQLite {sqlite3.sqlite_version}, store in {folder} ({size / 1e6:.1f} MB)"
        scale = "thread round trip, no work"
    print(f"machine: {machine()}; {where}")
    print(f"{args.ops} ops in runs of {args.ops_per_run}, answers of {args.output_bytes} B\n")
    print("| what | p50 (ms) | p99 (ms) | mean (ms) |")
    print("|---|---:|---:|---:|")
    for name, label in (("per_op", "per op: op_started + op_finished commits"),
                        ("op_started_commit", "op_started commit"),
                        ("op_finished_commit", "op_finished commit"),
                        ("thread_hop", scale),
                        ("create", "create (per run)")):
        row = results[name]
        print(f"| {label} | {row['p50_ms']:.3f} | {row['p99_ms']:.3f} | {row['mean_ms']:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    trio.run(main)
