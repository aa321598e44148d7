"""A TCP relay in front of the fake upstream that holds answers until the test lets them go,
for tests that look at the router while an upstream call is under way.

Point a model's ``base_url`` at :meth:`HoldRelay.base_url` instead of the fake's: requests
pass through at once, so the fake receives and records them as usual, but while the relay is
holding, each answer the fake sends back is kept from the router until the test releases it.
What the router sees is a provider that has not answered yet, for exactly as long as the test
wants; no sleep has to outlast the checks made meanwhile.

The router speaks HTTP/1.1 without pipelining, so on a connection the first bytes from the
fake after a request are the start of that request's answer; the rest of it follows unheld.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import trio
import trio.testing
from support_loopback import serve_loopback

from engine.testing.fake_upstream import FakeUpstream

__all__ = ["HoldRelay", "open_hold_relay", "wait_all_in"]


@dataclass
class HoldRelay:
    url: str = ""  # "http://127.0.0.1:PORT", set once listening
    holding: bool = False  # answers that start from now on are held
    cut_at: bytes | None = None  # see hold_after
    _waiting: deque[trio.Event] = field(default_factory=deque)  # held answers, oldest first
    _changed: trio.Event = field(default_factory=trio.Event)

    def base_url(self, backend: str, provider: str) -> str:
        """As :meth:`FakeUpstream.base_url`, through the relay."""
        return f"{self.url}/{backend}/v1" if provider == "openai" else f"{self.url}/{backend}"

    @property
    def held(self) -> int:
        """Answers the fake has sent that the router has not been given yet."""
        return len(self._waiting)

    def hold(self) -> None:
        """Hold every answer that starts from now on, until :meth:`release`."""
        self.holding = True

    def hold_after(self, marker: bytes) -> None:
        """Let answers through up to the end of the first ``marker`` the fake sends, then hold
        the rest of that answer until :meth:`release` (once: the marker is then forgotten).
        For a stream the router must be in the middle of: some of it out, the rest held."""
        self.cut_at = marker

    def release(self, count: int | None = None) -> None:
        """Let the ``count`` oldest held answers through; without ``count``, all of them, and
        stop holding."""
        if count is None:
            self.holding = False
            count = len(self._waiting)
        for _ in range(count):
            self._waiting.popleft().set()
        self._notify()

    async def wait_held(self, count: int) -> None:
        """Return once ``count`` answers are held at the same time. Wrap in
        ``trio.fail_after``: timeouts belong to the caller."""
        while len(self._waiting) < count:
            await self._changed.wait()

    async def _turn(self) -> None:
        """Wait until this answer is released (or its connection is given up)."""
        released = trio.Event()
        self._waiting.append(released)
        self._notify()
        try:
            await released.wait()
        finally:
            if released in self._waiting:  # cancelled while held: the router hung up
                self._waiting.remove(released)
                self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


@asynccontextmanager
async def open_hold_relay(fake: FakeUpstream) -> AsyncIterator[HoldRelay]:
    """Relay loopback connections to ``fake`` until the block ends (not holding at first)."""
    parts = urlsplit(fake.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    relay = HoldRelay()

    async def handle(client: trio.SocketStream) -> None:
        asked = False  # a request went up since the last answer started

        async def upstream(server: trio.SocketStream, done: trio.CancelScope) -> None:
            nonlocal asked
            try:
                while data := await client.receive_some(65536):
                    asked = True
                    await server.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            done.cancel()  # the router hung up: close both

        async with client:
            server = await trio.open_tcp_stream(host, port)
            async with server, trio.open_nursery() as nursery:
                nursery.start_soon(upstream, server, nursery.cancel_scope)
                try:
                    while data := await server.receive_some(65536):
                        if asked:
                            asked = False
                            if relay.holding:
                                await relay._turn()
                        if relay.cut_at is not None and (at := data.find(relay.cut_at)) >= 0:
                            at += len(relay.cut_at)
                            relay.cut_at = None
                            await client.send_all(data[:at])
                            data = data[at:]
                            await relay._turn()
                        await client.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                nursery.cancel_scope.cancel()  # the fake closed: close both

    async with serve_loopback(handle) as relay.url:
        yield relay


async def wait_all_in(router_url: str, requests: int) -> None:
    """Return once the router at ``router_url`` has ``requests`` chat requests in flight (its
    ``llm_router_in_flight_requests`` gauge) and every task of the test's trio loop, the
    in-process router's included, is blocked: each request has gone as far as it can while
    answers are held (joined a flight, or its own call waits here). Wrap in
    ``trio.fail_after``."""
    gauge = re.compile(rb"^llm_router_in_flight_requests (\S+)$", re.MULTILINE)
    async with httpx.AsyncClient() as http:
        while True:
            found = gauge.search((await http.get(router_url + "/metrics")).content)
            if found is not None and float(found.group(1)) >= requests:
                break
            await trio.sleep(0.005)
    await trio.testing.wait_all_tasks_blocked()
