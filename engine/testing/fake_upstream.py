"""A stand-in LLM provider that speaks the real OpenAI and Anthropic wire formats.

The router's integration tests point the router at this server instead of at real providers.
It is a raw ASGI app (no framework, so it can misbehave at will: stall, hang, cut a chunked
body mid-stream) served by hypercorn on ``127.0.0.1:0`` over real sockets, so the router's
HTTP client, timeouts and disconnect handling are exercised exactly as in production.
``tests/test_fake_upstream.py`` proves the formats are faithful by pointing the official
``openai`` and ``anthropic`` SDKs straight at it.

Routes (``{backend}`` is any label; one fake serves many "providers" at once)::

    POST /{backend}/v1/chat/completions   OpenAI Chat Completions (JSON or SSE)
    POST /{backend}/v1/messages           Anthropic Messages (JSON or SSE)
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
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, cast

import orjson
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

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
Protocol = Literal["openai", "anthropic"]

_ROUTE = re.compile(r"^/(?P<backend>[^/]+)/v1/(?P<endpoint>chat/completions|messages)$")
_CONTROL = re.compile(r"^/_fake/(?P<action>fail|recover)/(?P<backend>[^/]+)$")
_PROTOCOL_OF: dict[str, Protocol] = {"chat/completions": "openai", "messages": "anthropic"}
# Tool-call arguments are streamed in fixed-size fragments that cut through JSON tokens, as
# the real providers do, so that consumers must accumulate before parsing.
_ARGUMENT_FRAGMENT = 8
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToolCall:
    """A function/tool call the fake answers with."""

    name: str
    arguments: dict[str, Any]
    id: str | None = None  # default: a fresh "call_..." / "toolu_..." id


@dataclass(frozen=True)
class Usage:
    """Token counts to report instead of the word-count defaults."""

    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Behaviour:
    """How the fake answers one request. Every field is optional; ``Behaviour()`` is a 200.

    Faults apply in this order: ``latency``, then ``hang``, then ``status``, then the body.
    """

    status: int = 200  # non-200: the protocol's real error body, even if a stream was asked
    retry_after: float | None = None  # seconds, sent as the Retry-After header
    latency: float = 0.0  # seconds before the response headers
    hang: bool = False  # never respond (the client's disconnect still ends it)
    text: str | None = None  # reply text; None: "[backend] <last user text>", or none with a tool
    tool_call: ToolCall | None = None  # after `text` if text is given, else instead of it
    chunk_delay: float = 0.0  # seconds between SSE events
    # Streams: after this many content deltas (words, tool-argument fragments) drop the
    # connection mid chunked body. Non-streams: send half the JSON body, then drop.
    cut_after: int | None = None
    # Streams only: after this many content deltas send the protocol's error event and end.
    error_event_after: int | None = None
    # Streams only: after this many content deltas send nothing more, keeping the connection
    # open until the client leaves (or shutdown): a stream stalled mid-answer.
    stall_after: int | None = None
    # The message of the error the fake sends: the body of a non-200 ``status``, the error
    # event, or the body of ``error_with_200``. None: the provider's usual text.
    error_message: str | None = None
    # Non-streams only: answer 200 with the protocol's error object (an overload) as the body,
    # as Anthropic sometimes does. For a stream, ``error_event_after=0`` is the equivalent.
    error_with_200: bool = False
    # Streams only: deal the reply text out in deltas of this many characters, cutting through
    # words as real tokenizers do, instead of one delta per word.
    text_delta_chars: int | None = None
    # Default: input = whitespace-separated words of all message texts and the system prompt;
    # output = words of the reply text (a tool call adds none).
    usage: Usage | None = None
    stop_reason: str | None = None  # verbatim finish_reason / stop_reason, e.g. "length"


@dataclass
class Recorded:
    """One request as the fake received it."""

    backend: str
    method: str
    path: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: Any  # the parsed JSON body; None if absent or not JSON
    behaviour: Behaviour | None = None  # None for unknown routes and invalid bodies
    status: int | None = None  # status line sent, once sent
    # The fake finished its behaviour, errors and deliberate cuts included. Set just before
    # the last write, so it is already true when the client sees the end of the response.
    completed: bool = False
    cancelled: bool = False  # the client went away before the fake finished (never both)

    @property
    def stream(self) -> bool:
        return isinstance(self.body, dict) and self.body.get("stream") is True


@dataclass
class _Reply:
    """A protocol-neutral answer, rendered by the OpenAI or Anthropic encoder."""

    id: str
    model: str
    text: str | None
    tool_call: ToolCall | None
    tool_call_id: str
    stop_reason: str
    usage: Usage
    choices: int = 1  # OpenAI's n
    top_logprobs: int | None = None  # None: no logprobs asked; else alternatives per token


@dataclass
class _Event:
    """One SSE event; ``content`` marks the deltas that cut_after / error_event_after count."""

    data: bytes
    content: bool = False


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
            await _send_json(record, send, 404, _error_body("openai", 404, message))
            return
        protocol = _PROTOCOL_OF[route["endpoint"]]
        problem = _validate(protocol, record.body)
        if problem is not None:
            await _send_json(record, send, 400, _error_body(protocol, 400, problem))
            return

        behaviour = record.behaviour = self._next_behaviour(record.backend)
        n = next(self._ids)  # numbers this request's ids: request-id, message id, tool id
        headers = _request_id_header(protocol, n)
        if behaviour.retry_after is not None:
            headers.append((b"retry-after", f"{behaviour.retry_after:g}".encode()))
        if behaviour.latency:
            await trio.sleep(behaviour.latency)
        if behaviour.hang:
            await self._closing.wait()  # only the client leaving (or shutdown) ends this
            return  # hypercorn answers a bare 500 to whoever is still connected
        if behaviour.status != 200:
            body = _error_body(protocol, behaviour.status, behaviour.error_message)
            await _send_json(record, send, behaviour.status, body, headers)
            return
        if behaviour.error_with_200 and not record.stream:
            overloaded = 529 if protocol == "anthropic" else 503
            body = _error_body(protocol, overloaded, behaviour.error_message)
            await _send_json(record, send, 200, body, headers)
            return

        reply = _plan_reply(protocol, n, record.backend, record.body, behaviour)
        if not record.stream:
            body = _openai_json(reply) if protocol == "openai" else _anthropic_json(reply)
            await _send_json(record, send, 200, body, headers, cut=behaviour.cut_after is not None)
            return
        if protocol == "openai":
            stream_options = record.body.get("stream_options") or {}
            events = _openai_events(reply, include_usage=bool(stream_options.get("include_usage")),
                                    delta_chars=behaviour.text_delta_chars)
        else:
            events = _anthropic_events(reply, delta_chars=behaviour.text_delta_chars)
        await _send_stream(record, send, protocol, events, behaviour, headers,
                           closing=self._closing)


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
) -> None:
    """Send a JSON response; with ``cut``, declare its full length but send only half."""
    payload = orjson.dumps(body)
    all_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
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
    events: tuple[list[_Event], list[_Event]],
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
                    send, _stream_error_event(protocol, behaviour.error_message), behaviour
                )
                break
            if behaviour.stall_after is not None and sent_content >= behaviour.stall_after:
                await closing.wait()  # only the client leaving (or shutdown) ends this
                return
        await _send_chunk(send, event.data, behaviour, first=index == 0)
        sent_content += event.content
    record.completed = True  # before the last write: the client may act on it at once
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _send_chunk(
    send: Send, data: bytes, behaviour: Behaviour, *, first: bool = False
) -> None:
    if behaviour.chunk_delay and not first:
        await trio.sleep(behaviour.chunk_delay)
    await send({"type": "http.response.body", "body": data, "more_body": True})


# -- request reading --------------------------------------------------------------------------


def _validate(protocol: Protocol, body: Any) -> str | None:
    """The provider's 400 message for a malformed body, else None.

    Only what both providers reject outright, so a router that forwards a broken body fails
    here as it would in production.
    """
    if not isinstance(body, dict):
        return "Request body must be a JSON object."
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return "messages: Field required (a non-empty list)"
    if protocol == "anthropic" and not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    if protocol == "anthropic":
        extra = sorted(set(body) - _ANTHROPIC_FIELDS)
        if extra:
            return f"{extra[0]}: Extra inputs are not permitted"
    return None


_ANTHROPIC_FIELDS = frozenset({
    "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream",
    "temperature", "top_p", "top_k", "tools", "tool_choice", "thinking", "service_tier",
    "container", "mcp_servers", "context_management",
})


def _texts(content: Any) -> list[str]:
    """The text inside a message content: a string, or a list of text/tool_result parts."""
    if isinstance(content, str):
        return [content]
    texts: list[str] = []
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif part.get("type") == "tool_result":
                texts.extend(_texts(part.get("content")))
    return texts


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body["messages"]):
        if isinstance(message, dict) and message.get("role") == "user":
            return " ".join(_texts(message.get("content")))
    return ""


def _count_words(protocol: Protocol, body: dict[str, Any]) -> int:
    """Default input tokens: whitespace-separated words of every message text and the system.

    OpenAI carries the system prompt as a message; Anthropic as the top-level ``system``.
    """
    texts = _texts(body.get("system")) if protocol == "anthropic" else []
    for message in body["messages"]:
        if isinstance(message, dict):
            texts.extend(_texts(message.get("content")))
    return sum(len(text.split()) for text in texts)


def _plan_reply(
    protocol: Protocol, n: int, backend: str, body: dict[str, Any], behaviour: Behaviour
) -> _Reply:
    """Decide the reply's content, ids, stop reason and usage for ``behaviour``."""
    text = behaviour.text
    if text is None and behaviour.tool_call is None:
        text = f"[{backend}] " + _last_user_text(body)
    tool = behaviour.tool_call
    if protocol == "openai":
        reply_id, tool_id, stop = f"chatcmpl-fake{n}", f"call_fake{n}", "stop"
        tool_stop = "tool_calls"
    else:
        reply_id, tool_id, stop = f"msg_fake{n}", f"toolu_fake{n}", "end_turn"
        tool_stop = "tool_use"
    if tool is not None:
        tool_id, stop = tool.id or tool_id, tool_stop
    choices = 1
    top_logprobs = None
    if protocol == "openai":
        choices = body.get("n") or 1
        if body.get("logprobs"):
            top_logprobs = body.get("top_logprobs") or 0
    texts = [_choice_text(text, i) for i in range(choices)]
    usage = behaviour.usage or Usage(
        input_tokens=_count_words(protocol, body),
        output_tokens=sum(len((t or "").split()) for t in texts),
    )
    return _Reply(
        id=reply_id,
        model=str(body["model"]),
        text=text,
        tool_call=tool,
        tool_call_id=tool_id,
        stop_reason=behaviour.stop_reason or stop,
        usage=usage,
        choices=choices,
        top_logprobs=top_logprobs,
    )


