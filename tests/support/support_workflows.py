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
import trio.testing
import yaml
from router_harness import RunningRouter, make_config, open_router
from support_hold_relay import HoldRelay
from support_routing import model_entry

from engine.testing.fake_upstream import FakeUpstream, Recorded
from engine.wire.sse import decode_events

__all__ = [
    "ROOT",
    "WorkflowClient",
    "open_raw_post",
    "open_workflow_router",
    "prompt_of",
    "received",
    "run_held",
    "sse_events",
    "three_tiers",
    "workflow",
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


def workflow(ops: dict[str, dict[str, Any]], **top: Any) -> str:
    """A workflow's YAML: ``top``-level fields, then ``ops``."""
    return yaml.safe_dump({**top, "ops": ops}, sort_keys=False)


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


async def run_held(client: WorkflowClient, relay: HoldRelay, workflow: str, input: str, *,
                   held: int) -> tuple[int, httpx.Response]:
    """Run ``workflow`` with ``relay`` holding every answer until ``held`` of them wait at
    once and everything else the run was going to send has arrived too; then let all answers
    through. Returns how many calls were under way together at that point, and the response.
    """
    relay.hold()
    done: dict[str, httpx.Response] = {}

    async def run() -> None:
        done["response"] = await client.run(workflow, input)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            await relay.wait_held(held)
            await trio.testing.wait_all_tasks_blocked()  # a call more, were one sent, is in
            under_way = relay.held
            relay.release()
    return under_way, done["response"]
