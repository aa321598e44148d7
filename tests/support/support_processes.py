"""Real ``llm-router`` processes for the tests where a process must die (SIGKILL, SIGTERM) or
several processes share state: started on a free port from a config file, their address read
from their log, and killed when the block ends."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio
import yaml

from engine.testing.fake_upstream import FakeUpstream

__all__ = ["LLM_ROUTER", "fake_model", "router_process", "two_routers", "write_router_config"]

LLM_ROUTER = str(Path(sys.executable).parent / "llm-router")


def fake_model(fake: FakeUpstream, name: str, *, price: float | None = None,
               **fields: Any) -> dict[str, Any]:
    """A tier 1 OpenAI model of the config, served by ``fake`` as backend ``name`` (and
    costing ``price`` per 1k tokens each way, when given)."""
    model = {"name": name, "provider": "openai", "model": name, "tier": 1,
             "base_url": fake.base_url(name, "openai"), "api_key": "k"}
    if price is not None:
        model |= {"cost_per_1k_in": price, "cost_per_1k_out": price}
    return model | fields


def write_router_config(folder: Path, redis_url: str, models: list[dict[str, Any]],
                        **sections: Any) -> Path:
    """The config file of one router process, in ``folder`` (made here): ``models`` on the
    Redis at ``redis_url``, its feedback database and state file in the folder, the cache
    off, the heuristic router, no ready workflows. ``sections`` replace top-level sections,
    except ``learned`` and ``state``, which they add to."""
    folder.mkdir()
    config: dict[str, Any] = {
        "models": models,
        "cache": {"enabled": False},
        "learned": {"model": None, "feedback_db": str(folder / "feedback.db")},
        "state": {"path": str(folder / "state.db"), "redis_url": redis_url},
        "workflows": {"dir": str(folder / "none"), "templates_dir": str(folder / "none")},
    }
    for name, section in sections.items():
        config[name] = config[name] | section if name in ("learned", "state") else section
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@asynccontextmanager
async def router_process(
    config: Path, *, log: bytearray | None = None
) -> AsyncIterator[tuple[trio.Process, str]]:
    """An ``llm-router`` process on a free port and its URL; killed at the end if still
    running. Its stderr is drained in the background, so a chatty process never blocks, into
    ``log`` when given (to its end when the process exited within the block)."""
    log = bytearray() if log is None else log
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_ROUTER_")}
    process = await trio.lowlevel.open_process(
        [LLM_ROUTER, "--config", str(config), "--addr", "127.0.0.1:0"],
        cwd=config.parent, env=env, stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        with trio.fail_after(30):
            while (found := re.search(rb"listening on (http://127\.0\.0\.1:\d+)", log)) is None:
                chunk = await process.stderr.receive_some()
                assert chunk, log.decode()
                log += chunk
        drained = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, process.stderr, log, drained)
            yield process, found.group(1).decode()
            if process.returncode is not None:
                with trio.move_on_after(5):
                    await drained.wait()
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.move_on_after(5, shield=True):
                await process.wait()
        await process.stderr.aclose()


@asynccontextmanager
async def two_routers(
    tmp_path: Path, write_config: Callable[[Path, FakeUpstream, str], Path],
    fake: FakeUpstream, redis_url: str,
) -> AsyncIterator[tuple[str, str, httpx.AsyncClient]]:
    """Two router processes sharing one Redis, each from its own folder's config, and a
    client to call them with: ``(url_a, url_b, http)``."""
    async with (
        router_process(write_config(tmp_path / "a", fake, redis_url)) as (_, a),
        router_process(write_config(tmp_path / "b", fake, redis_url)) as (_, b),
        httpx.AsyncClient(timeout=10) as http,
    ):
        yield a, b, http


async def _drain(stream: trio.abc.ReceiveStream, log: bytearray, drained: trio.Event) -> None:
    try:
        while chunk := await stream.receive_some():
            log += chunk
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        drained.set()
