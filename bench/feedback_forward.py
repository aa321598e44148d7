"""What a feedback report costs when it reaches a process that did not answer the request.

Usage: .venv/bin/python bench/feedback_forward.py [--reports 500] [--rounds 5]

Two real ``llm-router`` processes share one ``redis-server`` (started here on a free loopback
port, nothing saved; it must be on the PATH) and the fake upstream (in this process). Each
round asks A for ``reports / rounds`` chat answers, then reports on each once, alternating
between A (the process that answered: filed where it is remembered) and B (forwarded to A
through Redis: ``engine.runtime.shared_reports``), one at a time, and times each
``POST /v1/feedback`` from the client. Prints Markdown: p50 / p90 / p99 of both.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import percentile, redis_server

from engine.testing import open_fake_upstream

ROUTER = str(Path(sys.executable).with_name("llm-router"))


def write_config(folder: Path, fake_url: str, redis_url: str) -> Path:
    folder.mkdir(parents=True)
    config = {
        "models": [{"name": "m", "provider": "openai", "model": "m", "tier": 1,
                    "base_url": fake_url, "api_key": "k"}],
        "cache": {"enabled": False},
        "learned": {"model": None, "feedback_db": str(folder / "feedback.db")},
        "state": {"path": str(folder / "state.db"), "redis_url": redis_url},
        "workflows": {"dir": str(folder / "none"), "templates_dir": str(folder / "none")},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def start(config: Path, nursery: trio.Nursery) -> tuple[trio.Process, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_ROUTER_")}
    process = await trio.lowlevel.open_process(
        [ROUTER, "--config", str(config), "--addr", "127.0.0.1:0"],
        cwd=config.parent, env=env, stderr=subprocess.PIPE)
    assert process.stderr is not None
    seen = b""
    with trio.fail_after(60):
        while (found := re.search(rb"listening on (http://127\.0\.0\.1:\d+)", seen)) is None:
            chunk = await process.stderr.receive_some()
            assert chunk, seen.decode()
            seen += chunk

    async def drain(stream: trio.abc.ReceiveStream) -> None:
        while await stream.receive_some():
            pass

    nursery.start_soon(drain, process.stderr)
    return process, found.group(1).decode()


async def main(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="llmr-forward-"))
    with redis_server() as redis_url:
        async with open_fake_upstream() as fake, trio.open_nursery() as nursery:
            url = fake.base_url("m", "openai")
            a_process, a = await start(write_config(folder / "a", url, redis_url), nursery)
            b_process, b = await start(write_config(folder / "b", url, redis_url), nursery)
            times: dict[str, list[float]] = {"A (answered it)": [], "B (forwarded to A)": []}
            async with httpx.AsyncClient(timeout=30) as http:
                for _ in range(args.rounds):
                    ids = []
                    for i in range(args.reports // args.rounds):
                        answer = await http.post(f"{a}/v1/chat/completions", json={
                            "model": "auto",
                            "messages": [{"role": "user", "content": f"question {i}"}]})
                        ids.append(answer.headers["x-request-id"])
                    for i, request_id in enumerate(ids):
                        name, target = (("A (answered it)", a) if i % 2 == 0
                                        else ("B (forwarded to A)", b))
                        started = time.perf_counter()
                        reply = await http.post(f"{target}/v1/feedback", json={
                            "request_id": request_id, "quality": 0.5})
                        times[name].append((time.perf_counter() - started) * 1000)
                        assert reply.status_code == 200, reply.text
            for process in (a_process, b_process):
                process.terminate()
                await process.wait()
            nursery.cancel_scope.cancel()
    print("| feedback sent to | reports | p50 ms | p90 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|")
    for name, values in times.items():
        print(f"| {name} | {len(values)} | {percentile(values, 0.5):.2f} | "
              f"{percentile(values, 0.9):.2f} | {percentile(values, 0.99):.2f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    trio.run(main, parser.parse_args())