def _choice_text(text: str | None, index: int) -> str | None:
    """The text of choice ``index``: the reply text, marked for every choice but the first."""
    if text is None or index == 0:
        return text
    return f"{text} #{index}"


def _token_logprobs(word: str, position: int, alternatives: int) -> dict[str, Any]:
    """An OpenAI ``logprobs.content`` entry for ``word``, with ``alternatives`` top entries
    (the token itself first, then made-up ones, less likely)."""
    logprob = -0.25 * (position % 4) - 0.01

    def entry(token: str, value: float) -> dict[str, Any]:
        return {"token": token, "logprob": value, "bytes": list(token.encode())}

    top = [entry(word, logprob)] + [
        entry(f"alt{j}", logprob - j) for j in range(1, alternatives)
    ]
    return {**entry(word, logprob), "top_logprobs": top[:alternatives]}


# -- response encoding ------------------------------------------------------------------------


def _words(text: str, size: int | None = None) -> list[str]:
    """Word-sized pieces (or pieces of ``size`` characters) that concatenate back to exactly
    ``text``."""
    if size is not None:
        return [text[i : i + size] for i in range(0, len(text), size)]
    return re.findall(r"\s*\S+\s*", text) or ([text] if text else [])


def _fragments(text: str) -> list[str]:
    return [text[i : i + _ARGUMENT_FRAGMENT] for i in range(0, len(text), _ARGUMENT_FRAGMENT)]


