"""Support for the workflow integration tests: a router over the fake upstream with the
repository's ready pipelines, a client for the workflow endpoints, and readers for what the
fake received.

Models come from :func:`support_routing.model_entry`, so each model's backend on the fake is
named after it. The cache is off unless a test asks (workflow tests count upstream calls).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import trio
from router_harness import RunningRouter, make_config, open_router
from support_routing import model_entry

from engine.testing.fake_upstream import FakeUpstream, Recorded
from engine.wire.sse import decode_events

__all__ = [
    "ROOT",
    "WorkflowClient",
    "max_active",
    "open_raw_post",
    "open_workflow_router",
    "prompt_of",
    "received",
    "sse_events",
    "three_tiers",
]

ROOT = Path(__file__).resolve().parents[2]


def three_tiers(fake: FakeUpstream, **prices: float) -> list[dict[str, Any]]:
    """``t1`` (OpenAI), ``t2`` (Anthropic) and ``t3`` (OpenAI), one per tier.

    ``prices`` (``cost_per_1k_in`` / ``cost_per_1k_out``) apply to all three.
    """
    return [
        model_entry(fake, "t1", tier=1, **prices),
        model_entry(fake, "t2", tier=2, provider="anthropic", **prices),
        model_entry(fake, "t3", tier=3, **prices),
    ]


def prompt_of(record: Recorded) -> str:
    """The user message text of a request the fake received (either protocol)."""
    content = record.body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


def received(fake: FakeUpstream, *backends: str) -> list[str]:
    """The prompts ``backends`` received, in arrival order per backend, backends in turn."""
    return [prompt_of(r) for b in backends for r in fake.requests(b)]


def sse_events(raw: str) -> list[tuple[str, Any]]:
    """The ``(event, data)`` pairs of an SSE body, in order."""
    return [
        (name or "message", orjson.loads(data))
        for name, data in decode_events(raw.encode())
        if data
    ]


@dataclass
class WorkflowClient:
    """An ``httpx`` client for the workflow endpoints of a running router."""

    router: RunningRouter
    http: httpx.AsyncClient

    async def run(self, workflow: str, input: str = "", **fields: Any) -> httpx.Response:
        """``POST /v1/workflows``."""
        body = {"input": input, "workflow": workflow, **fields}
        return await self.http.post(self.router.v1 + "/workflows", json=body)

    async def run_named(self, name: str, input: str = "", **fields: Any) -> httpx.Response:
        """``POST /v1/workflows/{name}``."""
        body = {"input": input, **fields}
        return await self.http.post(f"{self.router.v1}/workflows/{name}", json=body)

    async def stream(self, workflow: str, input: str = "", **fields: Any
                     ) -> tuple[httpx.Response, list[tuple[str, Any]]]:
        """``POST /v1/workflows`` with ``"stream": true``, read to its end."""
        body = {"input": input, "workflow": workflow, "stream": True, **fields}
        async with self.http.stream("POST", self.router.v1 + "/workflows", json=body) as resp:
            raw = (await resp.aread()).decode()
        return resp, sse_events(raw)


@asynccontextmanager
async def open_workflow_router(
    models: list[dict[str, Any]], **sections: Any
) -> AsyncIterator[WorkflowClient]:
    """A router serving ``models`` and the ready pipelines of ``workflows/``, and a client."""
    sections = {
        "cache": {"enabled": False},
        "workflows": {"dir": str(ROOT / "workflows"), "templates_dir": str(ROOT / "templates")}
        | sections.pop("workflows", {}),
    } | sections
    config = make_config({"models": models, **sections})
    async with open_router(config) as router, httpx.AsyncClient(timeout=20) as http:
        yield WorkflowClient(router, http)


@asynccontextmanager
async def open_raw_post(url: str, path: str, body: Any) -> AsyncIterator[trio.SocketStream]:
    """A JSON POST sent over a bare socket, which the block reads and then hangs up.

    For clients that leave mid-response: httpx's streaming readers are nested async
    generators, and abandoning one leaves the inner ones to the garbage collector (a
    ResourceWarning under trio). A socket closes at once and completely.
    """
    host, port = url.removeprefix("http://").rsplit(":", 1)
    payload = orjson.dumps(body)
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(head.encode() + payload)
        yield stream


@asynccontextmanager
async def max_active(fake: FakeUpstream) -> AsyncIterator[list[int]]:
    """Watch ``fake.active`` while the block runs; the list's one item is the peak seen.

    Polls every millisecond: requests in these tests last tens of milliseconds or more, so
    every level the fake reaches is seen.
    """
    peak = [0]

    async def watch() -> None:
        while True:
            peak[0] = max(peak[0], fake.active)
            await trio.sleep(0.001)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        try:
            yield peak
        finally:
            nursery.cancel_scope.cancel()
