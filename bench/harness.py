"""The router served in-process on a free loopback port, for the benchmarks.

The scripts here run as ``.venv/bin/python bench/NAME.py``, so this module (beside them) is
importable as ``harness``; the fake provider comes from the package (``engine.testing``).
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
import yaml

from api.http.app import create_app
from api.http.server import hypercorn_config, serve
from engine.core.config import Config, parse_config

__all__ = ["RunningRouter", "make_config", "open_router"]


@dataclass
class RunningRouter:
    url: str
    config: Config

    @property
    def v1(self) -> str:
        return self.url + "/v1"


def make_config(data: Mapping[str, Any]) -> Config:
    """A validated config from a dict in config.yaml's shape; the feedback database goes to
    a fresh temporary folder (so does the run store), and routing is the heuristic alone unless ``learned`` says."""
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
async def open_router(config: Config) -> AsyncIterator[RunningRouter]:
    """The router app, served as ``llm-router`` serves it, on 127.0.0.1:0 for the block."""
    app = create_app(config)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(lambda task_status: serve(
            app, hypercorn_config(config, host="127.0.0.1", port=0),
            shutdown_trigger=stop.wait, task_status=task_status))
        try:
            yield RunningRouter(url=binds[0], config=config)
        finally:
            stop.set()