def _arguments_json(tool: ToolCall) -> str:
    return orjson.dumps(tool.arguments).decode()


def _request_id_header(protocol: Protocol, n: int) -> list[tuple[bytes, bytes]]:
    if protocol == "openai":
        return [(b"x-request-id", f"req_fake{n}".encode())]
    return [(b"request-id", f"req_fake{n}".encode())]


_OPENAI_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached. Please try again later."),
}
_ANTHROPIC_ERRORS = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    404: ("not_found_error", "Not found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    529: ("overloaded_error", "Overloaded"),
}


def _error_body(protocol: Protocol, status: int, message: str | None) -> dict[str, Any]:
    """The provider's own error object for ``status`` (5xx: server_error / api_error)."""
    if protocol == "openai":
        kind, code, default = _OPENAI_ERRORS.get(
            status, ("server_error", None, "The server had an error while processing your request.")
        )
        error = {"message": message or default, "type": kind, "param": None, "code": code}
        return {"error": error}
    kind, default = _ANTHROPIC_ERRORS.get(status, ("api_error", "Internal server error"))
    return {"type": "error", "error": {"type": kind, "message": message or default}}


def _stream_error_event(protocol: Protocol, message: str | None) -> bytes:
    """The mid-stream error each provider sends once a 200 stream has begun."""
    if protocol == "openai":
        return _sse(_error_body("openai", 500, message))
    return _sse(_error_body("anthropic", 529, message), event="error")


