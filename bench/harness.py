"""The router served in-process on a free loopback port, for the benchmarks.

The scripts here run as ``.venv/bin/python bench/NAME.py``, so this module (beside them) is
importable as ``harness``; the fake provider comes from the package (``engine.testing``).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio
import yaml

from api.http.app import create_app
from api.http.server import hypercorn_config, serve
from engine.core.config import Config, parse_config

__all__ = ["RunningRouter", "free_port", "make_config", "one_model_config", "open_router",
           "percentile", "redis_server", "wait_healthy"]


@dataclass
class RunningRouter:
    url: str
    config: Config

    @property
    def v1(self) -> str:
        return self.url + "/v1"


def make_config(data: Mapping[str, Any]) -> Config:
    """A validated config from a dict in config.yaml's shape; the feedback database goes to
    a fresh temporary folder (so does the run store), and routing is the heuristic alone
    unless ``learned`` says."""
    data = dict(data)
    learned = dict(data.get("learned") or {})
    learned.setdefault("feedback_db",
                       str(Path(tempfile.mkdtemp(prefix="llmr-bench-")) / "feedback.db"))
    learned.setdefault("model", None)
    data["learned"] = learned
    state = dict(data.get("state") or {})
    state.setdefault("path", str(Path(tempfile.mkdtemp(prefix="llmr-bench-")) / "state.db"))
    data["state"] = state
    return parse_config(yaml.safe_dump(data), environ={})


@asynccontextmanager
async def open_router(config: Config, port: int = 0) -> AsyncIterator[RunningRouter]:
    """The router app, served as ``llm-router`` serves it, on 127.0.0.1:``port`` (0: any
    free one) for the block."""
    app = create_app(config)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(lambda task_status: serve(
            app, hypercorn_config(config, host="127.0.0.1", port=port),
            shutdown_trigger=stop.wait, task_status=task_status))
        try:
            yield RunningRouter(url=binds[0], config=config)
        finally:
            stop.set()


async def wait_healthy(http: httpx.AsyncClient, url: str, *, timeout: float = 30.0) -> None:
    """Until the router at ``url`` (started in another process) answers ``GET /health``."""
    with trio.fail_after(timeout):
        while True:
            try:
                if (await http.get(url + "/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await trio.sleep(0.1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextmanager
def redis_server() -> Iterator[str]:
    """A ``redis-server`` from the PATH on a free loopback port, saving nothing, for the
    block: its URL. Exits the script when there is none or it does not start."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not on the PATH")
    folder = tempfile.mkdtemp(prefix="llmr-bench-redis-")
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save",
                                "", "--appendonly", "no", "--dir", folder],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:  # until it accepts connections
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    sys.exit("redis-server did not start")
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.kill()
        process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def one_model_config(fake_url: str, folder: Path, *, redis_url: str | None = None,
                     **more: Any) -> Config:
    """A gateway's config with one tier-1 model ``m`` at ``fake_url``, cache off, the
    heuristic router, its files in ``folder`` (made here), and ``more`` top-level sections."""
    folder.mkdir(parents=True, exist_ok=True)
    state: dict[str, object] = {"path": str(folder / "state.db")}
    if redis_url is not None:
        state["redis_url"] = redis_url
    data: dict[str, Any] = {
        "models": [{"name": "m", "provider": "openai", "model": "m", "tier": 1,
                    "base_url": fake_url, "api_key": "k",
                    "cost_per_1k_in": 0.001, "cost_per_1k_out": 0.002}],
        "cache": {"enabled": False},
        "learned": {"model": None, "feedback_db": str(folder / "feedback.db")},
        "state": state, **more,
    }
    return parse_config(yaml.safe_dump(data), environ={})


def run_rounds(main: Callable[[argparse.Namespace], Awaitable[None]], doc: str | None, *,
               requests: int, rounds: int, **more: int) -> None:
    """Run a benchmark's ``main`` with ``--requests`` and ``--rounds`` from the command line
    (these defaults), and an integer option per keyword of ``more`` (its default), its
    description the first line of ``doc``."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    parser.add_argument("--requests", type=int, default=requests)
    parser.add_argument("--rounds", type=int, default=rounds)
    for name, default in more.items():
        parser.add_argument(f"--{name}", type=int, default=default)
    trio.run(main, parser.parse_args())
