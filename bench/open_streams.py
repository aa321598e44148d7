"""Garbage-collection pauses while many streams are open at once.

An LLM gateway holds streams open for tens of seconds, so thousands can be in flight at a
modest request rate, and every object each one keeps alive is walked again by the collector's
older generations. This script keeps ``--streams`` streaming chat completions open against the
router (each from the fake provider on loopback: ``--words`` deltas, ``--delay`` seconds
apart, reopened as it ends), and meanwhile sends sequential JSON requests over one connection
(a second, instant backend) for ``--seconds``. The router runs as its own process under
``bench/gc_probe.py``, so every collection it makes is timed.

    .venv/bin/python bench/open_streams.py --streams 1000 --seconds 30 [--census]

Prints the probe's latency percentiles and, per generation, the collections made while
serving and their CPU time; with ``--census``, what the oldest generation held at each full
collection (by type). ``--cpu N`` pins the router to CPU N (``taskset``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio
import yaml
from harness import free_port, percentile, wait_healthy

ROOT = Path(__file__).resolve().parents[1]

# The fake provider in a process of its own: in this one it would compete with the clients.
FAKE = """
import sys, trio
from engine.testing.fake_upstream import Behaviour, open_fake_upstream
async def main(port, text, delay):
    async with open_fake_upstream(port=port) as fake:
        fake.set_default("slow", Behaviour(text=text, chunk_delay=delay))
        fake.set_default("fast", Behaviour(text="ok"))
        await trio.sleep_forever()
trio.run(main, int(sys.argv[1]), sys.argv[2], float(sys.argv[3]))
"""


def router_config(fake_openai: str, fast_openai: str, folder: Path) -> dict:
    model = {"provider": "openai", "model": "gpt-4o-mini", "api_key": "k",
             "cost_per_1k_in": 0.15, "cost_per_1k_out": 0.6, "tier": 1}
    return {
        "models": [dict(model, name="slow", base_url=fake_openai),
                   dict(model, name="fast", base_url=fast_openai)],
        "cache": {"enabled": False},
        "dedup": {"enabled": False},
        "upstream": {"max_connections_per_origin": 8192},
        "learned": {"model": None, "feedback_db": str(folder / "feedback.db")},
        "state": {"path": str(folder / "state.db")},
    }


async def run(args: argparse.Namespace) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="llmr-open-streams-"))
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    text = " ".join(f"w{i}" for i in range(args.words))
    fake_port = args.fake_port or free_port()
    fake = subprocess.Popen([sys.executable, "-c", FAKE, str(fake_port), text, str(args.delay)],
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    base = f"http://127.0.0.1:{fake_port}"
    config = router_config(f"{base}/slow/v1", f"{base}/fast/v1", folder)
    (folder / "router.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, str(ROOT / "bench" / "gc_probe.py"), str(folder / "gc.json")]
    command += ["--census"] if args.census else []
    command += args.probe_arg
    command += ["--", "--config", str(folder / "router.yaml"), "--addr", f"127.0.0.1:{port}"]
    if args.cpu is not None and shutil.which("taskset"):
        command = ["taskset", "-c", str(args.cpu), *command]
    log = (folder / "router.log").open("w")
    router = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                                  filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))))
    body = json.dumps({"model": "slow", "stream": True,
                       "messages": [{"role": "user", "content": "Tell me a story."}]}).encode()
    stream_request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Content-Type: application/json\r\nConnection: close\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    opened = 0
    failed = 0
    latencies: list[float] = []
    try:
        async with httpx.AsyncClient(timeout=120) as client:
            await wait_healthy(client, url)
            done = trio.Event()

            async def keep_streaming(first_delay: float) -> None:
                # Raw sockets, not httpx: a thousand httpx streams would make this process,
                # not the router, the bottleneck.
                nonlocal opened, failed
                await trio.sleep(first_delay)
                while not done.is_set():
                    try:
                        stream = await trio.open_tcp_stream("127.0.0.1", port)
                    except OSError:
                        failed += 1
                        await trio.sleep(0.5)
                        continue
                    async with stream:
                        await stream.send_all(stream_request)
                        opened += 1
                        tail = b""
                        while not done.is_set():
                            data = await stream.receive_some(65536)
                            if not data:
                                failed += 1
                                break
                            if b"[DONE]" in tail + data:
                                break
                            tail = data[-8:]

            async def probe() -> None:
                body = {"model": "fast",
                        "messages": [{"role": "user", "content": "ping"}]}
                async with httpx.AsyncClient(timeout=60) as one:
                    deadline = trio.current_time() + args.seconds
                    while trio.current_time() < deadline:
                        start = time.perf_counter()
                        response = await one.post(url + "/v1/chat/completions", json=body)
                        latencies.append((time.perf_counter() - start) * 1000)
                        if response.status_code != 200:
                            raise SystemExit(f"probe got {response.status_code}")
                done.set()

            async with trio.open_nursery() as nursery:
                ramp = args.words * args.delay  # spread the openings over one stream's life
                for i in range(args.streams):
                    nursery.start_soon(keep_streaming, ramp * i / args.streams)
                await trio.sleep(ramp)  # all open before the probe starts
                nursery.start_soon(probe)
                await done.wait()
                nursery.cancel_scope.cancel()
    finally:
        peak_rss = _peak_rss_mib(router.pid)
        router.terminate()
        await trio.to_thread.run_sync(router.wait)
        fake.terminate()
        log.close()
    gc_report = json.loads((folder / "gc.json").read_text())
    return {"latencies": latencies, "opened": opened, "failed": failed, "gc": gc_report,
            "folder": str(folder), "peak_rss_mib": peak_rss}


def _peak_rss_mib(pid: int) -> float | None:
    """The router's peak resident memory (``VmHWM``), in MiB, where /proc says."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def report(args: argparse.Namespace, result: dict) -> None:
    ms = sorted(result["latencies"])
    print(f"{args.streams} open streams ({result['opened']} opened, {result['failed']} failed); "
          f"probe: {len(ms)} JSON requests, p50 {percentile(ms, 0.5):.2f} ms, "
          f"p99 {percentile(ms, 0.99):.2f} ms, max {ms[-1]:.2f} ms; router peak RSS "
          f"{result['peak_rss_mib'] or 0:.0f} MiB")
    gc = result["gc"]
    for generation in (0, 1, 2):
        rows = [c for c in gc["collections"] if c["generation"] == generation and c["serving"]]
        if not rows:
            print(f"  generation {generation}: none while serving")
            continue
        cpu = sorted(c["cpu_ms"] for c in rows)
        print(f"  generation {generation}: {len(rows)} collections, CPU p50 "
              f"{statistics.median(cpu):.2f} ms, max {cpu[-1]:.2f} ms, "
              f"{sum(c['collected'] for c in rows)} freed")
    for census in gc.get("census", [])[-1:]:
        print(f"  last full collection: tracked by generation {census['tracked']}; oldest:")
        for name, count in census["types"][:20]:
            print(f"    {count:8d} {name}")
    print(f"  (raw: {result['folder']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--words", type=int, default=40, help="deltas per stream")
    parser.add_argument("--delay", type=float, default=0.5, help="seconds between deltas")
    parser.add_argument("--census", action="store_true")
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--probe-arg", action="append", default=[],
                        help="passed to bench/gc_probe.py, e.g. --probe-arg=--threshold=700,10,10")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fake-port", type=int, default=0)
    args = parser.parse_args()
    report(args, trio.run(run, args))


if __name__ == "__main__":
    main()