def _sse(data: dict[str, Any] | str, event: str | None = None) -> bytes:
    payload = data.encode() if isinstance(data, str) else orjson.dumps(data)
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + payload + b"\n\n"


def _openai_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _openai_logprobs(reply: _Reply, text: str | None) -> dict[str, Any] | None:
    if reply.top_logprobs is None:
        return None
    content = [
        _token_logprobs(word, i, reply.top_logprobs) for i, word in enumerate(_words(text or ""))
    ]
    return {"content": content, "refusal": None}


def _openai_json(reply: _Reply) -> dict[str, Any]:
    return {
        "id": reply.id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply.model,
        "choices": [_openai_choice(reply, i) for i in range(reply.choices)],
        "usage": _openai_usage(reply.usage),
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }


def _openai_choice(reply: _Reply, index: int) -> dict[str, Any]:
    text = _choice_text(reply.text, index)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text,
        "refusal": None,
        "annotations": [],
    }
    if reply.tool_call is not None:
        message["tool_calls"] = [
            {
                "id": reply.tool_call_id,
                "type": "function",
                "function": {
                    "name": reply.tool_call.name,
                    "arguments": _arguments_json(reply.tool_call),
                },
            }
        ]
    return {
        "index": index,
        "message": message,
        "logprobs": _openai_logprobs(reply, text),
        "finish_reason": reply.stop_reason,
    }


