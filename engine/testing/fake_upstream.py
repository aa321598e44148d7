"""A stand-in LLM provider that speaks the real OpenAI and Anthropic wire formats.

The router's integration tests point the router at this server instead of at real providers.
It is a raw ASGI app (no framework, so it can misbehave at will: stall, hang, cut a chunked
body mid-stream) served by hypercorn on ``127.0.0.1:0`` over real sockets, so the router's
HTTP client, timeouts and disconnect handling are exercised exactly as in production.
``tests/wire/test_fake_upstream.py`` proves the formats are faithful by pointing the official
``openai`` and ``anthropic`` SDKs straight at it.

Routes (``{backend}`` is any label; one fake serves many "providers" at once)::

    POST /{backend}/v1/chat/completions   OpenAI Chat Completions (JSON or SSE)
    POST /{backend}/v1/messages           Anthropic Messages (JSON or SSE)
    POST /{backend}/v1/embeddings         OpenAI embeddings, deterministic (``fake_embeddings``)
    POST /_fake/fail/{backend}            from now on {backend} answers 503 (JSON: what was set)
    POST /_fake/recover/{backend}         {backend} answers normally again
    anything else                         404, OpenAI-style error JSON

Each request takes the next :class:`Behaviour` scripted for its backend (``script``), else the
backend's default (``set_default``), else the fake's own default (``Behaviour()`` unless
given): a 200 whose reply text is ``f"[{backend}] " + <last user message text>`` so a test
can see who answered and that the content passed through. Every request is recorded
(:class:`Recorded`) on arrival, before any fault is applied. The two ``/_fake/`` routes are
the same controls over HTTP, for ``llm-router fake-upstream`` (a demo's failover, from the
command line).

As the real providers do, the OpenAI side answers ``n`` choices (choice ``i > 0`` has `` #i``
appended to its text; usage counts every choice) and, with ``logprobs: true``, token log
probabilities (``top_logprobs`` alternatives each); the Anthropic side refuses top-level
fields the Messages API does not have (``frequency_penalty``, ``n``, ``logprobs``, ...) with
its own 400. Streams always carry one choice.

Usage::

    async with open_fake_upstream() as fake:
        fake.script("b1", Behaviour(status=429, retry_after=1), Behaviour(text="ok"))
        client = openai.AsyncOpenAI(base_url=fake.base_url("b1", "openai"), api_key="k")
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import re
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, cast

import orjson
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from .fake_embeddings import embeddings_body, validate_embeddings
from .fake_script import Behaviour, Recorded
from .fake_wire import (
    BodyEncoder,
    Event,
    Protocol,
    Reply,
    ToolCall,
    Usage,
    anthropic_events,
    anthropic_json,
    choice_text,
    count_words,
    error_body,
    last_user_text,
    openai_events,
    openai_json,
    request_id_header,
    stream_error_event,
    validate_request,
)

__all__ = [
    "Behaviour",
    "FakeUpstream",
    "Recorded",
    "ToolCall",
    "Usage",
    "open_fake_upstream",
    "refused_url",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_ROUTE = re.compile(
    r"^/(?P<backend>[^/]+)/v1/(?P<endpoint>chat/completions|messages|embeddings)$")
_CONTROL = re.compile(r"^/_fake/(?P<action>fail|recover)/(?P<backend>[^/]+)$")
_PROTOCOL_OF: dict[str, Protocol] = {"chat/completions": "openai", "messages": "anthropic"}
_log = logging.getLogger(__name__)


class FakeUpstream:
    """State and ASGI app of the fake provider. Start it with :func:`open_fake_upstream`."""

    def __init__(self, *, default: Behaviour | None = None) -> None:
        self.url = ""  # "http://127.0.0.1:PORT", set once serving
        self.active = 0  # requests being served right now
        self.default = default or Behaviour()  # for backends without a default of their own
        self._scripts: dict[str, deque[Behaviour]] = {}
        self._defaults: dict[str, Behaviour] = {}
        self._requests: dict[str, list[Recorded]] = {}
        self._ids = itertools.count(1)
        self._active_changed = trio.Event()
        self._closing = trio.Event()

    # -- control surface for tests ------------------------------------------------------------

    def base_url(self, backend: str, provider: str) -> str:
        """The base URL an SDK (or the router's config) uses to reach ``backend``.

        OpenAI SDKs append ``/chat/completions`` to a base ending in ``/v1``; Anthropic SDKs
        append ``/v1/messages`` to a bare host, hence the asymmetry.
        """
        if provider == "openai":
            return f"{self.url}/{backend}/v1"
        if provider == "anthropic":
            return f"{self.url}/{backend}"
        raise ValueError(f"unknown provider {provider!r}; expected 'openai' or 'anthropic'")

    def script(self, backend: str, *behaviours: Behaviour) -> None:
        """Queue behaviours for ``backend``: one per request, then back to the default.

        Requests the fake rejects by itself (unknown route: 404, malformed body: 400) do not
        consume a behaviour.
        """
        self._scripts.setdefault(backend, deque()).extend(behaviours)

    def set_default(self, backend: str, behaviour: Behaviour) -> None:
        """Answer ``backend``'s unscripted requests with ``behaviour``."""
        self._defaults[backend] = behaviour

    def clear_default(self, backend: str) -> None:
        """Answer ``backend``'s unscripted requests with the fake's own default again."""
        self._defaults.pop(backend, None)

    def fail(self, backend: str) -> None:
        """Make ``backend`` answer every unscripted request with a 503 (after the default's
        latency), until :meth:`clear_default`."""
        self.set_default(backend, dataclasses.replace(
            self.default, status=503,
            error_message=f"backend {backend!r} is failing on purpose "
                          f"(POST /_fake/recover/{backend} to recover)",
        ))

    def requests(self, backend: str) -> list[Recorded]:
        """What ``backend`` received, oldest first (a copy; the records themselves are live)."""
        return list(self._requests.get(backend, []))

    def reset(self) -> None:
        """Forget scripts, defaults and recorded requests (in-flight requests run on)."""
        self._scripts.clear()
        self._defaults.clear()
        self._requests.clear()

    async def wait_until_idle(self) -> None:
        """Return once no request is being served.

        A client's disconnect reaches the server asynchronously, so tests wait for ``active``
        to drop rather than sleep. Wrap in ``trio.fail_after``: timeouts belong to the caller.
        """
        while self.active:
            await self._active_changed.wait()

    # -- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _run_lifespan(receive, send)
        elif scope["type"] == "http":
            await self._serve_http(scope, receive, send)

    async def _serve_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_body, disconnected = await _read_body(receive)
        record = _record(scope, raw_body)
        self._requests.setdefault(record.backend, []).append(record)
        if disconnected:
            record.cancelled = True
            return
        self._set_active(self.active + 1)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch_disconnect, receive, record, nursery.cancel_scope)
                await self._respond(record, send)
                # Set before returning, which is what makes hypercorn cut a stream; a hang
                # released by shutdown never completed.
                record.completed = not self._closing.is_set()
                nursery.cancel_scope.cancel()
        finally:
            self._set_active(self.active - 1)

    def _set_active(self, value: int) -> None:
        self.active = value
        self._active_changed.set()
        self._active_changed = trio.Event()

    def _next_behaviour(self, backend: str) -> Behaviour:
        queue = self._scripts.get(backend)
        if queue:
            return queue.popleft()
        return self._defaults.get(backend, self.default)

    async def _respond(self, record: Recorded, send: Send) -> None:
        control = _CONTROL.match(record.path)
        if record.method == "POST" and control is not None:
            backend = control["backend"]
            if control["action"] == "fail":
                self.fail(backend)
            else:
                self.clear_default(backend)
            failing = control["action"] == "fail"
            await _send_json(record, send, 200, {"backend": backend, "failing": failing})
            return
        route = _ROUTE.match(record.path)
        if record.method != "POST" or route is None:
            message = f"Invalid URL ({record.method} {record.path})"
            await _send_json(record, send, 404, error_body("openai", 404, message))
            return
        if route["endpoint"] == "embeddings":
            await self._embeddings(record, send)
            return
        protocol = _PROTOCOL_OF[route["endpoint"]]
        problem = validate_request(protocol, record.body)
        if problem is not None:
            await _send_json(record, send, 400, error_body(protocol, 400, problem))
            return

        behaviour = record.behaviour = self._next_behaviour(record.backend)
        n = next(self._ids)  # numbers this request's ids: request-id, message id, tool id
        headers = request_id_header(protocol, n)
        if behaviour.retry_after is not None:
            headers.append((b"retry-after", f"{behaviour.retry_after:g}".encode()))
        if behaviour.latency:
            await trio.sleep(behaviour.latency)
        if behaviour.hang:
            await self._closing.wait()  # only the client leaving (or shutdown) ends this
            return  # hypercorn answers a bare 500 to whoever is still connected
        if behaviour.status != 200:
            body = error_body(protocol, behaviour.status, behaviour.error_message)
            await _send_json(record, send, behaviour.status, body, headers)
            return
        if behaviour.error_with_200 and not record.stream:
            overloaded = 529 if protocol == "anthropic" else 503
            body = error_body(protocol, overloaded, behaviour.error_message)
            await _send_json(record, send, 200, body, headers)
            return

        reply = _plan_reply(protocol, n, record.backend, record.body, behaviour)
        if not record.stream:
            body = openai_json(reply) if protocol == "openai" else anthropic_json(reply)
            await _send_json(record, send, 200, body, headers, cut=behaviour.cut_after is not None,
                             encoding=behaviour.content_encoding, padding=behaviour.padding)
            return
        if protocol == "openai":
            stream_options = record.body.get("stream_options") or {}
            events = openai_events(reply, include_usage=bool(stream_options.get("include_usage")),
                                    delta_chars=behaviour.text_delta_chars)
        else:
            events = anthropic_events(reply, delta_chars=behaviour.text_delta_chars)
        await _send_stream(record, send, protocol, events, behaviour, headers,
                           closing=self._closing)


    async def _embeddings(self, record: Recorded, send: Send) -> None:
        """``/v1/embeddings``: the scripted faults (latency, hang, status), then the vectors."""
        problem = validate_embeddings(record.body)
        if problem is not None:
            await _send_json(record, send, 400, error_body("openai", 400, problem))
            return
        behaviour = record.behaviour = self._next_behaviour(record.backend)
        if behaviour.latency:
            await trio.sleep(behaviour.latency)
        if behaviour.hang:
            await self._closing.wait()
            return
        if behaviour.status != 200:
            body = error_body("openai", behaviour.status, behaviour.error_message)
            await _send_json(record, send, behaviour.status, body)
            return
        await _send_json(record, send, 200, embeddings_body(record.body))


