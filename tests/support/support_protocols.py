"""Shared set-up for the protocol and streaming integration tests.

One fake upstream serves three "providers" and the real router is configured with one model
per tier, so every test knows exactly where a request goes:

=============  ==========  ====  ===============  ======================================
router model   provider    tier  fake backend     used for
=============  ==========  ====  ===============  ======================================
gpt-small      openai      1     ``oa-small``     short plain prompts routed with "auto"
claude-mid     anthropic   2     ``an-mid``       "auto" requests with tools (tier >= 2)
claude-big     anthropic   3     ``an-big``       pinning a model by name
=============  ==========  ====  ===============  ======================================

Tests pin ``gpt-small`` or ``claude-mid`` to choose the upstream protocol regardless of the
client's. The cache is off so that repeated prompts always reach the fake.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anthropic
import openai
import pytest
import trio
from router_harness import RunningRouter, make_config, open_router
from support_hold_relay import HoldRelay

from engine.testing.fake_upstream import FakeUpstream, Recorded, ToolCall
from engine.wire.sse import decode_events

__all__ = [
    "ANTHROPIC_TOOLS",
    "AN_BIG",
    "AN_MID",
    "OA_SMALL",
    "OPENAI_TOOLS",
    "SDK_STREAM_LEAKS",
    "UPSTREAM_KEYS",
    "WEATHER",
    "ProtocolEnv",
    "RawStream",
    "open_protocol_env",
    "open_raw_stream",
    "sse_events",
    "user",
    "wait_until_cancelled",
]

OA_SMALL, AN_MID, AN_BIG = "oa-small", "an-mid", "an-big"
UPSTREAM_KEYS = {
    OA_SMALL: "upstream-key-oa",
    AN_MID: "upstream-key-mid",
    AN_BIG: "upstream-key-big",
}

WEATHER = ToolCall(name="get_weather", arguments={"city": "Paris", "unit": "celsius", "days": 3})
_WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
    "required": ["city"],
}
OPENAI_TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": _WEATHER_SCHEMA,
        },
    }
]
ANTHROPIC_TOOLS: list[Any] = [
    {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "input_schema": _WEATHER_SCHEMA,
    }
]

# The openai SDK stops reading a stream at `[DONE]` (or when closed early) without finishing
# its own async generators, and trio reports each one when it is collected. Only those are
# ignored: they live in the SDK and the httpx2 / httpcore2 it ships with, while the router's
# own reader (httpx, engine.*) must never leave one behind.
SDK_STREAM_LEAKS = pytest.mark.filterwarnings(
    r"ignore:Async generator '(openai|httpx2|httpcore2)\.:ResourceWarning"
)

# Short upstream deadlines: nothing in these tests should take more than a second or two.
_TIMEOUTS = {"connect_sec": 2, "first_byte_sec": 5, "idle_sec": 5, "total_sec": 10}


def _model(name: str, provider: str, backend: str, tier: int, fake: FakeUpstream | HoldRelay
           ) -> dict[str, Any]:
    return {
        "name": name,
        "provider": provider,
        "model": f"{name}-id",
        "base_url": fake.base_url(backend, provider),
        "api_key": UPSTREAM_KEYS[backend],
        "cost_per_1k_in": 0.001 * tier,
        "cost_per_1k_out": 0.002 * tier,
        "tier": tier,
        "timeouts": _TIMEOUTS,
    }


@dataclass
class ProtocolEnv:
    """A running router in front of the fake, with an async client of each SDK."""

    fake: FakeUpstream
    router: RunningRouter
    openai: openai.AsyncOpenAI
    anthropic: anthropic.AsyncAnthropic

    def sent(self, backend: str) -> dict[str, Any]:
        """The JSON body of the last request ``backend`` received."""
        records = self.fake.requests(backend)
        assert records, f"{backend} received no request"
        body: dict[str, Any] = records[-1].body
        return body

    def only_request(self, backend: str) -> Recorded:
        """The one request ``backend`` received (fails if it received more or none)."""
        [record] = self.fake.requests(backend)
        return record

    def sync_openai(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.router.v1, api_key="client-key", max_retries=0,
            http_client=openai.DefaultHttpxClient(verify=False),
        )

    def sync_anthropic(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            base_url=self.router.url, api_key="client-key", max_retries=0,
            http_client=anthropic.DefaultHttpxClient(verify=False),
        )


@asynccontextmanager
async def open_protocol_env(
    fake: FakeUpstream, *, api_keys: Sequence[str] = (), cache: bool = False,
    server: Mapping[str, Any] | None = None, dedup: bool = True, via: HoldRelay | None = None,
) -> AsyncIterator[ProtocolEnv]:
    """Serve the router (see the module table) for the block, with both SDKs pointed at it.
    ``server``: more keys of the config's ``server`` section; ``via``: a relay in front of
    ``fake`` that the router reaches it through."""
    config: dict[str, Any] = {
        "models": [
            _model("gpt-small", "openai", OA_SMALL, 1, via or fake),
            _model("claude-mid", "anthropic", AN_MID, 2, via or fake),
            _model("claude-big", "anthropic", AN_BIG, 3, via or fake),
        ],
        "cache": {"enabled": cache},
        "dedup": {"enabled": dedup},
        "server": {"api_keys": list(api_keys), **(server or {})},
    }
    key = api_keys[0] if api_keys else "client-key"
    async with (
        open_router(make_config(config)) as router,
        openai.AsyncOpenAI(
            base_url=router.v1, api_key=key, max_retries=0, http_client=_plain_http("openai")
        ) as oai,
        anthropic.AsyncAnthropic(
            base_url=router.url, api_key=key, max_retries=0, http_client=_plain_http("anthropic")
        ) as claude,
    ):
        yield ProtocolEnv(fake=fake, router=router, openai=oai, anthropic=claude)


def _plain_http(sdk: str) -> Any:
    """The SDK's own default HTTP client, minus loading CA certificates: the router is plain
    HTTP on loopback, and loading them costs 20 ms per client, which adds up over the suite."""
    module = openai if sdk == "openai" else anthropic
    return module.DefaultAsyncHttpxClient(verify=False)


def user(text: str) -> list[Any]:
    """A one-message conversation."""
    return [{"role": "user", "content": text}]


def sse_events(raw: bytes) -> list[tuple[str, Any]]:
    """``(event name, parsed data)`` of every event in a raw SSE body (``[DONE]`` as a string)."""
    return [
        (name, data if data == "[DONE]" else json.loads(data))
        for name, data in decode_events(raw)
        if data
    ]


async def wait_until_cancelled(fake: FakeUpstream, backend: str) -> Recorded:
    """Wait (at most 2 s) until the fake serves nothing; its last request must have been
    cancelled by the router before the fake finished answering it."""
    with trio.fail_after(2):
        await fake.wait_until_idle()
    record = fake.requests(backend)[-1]
    assert record.cancelled and not record.completed
    return record


class RawStream:
    """A streaming response read over a bare socket, only as far as the test says: between
    calls, the client reads nothing (a client that stopped reading)."""

    def __init__(self, stream: trio.SocketStream, head: bytes, body: bytes) -> None:
        self._stream = stream
        self.head = head  # status line and headers
        self.raw = body  # the (chunked) body received so far
        self.closed = False  # the router closed the connection (before the body's end, if any)

    async def read_to_end(self) -> bytes:
        """Read until the chunked body ends or the router closes the connection; the raw
        body."""
        while not _dechunk(self.raw)[1]:
            try:
                data = await self._stream.receive_some(1 << 16)
            except trio.BrokenResourceError:  # reset: what was read is all there is
                data = b""
            if not data:
                self.closed = True
                break
            self.raw += data
        return self.raw

    def events(self) -> list[tuple[str, Any]]:
        """The SSE events of the body so far (see ``sse_events``)."""
        return sse_events(_dechunk(self.raw)[0])


@asynccontextmanager
async def open_raw_stream(url: str, path: str, body: dict[str, Any]) -> AsyncIterator[RawStream]:
    """POST ``body`` to ``url + path`` with ``Connection: close`` and read the response head.

    The socket's receive buffer is kept small (as set before connecting), so that what the
    kernel holds for a client that stops reading is small next to what a test streams.
    """
    where = urlsplit(url)
    payload = json.dumps(body).encode()
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    await sock.connect((where.hostname, where.port))
    stream = trio.SocketStream(sock)
    async with stream:
        await stream.send_all(
            f"POST {path} HTTP/1.1\r\nhost: {where.netloc}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n"
            "connection: close\r\n\r\n".encode() + payload
        )
        received = b""
        while b"\r\n\r\n" not in received:
            data = await stream.receive_some(4096)
            assert data, f"the router closed the connection before answering: {received!r}"
            received += data
        head, _, rest = received.partition(b"\r\n\r\n")
        yield RawStream(stream, head, rest)


def _dechunk(raw: bytes) -> tuple[bytes, bool]:
    """The payload of a chunked body as far as it is complete, and whether it ended."""
    out, at = bytearray(), 0
    while True:
        end = raw.find(b"\r\n", at)
        if end < 0:
            return bytes(out), False
        size = int(raw[at:end].split(b";")[0], 16)
        if size == 0:
            return bytes(out), True
        if end + 2 + size > len(raw):
            return bytes(out), False
        out += raw[end + 2 : end + 2 + size]
        at = end + 2 + size + 2
