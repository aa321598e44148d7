"""Durable workflow run benchmarks.

1. **Drain**: 1,000 runs of a two-op chain submitted asynchronously (``Prefer:
   respond-async``) as fast as one client with 32 connections can, to a router process
   (``llm-router``, its own process, as served) with ``workflows.max_concurrent_runs: 16`` in
   front of the fake provider answering at once (in this process).
   Reported: the submission rate (each submission is recorded in the run store before its
   202), and the time until every run has succeeded.
2. **Resume after a crash**: a router process with 50 runs in flight (each waiting on its
   second op, which hangs) is killed with SIGKILL; a new process is started on the same store
   (the provider now answers). Reported: time from the new process's start to its listening
   socket, to every run resumed (``starts == 2``), and to every run finished.

3. **Synchronous runs, A/B**: the same 1,000 chains posted synchronously by 16 clients at
   once. ``--baseline`` with ``PYTHONPATH`` at a checkout from before durable runs measures
   the same work unrecorded (the router process imports that checkout's code).

    .venv/bin/python bench/runs_bench.py [--runs 1000] [--crash-runs 50] [--json FILE]
    PYTHONPATH=/path/to/old/checkout .venv/bin/python bench/runs_bench.py --baseline
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine.testing.fake_upstream import Behaviour, FakeUpstream, open_fake_upstream

CHAIN = """\
ops:
  a: {prompt: "Step a.", model: ma, max_tokens: 16}
  b: {prompt: "Step b.", model: mb, max_tokens: 16, input_ops: [a]}