@asynccontextmanager
async def open_fake_upstream(
    *, host: str = "127.0.0.1", port: int = 0, default: Behaviour | None = None,
) -> AsyncIterator[FakeUpstream]:
    """Serve a :class:`FakeUpstream` for the duration of the block, by default on a free
    loopback port; ``default`` is how backends without a default of their own answer.

    The server runs in a nursery owned by this context; leaving the block shuts it down
    gracefully (idle keep-alive connections closed, hanging requests released).

    Raises:
        OSError: ``host:port`` cannot be listened on.
    """
    fake = FakeUpstream(default=default)
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    # Routed through logging (not hypercorn's own stderr handler) so pytest captures it and
    # shows it only for a failing test.
    config.errorlog = _log
    config.include_server_header = False
    config.graceful_timeout = 1.0  # a backstop: hangs are released by `_closing` first
    async with trio.open_nursery() as nursery:
        # cast: the app types its messages as plain mappings, not hypercorn's TypedDicts.
        app = cast(Any, fake)
        binds: list[str] = await nursery.start(
            partial(serve, app, config, shutdown_trigger=fake._closing.wait)
        )
        fake.url = binds[0]
        try:
            yield fake
        finally:
            fake._closing.set()


def refused_url() -> str:
    """A loopback URL on which nothing listens, for connection-refused tests.

    The port was free a moment ago; nothing in the test run binds fixed ports, so it stays free.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- transport --------------------------------------------------------------------------------


async def _run_lifespan(receive: Receive, send: Send) -> None:
    """Acknowledge startup and shutdown; hypercorn logs a warning if lifespan is unsupported."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The whole request body, and whether the client left before sending all of it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), True
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), False


