"""Serving the real router app on a free loopback port, for integration tests."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
import yaml
from quart_trio import QuartTrio

from api.http.app import create_app
from api.http.server import hypercorn_config, serve
from engine.core.config import Config, parse_config

__all__ = ["RunningRouter", "make_config", "open_router"]


@dataclass
class RunningRouter:
    url: str
    config: Config
    #: The served app, for a test that calls it directly (as the server would) or reads its
    #: extensions.
    app: QuartTrio | None = None

    @property
    def v1(self) -> str:
        return self.url + "/v1"


def make_config(data: Mapping[str, Any], *, environ: Mapping[str, str] | None = None) -> Config:
    """A validated config from a dict in config.yaml's shape (goes through the YAML loader).

    Unless the test names them, the feedback database and the run store go to fresh temporary
    folders, so
    tests never write into the working tree or share state.
    """
    data = dict(data)
    learned = dict(data.get("learned") or {})
    if "feedback_db" not in learned:
        learned["feedback_db"] = str(Path(tempfile.mkdtemp(prefix="llmr-test-")) / "feedback.db")
    # Tests route with the heuristic alone (as any file that names no trained router does)
    # unless they ask for one: its scores are exact by construction, which is what most
    # routing assertions rely on. The shipped config.yaml names the built-in trained router;
    # tests/core/test_config.py pins both.
    learned.setdefault("model", None)
    data["learned"] = learned
    state = dict(data.get("state") or {})
    if "path" not in state:
        state["path"] = str(Path(tempfile.mkdtemp(prefix="llmr-test-")) / "state.db")
    data["state"] = state
    return parse_config(yaml.safe_dump(data), environ=environ or {})


@asynccontextmanager
async def open_router(config: Config) -> AsyncIterator[RunningRouter]:
    """The router app served as ``llm-router`` serves it (``api.server.serve``) on
    127.0.0.1:0 until the block ends.

    The server is always stopped gracefully, also when the block fails: the failure is held
    until the server has shut down, so a failing test shows its own error, not a server
    cancelled in the middle of its shutdown.
    """
    app = create_app(config)
    stop = trio.Event()
    stopped = trio.Event()

    async def run(task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await serve(app, hypercorn_config(config, host="127.0.0.1", port=0),
                        shutdown_trigger=stop.wait, task_status=task_status)
        finally:
            stopped.set()

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(run)
        try:
            yield RunningRouter(url=binds[0], config=config, app=app)
        except BaseException:
            stop.set()
            with trio.move_on_after(10, shield=True):
                await stopped.wait()
            raise
        finally:
            stop.set()