"""
LLM_ROUTER = str(Path(sys.executable).parent / "llm-router")
BASELINE = False


def models(fake: FakeUpstream) -> list[dict[str, Any]]:
    return [{"name": name, "provider": "openai", "model": name, "tier": 1, "api_key": "k",
             "base_url": fake.base_url(name, "openai"), "cost_per_1k_in": 0.001,
             "cost_per_1k_out": 0.002} for name in ("ma", "mb")]


async def count(http: httpx.AsyncClient, url: str, status: str, limit: int) -> int:
    listed = await http.get(f"{url}/v1/workflows/runs?status={status}&limit={limit}")
    return len(listed.json()["data"])


async def drain(n: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="llmr-bench-drain-"))
    async with open_fake_upstream() as fake:
        config = write_config(folder, fake, max_concurrent_runs=16)
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(limits=limits, timeout=60) as http:
            router, url, _ = await start_router(config)
            try:
                began = time.perf_counter()

                async def submit(i: int, limiter: trio.Semaphore) -> None:
                    try:
                        answer = await http.post(url + "/v1/workflows",
                                                 headers={"prefer": "respond-async"},
                                                 json={"workflow": CHAIN, "input": f"item {i}"})
                        assert answer.status_code == 202, answer.text
                    finally:
                        limiter.release()

                async with trio.open_nursery() as nursery:
                    limiter = trio.Semaphore(32)
                    for i in range(n):
                        await limiter.acquire()
                        nursery.start_soon(submit, i, limiter)
                submitted = time.perf_counter() - began
                while await count(http, url, "queued", 1) or await count(http, url, "running", 1):
                    await trio.sleep(0.05)
                drained = time.perf_counter() - began
                assert await count(http, url, "succeeded", n) == n
            finally:
                router.send_signal(signal.SIGTERM)
                await router.wait()
    return {"runs": n, "submit_s": round(submitted, 3),
            "submissions_per_s": round(n / submitted, 1), "drain_s": round(drained, 3),
            "runs_per_s": round(n / drained, 1), "upstream_calls": len(fake.requests("ma"))
            + len(fake.requests("mb"))}


def write_config(folder: Path, fake: FakeUpstream, *, max_concurrent_runs: int) -> Path:
    data: dict[str, Any] = {
        "models": models(fake), "cache": {"enabled": False},
        "learned": {"model": None, "feedback_db": str(folder / "feedback.db")},
        "state": {"path": str(folder / "state.db")},
        "workflows": {"max_concurrent_runs": max_concurrent_runs},
    }
    if BASELINE:  # a build from before durable runs knows neither key
        del data["state"], data["workflows"]
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(data))
    return config


async def synchronous(n: int, connections: int = 16) -> dict[str, Any]:
    """The same chain run synchronously (``POST /v1/workflows``, the answer in the response)
    by ``connections`` clients at once: with durable runs each is a recorded run; run with
    ``--baseline`` and ``PYTHONPATH`` at a build from before them, the same work unrecorded."""
    folder = Path(tempfile.mkdtemp(prefix="llmr-bench-sync-"))
    async with open_fake_upstream() as fake:
        config = write_config(folder, fake, max_concurrent_runs=connections)
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=connections),
                                     timeout=60) as http:
            router, url, _ = await start_router(config)
            try:
                left = iter(range(n))
                began = time.perf_counter()

                async def client() -> None:
                    for i in left:
                        answer = await http.post(url + "/v1/workflows",
                                                 json={"workflow": CHAIN, "input": f"item {i}"})
                        assert answer.status_code == 200, answer.text

                async with trio.open_nursery() as nursery:
                    for _ in range(connections):
                        nursery.start_soon(client)
                took = time.perf_counter() - began
            finally:
                router.send_signal(signal.SIGTERM)
                await router.wait()
    return {"runs": n, "connections": connections, "s": round(took, 3),
            "runs_per_s": round(n / took, 1)}


async def start_router(config: Path) -> tuple[trio.Process, str, float]:
    began = time.perf_counter()
    process = await trio.lowlevel.open_process(
        [LLM_ROUTER, "--config", str(config), "--addr", "127.0.0.1:0"],
        cwd=config.parent, stderr=subprocess.PIPE, env=dict(os.environ))
    assert process.stderr is not None
    err = b""
    while (found := re.search(rb"listening on (http://127\.0\.0\.1:\d+)", err)) is None:
        chunk = await process.stderr.receive_some()
        assert chunk, err.decode()
        err += chunk
    return process, found.group(1).decode(), time.perf_counter() - began


async def crash_and_resume(n: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="llmr-bench-runs-"))
    async with open_fake_upstream() as fake:
        fake.set_default("mb", Behaviour(hang=True))
        config = write_config(folder, fake, max_concurrent_runs=n)
        async with httpx.AsyncClient(timeout=30) as http:
            first, url, _ = await start_router(config)
            for i in range(n):
                answer = await http.post(url + "/v1/workflows",
                                         headers={"prefer": "respond-async"},
                                         json={"workflow": CHAIN, "input": f"item {i}"})
                assert answer.status_code == 202
            while len(fake.requests("mb")) < n:
                await trio.sleep(0.02)
            first.send_signal(signal.SIGKILL)
            await first.wait()
            fake.clear_default("mb")

            began = time.perf_counter()
            second, url, listening = await start_router(config)
            try:
                resumed = finished = None
                while finished is None:
                    runs = (await http.get(url + "/v1/workflows/runs?limit=1000")).json()["data"]
                    now = time.perf_counter() - began
                    if resumed is None and all(r["starts"] == 2 for r in runs):
                        resumed = now
                    if all(r["status"] == "succeeded" for r in runs):
                        finished = now
                    await trio.sleep(0.01)
            finally:
                second.send_signal(signal.SIGTERM)
                await second.wait()
    calls_a = len(fake.requests("ma"))
    return {"runs": n, "listening_s": round(listening, 3), "all_resumed_s": round(resumed, 3),
            "all_finished_s": round(finished, 3), "op_a_calls": calls_a,
            "op_b_calls": len(fake.requests("mb"))}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--crash-runs", type=int, default=50)
    parser.add_argument("--baseline", action="store_true",
                        help="only the synchronous run, for a build without durable runs")
    parser.add_argument("--json")
    args = parser.parse_args()
    global BASELINE
    BASELINE = args.baseline
    if BASELINE:
        results = {"synchronous": await synchronous(args.runs)}
    else:
        results = {"synchronous": await synchronous(args.runs), "drain": await drain(args.runs),
                   "crash_resume": await crash_and_resume(args.crash_runs)}
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    trio.run(main)
