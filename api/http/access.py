"""One access line per HTTP request, and a chat request's part of ``GET /metrics``.

Every request gets an :class:`Exchange` when it comes in (``before_request``); a chat
handler fills in what it learns (protocol, key, model asked, who served it, tokens, cost); the
response's status is noted as it leaves (``after_request``); and the exchange is *finished*
once: when the request's context ends for a plain answer or an error, or when the body of a
stream has been sent. Finishing counts a chat request in the gateway (requests by label,
latency histograms, the in-flight gauge) and writes the line to the ``llm_router.access``
logger: text by default, JSON fields with ``--log-format json`` (``api.cli.logs``).

A line names the client key by its id, never the key; the prompt appears only with
``server.log_prompts`` (``--log-prompts``), cut short. The app's log filter is not on this
logger (it would take a key id for a credential): the free text of a line (path, prompt,
error message) is scrubbed here with the same redactor instead; the rest are ids, names from
the config, numbers and codes. Requests refused for a client key's budget or rate limit (or
because every backend is rate-limited) also get a WARNING line here.
A request whose handler was cancelled (the client went away) is logged with status 499.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from quart import Response, g, request

from engine.core import Config, KeyRecord, Redactor, cost_usd
from engine.errors import RouterError
from engine.messages import ChatRequest, Finish, Usage
from engine.runtime import Gateway, RequestSpan, Served, request_span

__all__ = ["Exchange", "Observer"]

_NAME = "llm_router.access"
access_log = logging.getLogger(_NAME)
_LINE = "%s %s %d %s"

PROMPT_CHARS = 500
# The router's own fixed paths: nothing in them to scrub (scrubbing costs ~10 µs a line).
_FIXED_PATHS = frozenset({
    "/v1/chat/completions", "/v1/messages", "/v1/models", "/v1/workflows", "/v1/feedback",
    "/v1/routing", "/v1/backends", "/v1/admin/keys", "/v1/workflows/runs", "/health",
    "/metrics", "/stats"})
CLIENT_CLOSED = 499  # nginx's status for a request its client abandoned


@dataclass(slots=True, eq=False)
class Exchange:
    """One HTTP request as it goes, for its access line (and, for a chat, its metrics)."""

    started: float = field(default_factory=time.perf_counter)
    status: int | None = None
    first_byte: float | None = None  # seconds after ``started``
    #: Set by a chat request: its protocol's name, which makes it counted in the metrics.
    protocol: str | None = None
    key_id: str | None = None
    model_asked: str | None = None
    prompt: str | None = None
    served: Served | None = None
    usage: Usage | None = None
    cost_usd: float | None = None
    error: str | None = None  # the error code of a refused request or a broken stream
    streaming: bool = False  # finished by the stream's end, not by the request's
    finished: bool = False
    span: RequestSpan | None = None  # when tracing (engine.runtime.tracing)
    run_id: str | None = None  # the workflow run a workflow request submitted (or joined)

    def mark_first_byte(self) -> None:
        if self.first_byte is None:
            self.first_byte = time.perf_counter() - self.started


class Observer:
    """Fills and finishes exchanges for one app (``create_app``)."""

    def __init__(self, config: Config, redactor: Redactor) -> None:
        self._enabled = config.server.access_log
        self._log_prompts = config.server.log_prompts
        self._redactor = redactor
        self._models = {m.name: m for m in config.models}
        self._known = {*self._models, "auto"}

    def install(self, app: Any, gateway: Callable[[], Gateway | None],
                request_id: Callable[[], str]) -> None:
        """Hook ``app``: an exchange for every request (``g.exchange``), its status noted as
        the answer leaves, and finished with the request unless a stream's end does it."""

        @app.before_request
        async def begin_exchange() -> None:
            g.exchange = Exchange()

        @app.after_request
        async def note_status(response: Response) -> Response:
            exchange: Exchange | None = g.get("exchange")
            if exchange is not None:
                exchange.status = response.status_code
                if not exchange.streaming:
                    exchange.mark_first_byte()
            return response

        @app.teardown_request
        async def end_exchange(exc: BaseException | None) -> None:
            exchange: Exchange | None = g.get("exchange")
            if exchange is not None and not exchange.streaming:
                self.finish(exchange, gateway(), method=request.method, path=request.path,
                            request_id=request_id())

    def chat(self, exchange: Exchange, gateway: Gateway, *, protocol: str) -> None:
        """A chat request came in: it is in flight, and counted even if it is refused before
        its body is read (a 401, a 400)."""
        exchange.protocol = protocol
        gateway.request_started()

    def parsed(self, exchange: Exchange, *, request: ChatRequest, key: KeyRecord | None,
               headers: Any = None) -> None:
        """A chat request was authenticated and parsed (and is traced, when tracing: its
        span is current in ``exchange.span.current()``; ``headers``: the request's)."""
        if headers is not None:
            exchange.span = request_span(f"chat {exchange.protocol}", headers)
        exchange.model_asked = request.model or "auto"
        exchange.key_id = key.id if key is not None else None
        if self._log_prompts and request.messages:
            text = self._redactor.scrub(request.messages[-1].text)
            exchange.prompt = text[:PROMPT_CHARS] + ("..." if len(text) > PROMPT_CHARS else "")

    def workflow(self, exchange: Exchange, *, name: str | None, headers: Any) -> None:
        """A workflow request was authenticated and its workflow loaded: traced, when
        tracing, as ``workflow NAME`` (a ready pipeline's) or ``workflow submitted`` (a run
        records the span's ``traceparent`` and is traced under it)."""
        exchange.span = request_span(f"workflow {name or 'submitted'}", headers)

    def refused(self, exchange: Exchange, err: RouterError, *, request_id: str) -> None:
        """A WARNING line for a request refused by a limit (``err``)."""
        key = f", client key {exchange.key_id}" if exchange.key_id else ""
        access_log.warning("request %s refused (%s%s): %s", request_id, err.code, key,
                           self._redactor.scrub(err.message))

    def stream_ended(self, exchange: Exchange, finish: Finish | None) -> None:
        """A chat stream's last byte went out (``finish``: its last event, if it ended)."""
        served = exchange.served
        if finish is not None and served is not None:
            exchange.usage = finish.usage
            model = self._models.get(served.model)
            paid = served.cache != "HIT" and served.dedup != "FOLLOWER"
            exchange.cost_usd = (cost_usd(model, finish.usage)
                                 if paid and model is not None else 0.0)

    def finish(self, exchange: Exchange, gateway: Gateway | None, *, method: str,
               path: str, request_id: str) -> None:
        """Count and log ``exchange`` (once)."""
        if exchange.finished:
            return
        exchange.finished = True
        seconds = time.perf_counter() - exchange.started
        status = exchange.status or CLIENT_CLOSED
        if exchange.protocol is not None and gateway is not None:
            served = exchange.served
            asked = exchange.model_asked
            labels = (
                exchange.protocol,
                served.model if served else "" if asked is None  # refused before parsing
                else asked if asked in self._known else "other",
                str(served.tier) if served else "",
                served.cache.lower() if served else "none",
                str(status),
            )
            first_byte = exchange.first_byte
            gateway.request_done(labels, seconds=seconds,
                                 first_byte_seconds=seconds if first_byte is None else first_byte)
        logged = self._enabled and access_log.isEnabledFor(logging.INFO)
        if logged or exchange.span is not None:
            if path not in _FIXED_PATHS:
                path = self._redactor.scrub(path)
            fields = _fields(exchange, method, path, status, seconds, request_id)
            if logged:
                args = (method, path, status, _Tail(fields))
                handler = _sole_handler()
                if handler is None or not handler.line(_NAME, logging.INFO, _LINE, args, fields):
                    access_log.info(_LINE, *args, extra={"fields": fields})
            if exchange.span is not None:
                exchange.span.end(_span_attributes(fields),
                                  error=exchange.error if status >= 500 else None)