def _record(scope: Scope, raw_body: bytes) -> Recorded:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    try:
        body = orjson.loads(raw_body) if raw_body else None
    except orjson.JSONDecodeError:
        body = None
    path: str = scope["path"]
    return Recorded(
        backend=path.strip("/").split("/", 1)[0],
        method=scope["method"],
        path=path,
        headers=headers,
        body=body,
    )


async def _watch_disconnect(
    receive: Receive, record: Recorded, response_scope: trio.CancelScope
) -> None:
    """Cancel the response when the client goes away, as a real server's handler would be."""
    while (await receive())["type"] != "http.disconnect":
        pass
    if not record.completed:
        record.cancelled = True
        response_scope.cancel()


async def _start_response(
    record: Recorded, send: Send, status: int, headers: list[tuple[bytes, bytes]]
) -> None:
    record.status = status
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def _send_json(
    record: Recorded,
    send: Send,
    status: int,
    body: dict[str, Any],
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    cut: bool = False,
    encoding: str | None = None,
    padding: int = 0,
) -> None:
    """Send a JSON response (``padding`` spaces after it); with ``cut``, declare its full
    length but send only half."""
    encoder = BodyEncoder(encoding)
    payload = encoder.piece(orjson.dumps(body) + b" " * padding) + encoder.end()
    all_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *encoder.headers,
        *(headers or []),
    ]
    await _start_response(record, send, status, all_headers)
    if cut:
        await send(
            {"type": "http.response.body", "body": payload[: len(payload) // 2], "more_body": True}
        )
        return  # returning without more_body=False makes hypercorn drop the connection
    record.completed = True  # before the last write: the client may act on it at once
    await send({"type": "http.response.body", "body": payload, "more_body": False})


async def _send_stream(
    record: Recorded,
    send: Send,
    protocol: Protocol,
    events: tuple[list[Event], list[Event]],
    behaviour: Behaviour,
    headers: list[tuple[bytes, bytes]],
    *,
    closing: trio.Event,
) -> None:
    """Send SSE events one ASGI message each, applying chunk_delay and the stream faults.

    ``events`` is (preamble, rest). The faults trigger before any event of ``rest`` once
    their count of content deltas has been sent, so a count beyond the reply's deltas still
    fires, just before the finishing events.
    """
    preamble, rest = events
    sse_headers = [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-cache"),
        *headers,
        *(encoder := BodyEncoder(behaviour.content_encoding)).headers,
    ]
    await _start_response(record, send, 200, sse_headers)
    sent_content = 0
    for index, event in enumerate([*preamble, *rest]):
        if index >= len(preamble):
            if behaviour.cut_after is not None and sent_content >= behaviour.cut_after:
                return  # no more_body=False: hypercorn closes mid chunked body
            error_after = behaviour.error_event_after
            if error_after is not None and sent_content >= error_after:
                await _send_chunk(
                    send, encoder.piece(stream_error_event(protocol, behaviour.error_message)),
                    behaviour)
                break
            if behaviour.stall_after is not None and sent_content >= behaviour.stall_after:
                await closing.wait()  # only the client leaving (or shutdown) ends this
                return
            endless = behaviour.endless_event_after
            if endless is not None and sent_content >= endless:
                filler = b"x" * 65536
                await _send_chunk(send, encoder.piece(b"data: " + filler), behaviour)
                for _ in range(1023):  # 64 MiB in all
                    await _send_chunk(send, encoder.piece(filler), behaviour)
                await closing.wait()
                return
        await _send_chunk(send, encoder.piece(event.data), behaviour, first=index == 0)
        record.sent_bytes += len(event.data)
        sent_content += event.content
    record.completed = True  # before the last write: the client may act on it at once
    await send({"type": "http.response.body", "body": encoder.end(), "more_body": False})


async def _send_chunk(
    send: Send, data: bytes, behaviour: Behaviour, *, first: bool = False
) -> None:
    if behaviour.chunk_delay and not first:
        await trio.sleep(behaviour.chunk_delay)
    await send({"type": "http.response.body", "body": data, "more_body": True})


# -- replies -----------------------------------------------------------------------------------


def _plan_reply(
    protocol: Protocol, n: int, backend: str, body: dict[str, Any], behaviour: Behaviour
) -> Reply:
    """Decide the reply's content, ids, stop reason and usage for ``behaviour``."""
    text = behaviour.text
    tools = (*((behaviour.tool_call,) if behaviour.tool_call else ()), *behaviour.tool_calls)
    if text is None and not tools:
        text = f"[{backend}] " + last_user_text(body)
    if protocol == "openai":
        reply_id, tool_id, stop = f"chatcmpl-fake{n}", f"call_fake{n}", "stop"
        tool_stop = "tool_calls"
    else:
        reply_id, tool_id, stop = f"msg_fake{n}", f"toolu_fake{n}", "end_turn"
        tool_stop = "tool_use"
    # the first call is numbered by the request alone, as before; the others also by position
    tool_ids = tuple(tool.id or (tool_id if i == 0 else f"{tool_id}_{i}")
                     for i, tool in enumerate(tools))
    if tools:
        stop = tool_stop
    choices = 1
    top_logprobs = None
    if protocol == "openai":
        choices = body.get("n") or 1
        if body.get("logprobs"):
            top_logprobs = body.get("top_logprobs") or 0
    texts = [choice_text(text, i) for i in range(choices)]
    usage = behaviour.usage or Usage(
        input_tokens=count_words(protocol, body),
        output_tokens=sum(len((t or "").split()) for t in texts),
    )
    return Reply(
        id=reply_id,
        model=str(body["model"]),
        text=text,
        tool_calls=tools,
        tool_call_ids=tool_ids,
        stop_sequence=behaviour.stop_sequence,
        thinking=behaviour.thinking,
        redacted_thinking=behaviour.redacted_thinking,
        stop_reason=behaviour.stop_reason or stop,
        usage=usage,
        choices=choices,
        top_logprobs=top_logprobs,
        citations=behaviour.citations,
    )