def _openai_events(
    reply: _Reply, *, include_usage: bool, delta_chars: int | None = None
) -> tuple[list[_Event], list[_Event]]:
    """(preamble, rest) of an OpenAI chat.completion.chunk stream, ending in ``[DONE]``."""
    created = int(time.time())

    def chunk(
        delta: dict[str, Any], finish_reason: str | None = None, logprobs: Any = None
    ) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        data: dict[str, Any] = {
            "id": reply.id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": reply.model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
            "choices": [choice],
        }
        if include_usage:
            data["usage"] = None  # the real API marks every chunk but the last this way
        return _sse(data)

    role = {"role": "assistant", "content": "" if reply.text is not None else None, "refusal": None}
    preamble = [_Event(chunk(role))]
    rest = [
        _Event(chunk({"content": piece}, logprobs=_chunk_logprobs(reply, piece, i)), content=True)
        for i, piece in enumerate(_words(reply.text or "", delta_chars))
    ]
    if reply.tool_call is not None:
        head = {
            "index": 0,
            "id": reply.tool_call_id,
            "type": "function",
            "function": {"name": reply.tool_call.name, "arguments": ""},
        }
        rest.append(_Event(chunk({"tool_calls": [head]})))
        for piece in _fragments(_arguments_json(reply.tool_call)):
            delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
            rest.append(_Event(chunk(delta), content=True))
    rest.append(_Event(chunk({}, reply.stop_reason)))
    if include_usage:
        rest.append(
            _Event(
                _sse(
                    {
                        "id": reply.id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": reply.model,
                        "service_tier": "default",
                        "system_fingerprint": "fp_fake",
                        "choices": [],
                        "usage": _openai_usage(reply.usage),
                    }
                )
            )
        )
    rest.append(_Event(_sse("[DONE]")))
    return preamble, rest


def _chunk_logprobs(reply: _Reply, word: str, position: int) -> dict[str, Any] | None:
    if reply.top_logprobs is None:
        return None
    return {"content": [_token_logprobs(word, position, reply.top_logprobs)], "refusal": None}


def _anthropic_usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": usage.output_tokens,
        "service_tier": "standard",
    }


def _anthropic_blocks(reply: _Reply) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if reply.text is not None:
        blocks.append({"type": "text", "text": reply.text})
    if reply.tool_call is not None:
        blocks.append(
            {
                "type": "tool_use",
                "id": reply.tool_call_id,
                "name": reply.tool_call.name,
                "input": reply.tool_call.arguments,
            }
        )
    return blocks


def _anthropic_json(reply: _Reply) -> dict[str, Any]:
    return {
        "id": reply.id,
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": _anthropic_blocks(reply),
        "stop_reason": reply.stop_reason,
        "stop_sequence": None,
        "usage": _anthropic_usage(reply.usage),
    }


def _anthropic_events(
    reply: _Reply, *, delta_chars: int | None = None
) -> tuple[list[_Event], list[_Event]]:
    """(preamble, rest) of an Anthropic Messages stream, in the order the real API sends."""

    def event(name: str, data: dict[str, Any], *, content: bool = False) -> _Event:
        return _Event(_sse({"type": name, **data}, event=name), content=content)

    start_usage = {**_anthropic_usage(reply.usage), "output_tokens": 1}  # as the real API does
    message = {**_anthropic_json(reply), "content": [], "stop_reason": None, "usage": start_usage}
    events = [event("message_start", {"message": message})]
    preamble_length = 0
    for index, block in enumerate(_anthropic_blocks(reply)):
        opening: dict[str, Any]
        if block["type"] == "text":
            opening = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": piece}
                      for piece in _words(block["text"], delta_chars)]
        else:
            opening = {**block, "input": {}}
            pieces = _fragments(orjson.dumps(block["input"]).decode())
            deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in pieces]
        events.append(event("content_block_start", {"index": index, "content_block": opening}))
        if index == 0:
            events.append(event("ping", {}))
            preamble_length = len(events)
        events.extend(
            event("content_block_delta", {"index": index, "delta": delta}, content=True)
            for delta in deltas
        )
        events.append(event("content_block_stop", {"index": index}))
    events.append(
        event(
            "message_delta",
            {
                "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": reply.usage.output_tokens},
            },
        )
    )
    events.append(event("message_stop", {}))
    return events[:preamble_length], events[preamble_length:]
