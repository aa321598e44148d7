"""Serving requests leaves no reference cycles behind, and what the router keeps of them
for later is not walked by every full collection.

Whatever a request leaves in a reference cycle outlives it until the cyclic collector finds it,
and what survives long enough to be promoted is only found by a full collection, which stops
the whole server for as long as it takes to walk every tracked object. So a request's objects
(the parsed request, its plan, the upstream response, ...) must be freed by reference
counting the moment it is done.

The burst goes over one keep-alive connection from a plain blocking socket in a worker thread,
so that everything the collector finds was made by the server side: the router and the fake
upstream (in this process too).
"""

from __future__ import annotations

import collections
import gc
import json
import socket
import types
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from urllib.parse import urlsplit

import pytest
import trio
from support_protocols import AN_MID, OA_SMALL, open_protocol_env

from engine.testing.fake_upstream import FakeUpstream

BURST = 40
# werkzeug's route matcher (under Quart) makes a self-referencing closure on every match: the
# function, five cells, a set and a tuple. Nothing else may be left behind.
_WERKZEUG_MATCH = "StateMachineMatcher.match.<locals>._match"
FOREIGN_PER_REQUEST = 8

REQUESTS = [  # (path, body): both client protocols, both upstream protocols, JSON and SSE
    ("/v1/chat/completions", {"model": "gpt-small",
                              "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/chat/completions", {"model": "claude-mid", "stream": True,
                              "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/messages", {"model": "claude-mid", "max_tokens": 64,
                      "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/messages", {"model": "gpt-small", "max_tokens": 64, "stream": True,
                      "messages": [{"role": "user", "content": "hi"}]}),
]


def _send_all(url: str, rounds: int, *, vary: bool = False) -> list[int]:
    """Every request of REQUESTS ``rounds`` times, in order, over one keep-alive connection;
    the statuses. ``vary``: each request asks a question of its own (the cache stores each)."""
    parts = urlsplit(url)
    statuses = []
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        reader = sock.makefile("rb")
        for _ in range(rounds):
            for path, body in REQUESTS:
                if vary:
                    question = f"How far is planet {len(statuses)} from its star?"
                    body = {**body, "messages": [{"role": "user", "content": question}]}
                raw = json.dumps(body).encode()
                sock.sendall(
                    f"POST {path} HTTP/1.1\r\nHost: router\r\nContent-Type: application/json\r\n"
                    f"Authorization: Bearer client-key\r\nContent-Length: {len(raw)}\r\n\r\n"
                    .encode() + raw
                )
                statuses.append(_read_response(reader))
    return statuses


def _read_response(reader: socket.SocketIO | object) -> int:
    status = int(reader.readline().split()[1])  # type: ignore[attr-defined]
    headers = {}
    while (line := reader.readline()) not in (b"\r\n", b""):  # type: ignore[attr-defined]
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        reader.read(int(headers["content-length"]))  # type: ignore[attr-defined]
        return status
    while size := int(reader.readline().strip(), 16):  # chunked
        reader.read(size + 2)  # type: ignore[attr-defined]
    reader.readline()
    return status


@contextmanager
def _cyclic_garbage() -> Iterator[list[object]]:
    """The objects only the cyclic collector could free, made within the block."""
    found: list[object] = []
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield found
        gc.collect()
        found.extend(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def _kinds(objects: list[object]) -> collections.Counter[str]:
    """How many of each type (module-qualified) ``objects`` holds."""
    return collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in objects)


@pytest.mark.parametrize("cache", [False, True], ids=["upstream", "cache-hits"])
async def test_a_burst_of_requests_leaves_no_reference_cycles(
    fake_upstream: FakeUpstream, cache: bool
) -> None:
    async with open_protocol_env(fake_upstream, cache=cache) as env:
        url = env.router.url
        assert set(await trio.to_thread.run_sync(_send_all, url, 2)) == {200}  # warm up
        with _cyclic_garbage() as garbage:
            statuses = await trio.to_thread.run_sync(_send_all, url, BURST // len(REQUESTS))
            await fake_upstream.wait_until_idle()
    assert statuses == [200] * BURST
    calls = len(fake_upstream.requests(OA_SMALL)) + len(fake_upstream.requests(AN_MID))
    assert calls == (len(REQUESTS) if cache else 2 * len(REQUESTS) + BURST)
    kinds = _kinds(garbage)
    ours = {kind: n for kind, n in kinds.items() if not kind.startswith("builtins.")}
    assert ours == {}, f"objects left in reference cycles: {ours}"
    functions = {o.__qualname__ for o in garbage if isinstance(o, types.FunctionType)}
    assert functions <= {_WERKZEUG_MATCH}, functions
    assert len(garbage) <= FOREIGN_PER_REQUEST * BURST, kinds.most_common(15)


def _ours_tracked() -> collections.Counter[str]:
    """The router's own objects the cyclic collector tracks, by type (not the fake upstream's:
    it keeps every request it saw)."""
    gc.collect()
    kinds = _kinds(gc.get_objects())
    return collections.Counter({kind: n for kind, n in kinds.items()
                                if kind.startswith(("engine.", "api."))
                                and not kind.startswith("engine.testing.")})


@pytest.mark.parametrize("cache", [False, True], ids=["upstream", "cache-stores"])
async def test_what_the_router_remembers_of_requests_is_not_tracked(
    fake_upstream: FakeUpstream, cache: bool
) -> None:
    """The router remembers each request's routing decision for feedback (up to 100,000),
    each answer it caches, and a bounded list for the dashboard: kept as objects the collector
    tracks, every full collection would walk them all, a pause growing with traffic. Past the
    bounded buffers, more traffic must not add tracked objects of the router's."""
    async with open_protocol_env(fake_upstream, cache=cache) as env:
        url = env.router.url
        await trio.to_thread.run_sync(_send_all, url, 30)  # past the dashboard's 100
        before = _ours_tracked()
        statuses = await trio.to_thread.run_sync(
            partial(_send_all, url, BURST // len(REQUESTS) * 2, vary=True))
        await fake_upstream.wait_until_idle()
        after = _ours_tracked()
    assert set(statuses) == {200}
    grown = {kind: n for kind, n in (after - before).items() if n >= len(statuses) // 4}
    assert grown == {}, f"tracked objects that grow with traffic: {grown}"
