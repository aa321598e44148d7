"""Soak: 50 connections for minutes while one backend's faults come and go.

Usage: .venv/bin/python bench/soak.py [--clients 50] [--phase 8] [--probe 2] [--json out.json]

The router runs as its own process (``python -m api.cli``) in front of the fake upstream (in
this process). Tier 1 has two backends, ``a1`` and ``a2``; every request is routed (``model:
"auto"``, short prompts, so tier 1), half of them streamed. ``a1`` is faulted in turn with a
500, a 429 with Retry-After, a connection reset, a hang and a cut stream, each for one phase,
then healed; after each heal the run checks that ``a1`` is back in rotation within its probe
interval. Reported: requests, client-visible failures (a non-200 status, a transport error, or
a stream that does not end with ``[DONE]``), ``a1``'s share of traffic after each heal, and the
router's RSS and open descriptors before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout: the package itself

from harness import wait_healthy  # noqa: E402

from engine.testing.fake_upstream import Behaviour, FakeUpstream, open_fake_upstream  # noqa: E402
from engine.wire.sse import decode_events  # noqa: E402

FAULTS: dict[str, Behaviour] = {
    "500": Behaviour(status=500),
    "429": Behaviour(status=429, retry_after=2),
    "reset": Behaviour(cut_after=0),
    "hang": Behaviour(hang=True),
    "cut stream": Behaviour(cut_after=2),
}


def config(fake: FakeUpstream, probe: float) -> dict[str, Any]:
    timeouts = {"connect_sec": 2, "first_byte_sec": 2, "idle_sec": 2, "total_sec": 10}

    def model(name: str, tier: int) -> dict[str, Any]:
        return {"name": name, "provider": "openai", "model": f"{name}-id",
                "base_url": fake.base_url(name, "openai"), "api_key": "sk-soak",
                "tier": tier, "cost_per_1k_in": 0.001 * tier, "cost_per_1k_out": 0.002 * tier,
                "timeouts": timeouts}

    return {
        "models": [model("a1", 1), model("a2", 1), model("c1", 3)],
        "cache": {"enabled": False},
        "dedup": {"enabled": False},
        "learned": {"model": None, "feedback_db": ":memory:"},
        "health": {"probe_interval_sec": probe},
        "upstream": {"keepalive_expiry_sec": 5},
    }


def proc_status(pid: int) -> tuple[int, int]:
    """(RSS in KiB, open descriptors) of ``pid``."""
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


class Load:
    def __init__(self) -> None:
        self.ok = 0
        self.failures: list[str] = []
        # Streams an upstream cut after content had reached the client: no backend can take
        # over mid-answer, so the client gets a well-formed error event (counted apart).
        self.cut_with_error_event = 0

    async def client(self, url: str, worker: int, stop: trio.Event) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        timeout = httpx.Timeout(30.0)
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
            n = 0
            while not stop.is_set():
                n += 1
                stream = n % 2 == 0
                body = {"model": "auto", "stream": stream,
                        "messages": [{"role": "user", "content": f"hello {worker} {n}"}]}
                try:
                    if stream:
                        async with http.stream("POST", url, json=body) as response:
                            data = b"".join([chunk async for chunk in response.aiter_bytes()])
                        good = response.status_code == 200 and b"data: [DONE]" in data
                        if response.status_code == 200 and not good and _error_event(data):
                            self.cut_with_error_event += 1
                            continue
                    else:
                        response = await http.post(url, json=body)
                        good = response.status_code == 200 and bool(
                            response.json()["choices"][0]["message"]["content"])
                    if good:
                        self.ok += 1
                    else:
                        self.failures.append(f"{response.status_code} stream={stream}")
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__} stream={stream}")


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    async with open_fake_upstream() as fake:
        folder = Path(tempfile.mkdtemp(prefix="llmr-soak-"))
        (folder / "soak.yaml").write_text(yaml.safe_dump(config(fake, args.probe)))
        port = args.port
        router = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "--config", str(folder / "soak.yaml"),
             "--addr", f"127.0.0.1:{port}", "--log-level", "warning"],
            cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)},
        )
        base = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient() as http:
                await wait_healthy(http, base)
            return await _run(args, fake, router.pid, base)
        finally:
            router.terminate()
            router.wait(15)


async def _run(args: argparse.Namespace, fake: FakeUpstream, pid: int, base: str
               ) -> dict[str, Any]:
    rss_idle, fds_idle = proc_status(pid)
    load = Load()
    stop = trio.Event()
    phases: list[dict[str, Any]] = []
    async with trio.open_nursery() as nursery:
        for worker in range(args.clients):
            nursery.start_soon(load.client, base + "/v1/chat/completions", worker, stop)
        await trio.sleep(args.phase)  # warm up: every connection open, pools filled
        rss0, fds0 = proc_status(pid)
        started = time.monotonic()
        for name, behaviour in FAULTS.items():
            failures_before = len(load.failures)
            cuts_before = load.cut_with_error_event
            fake.set_default("a1", behaviour)
            await trio.sleep(args.phase)
            fake.set_default("a1", Behaviour())
            due = (await _backend_rows(base)).get("a1", {}).get("next_probe_in_sec")
            healed = len(fake.requests("a1")), len(fake.requests("a2"))
            # Back in rotation: a1 serves again within its probe interval (plus the one
            # probe request's own time); measured as the first a1 request after the heal.
            heal_time = time.monotonic()
            back_after = None
            while time.monotonic() - heal_time < args.phase:
                if len([r for r in fake.requests("a1")[healed[0]:] if r.status == 200]) > 0:
                    back_after = time.monotonic() - heal_time
                    break
                await trio.sleep(0.05)
            await trio.sleep(max(0.0, args.phase - (time.monotonic() - heal_time)))
            a1 = len(fake.requests("a1")) - healed[0]
            a2 = len(fake.requests("a2")) - healed[1]
            status = await _backends(base)
            phases.append({
                "fault": name,
                "client_failures": len(load.failures) - failures_before,
                "streams_cut_with_error_event": load.cut_with_error_event - cuts_before,
                "a1_back_after_s": None if back_after is None else round(back_after, 2),
                # when a1's ejection (the probe interval, doubled per failed probe) ended
                "a1_probe_due_at_heal_s": due,
                "a1_share_after_heal": round(a1 / max(1, a1 + a2), 3),
                "a1_status_at_end": status.get("a1"),
            })
        elapsed = time.monotonic() - started
        stop.set()
    await trio.sleep(8)  # idle: upstream connections expire (keepalive_expiry_sec 5)
    rss1, fds1 = proc_status(pid)
    return {
        "clients": args.clients, "phase_s": args.phase, "probe_interval_s": args.probe,
        "seconds": round(elapsed, 1), "requests_ok": load.ok,
        "client_failures": len(load.failures), "failure_kinds": sorted(set(load.failures)),
        "streams_cut_with_error_event": load.cut_with_error_event,
        "requests_per_s": round(load.ok / elapsed, 1), "phases": phases,
        # idle before the load, under load (after warm-up), idle after it
        "rss_mib": [round(rss_idle / 1024, 1), round(rss0 / 1024, 1), round(rss1 / 1024, 1)],
        "open_fds": [fds_idle, fds0, fds1],
    }


def _error_event(data: bytes) -> bool:
    """Whether an OpenAI SSE body ends with a well-formed error event."""
    events = decode_events(data)
    if not events:
        return False
    try:
        last = json.loads(events[-1][1])
    except ValueError:
        return False
    return isinstance(last, dict) and isinstance(last.get("error"), dict)


async def _backend_rows(base: str) -> dict[str, dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        data = (await http.get(base + "/v1/backends")).json()
    rows = data if isinstance(data, list) else data.get("backends", [])
    return {row["name"]: row for row in rows if "name" in row}


async def _backends(base: str) -> dict[str, str]:
    return {name: row["status"] for name, row in (await _backend_rows(base)).items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--phase", type=float, default=8.0, help="seconds per fault and per heal")
    ap.add_argument("--probe", type=float, default=2.0, help="health.probe_interval_sec")
    ap.add_argument("--port", type=int, default=18181)
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()
    result = trio.run(soak, args)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