def _sole_handler() -> Any:
    """The one handler an access line reaches, when it can write the line without a
    ``logging.LogRecord`` (the command line's, api.cli.logs.LineHandler) and nothing on the
    way needs the record (a filter of the access logger, another handler, a disabled
    logger: then None, and the line goes through ``logging``, as a test's capture needs)."""
    logger: Any = access_log
    if logger.filters or logger.disabled:
        return None
    while logger is not None:
        if logger.handlers:
            if (logger.parent is not None and logger.propagate) or len(logger.handlers) != 1:
                return None
            handler = logger.handlers[0]
            return handler if hasattr(handler, "line") else None
        if not logger.propagate:
            return None
        logger = logger.parent
    return None


def _fields(exchange: Exchange, method: str, path: str, status: int, seconds: float,
            request_id: str) -> dict[str, Any]:
    fields: dict[str, Any] = {"method": method, "path": path, "status": status,
                              "request_id": request_id, "ms": round(seconds * 1000, 1)}
    if exchange.protocol is None:
        if exchange.run_id is not None:
            fields["run"] = exchange.run_id
        if exchange.error is not None:
            fields["error"] = exchange.error
        return fields
    served, usage = exchange.served, exchange.usage
    attempts = None
    if served is not None:
        attempts = 0 if served.cache == "HIT" or served.dedup == "FOLLOWER" else served.attempts
    first_byte = exchange.first_byte
    fields.update({
        "key": exchange.key_id,
        "protocol": exchange.protocol,
        "model": exchange.model_asked,
        "served": served.model if served else None,
        "tier": served.tier if served else None,
        "router": served.router if served else None,
        "score": served.score if served else None,
        "cache": served.cache if served else None,
        "dedup": served.dedup if served else None,
        "attempts": attempts,
        "ttfb_ms": round(first_byte * 1000, 1) if first_byte is not None else None,
        "tokens_in": usage.input_tokens if usage else None,
        "tokens_out": usage.output_tokens if usage else None,
        "cost_usd": round(exchange.cost_usd, 8) if exchange.cost_usd is not None else None,
        "error": exchange.error,
        "prompt": exchange.prompt,
    })
    return fields


# Fields with an OpenTelemetry semantic-convention name; the rest are ``llm_router.*``.
_SEMCONV = {"method": "http.request.method", "path": "url.path",
            "status": "http.response.status_code", "tokens_in": "gen_ai.usage.input_tokens",
            "tokens_out": "gen_ai.usage.output_tokens"}


def _span_attributes(fields: dict[str, Any]) -> dict[str, Any]:
    """A request span's attributes: the access line's fields but the prompt."""
    return {_SEMCONV.get(k) or f"llm_router.{k}": v for k, v in fields.items()
            if k != "prompt"}


_QUOTED = re.compile(r'[\s"=\\]')
_HEAD = frozenset({"method", "path", "status"})


class _Tail:
    """An access line's ``key=value`` part, made only when a text formatter asks for it (a
    JSON line takes the fields themselves)."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __str__(self) -> str:
        return " ".join(f"{k}={_text(v)}" for k, v in self.fields.items()
                        if v is not None and k not in _HEAD)


def _text(value: Any) -> str:
    if type(value) is not str:
        return str(value)
    if value and _QUOTED.search(value) is None:
        return value
    return '"' + value.encode("unicode_escape").decode().replace('"', '\\"') + '"'
