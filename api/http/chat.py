"""A chat request, answered: authenticated, read, parsed, sent to the gateway, and rendered in
the caller's protocol as a :class:`Reply`.

Framework-free: the request comes in as its headers (lower-case names), a way to read its body
and the :class:`~api.http.access.Exchange` it fills in; what goes out is a status, headers and
a body (bytes, or a :class:`~api.http.relay.ChatBody` for a stream). Two adapters serve it: the
lean ASGI front that answers ``POST`` on the two chat paths itself (``api.http.chat_front``),
and the Quart app's routes for every other spelling of them (``api.http.app``).
"""

from __future__ import annotations

import dataclasses
import functools
import hmac
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from engine.core import Config, KeyRecord
from engine.errors import (
    BudgetExceeded,
    NoBackendAvailable,
    RateLimited,
    RouterError,
    Unauthorized,
    UpstreamBusy,
    UpstreamRateLimited,
)
from engine.messages import ChatRequest
from engine.runtime import Gateway, RunContext, Served
from engine.wire import ANTHROPIC, WireProtocol

from .access import Exchange, Observer
from .params import cache_controls
from .relay import SSE_HEADERS, ChatBody
from .tenancy import client_key, tenant_of

__all__ = ["Authenticator", "ChatEndpoint", "Reply", "error_reply", "routing_headers"]

_JSON = "application/json"


class Headers(Protocol):
    """A request's headers, looked up by lower-case name (a dict of them, or werkzeug's)."""

    def get(self, key: str, default: str) -> str: ...

    def items(self) -> Iterable[tuple[str, str]]: ...


@dataclass(slots=True)
class Reply:
    """What a chat request gets: ``body`` is bytes, or the stream's :class:`ChatBody`."""

    status: int
    headers: dict[str, str]
    body: bytes | ChatBody


def routing_headers(served: Served) -> dict[str, str]:
    """The ``X-LLM-Router-*`` headers of an answered request (docs/api.md)."""
    headers = {
        "x-llm-router-score": "" if served.score is None else str(served.score),
        "x-llm-router-tier": str(served.tier),
        "x-llm-router-model": served.model,
        "x-llm-router-cache": served.cache,
        "x-llm-router-router": served.router,
    }
    if not served.model:  # failed before any model was chosen
        del headers["x-llm-router-model"]
    if served.similarity is not None:
        headers["x-llm-router-similarity"] = f"{served.similarity:.4f}"
    if served.dedup is not None:
        headers["x-llm-router-dedup"] = served.dedup
    if served.limits:
        headers.update(served.limits)
    return headers


def error_reply(err: RouterError, protocol: WireProtocol) -> Reply:
    """``err`` as ``protocol``'s error object, with ``Retry-After`` where a limit or the
    backends' health says when to come back, a client key's ``X-RateLimit-*``, and the
    routing headers of a request that failed after it was routed."""
    headers = {"content-type": _JSON}
    if err.routed is not None:
        headers.update(routing_headers(err.routed))
    retry_after = getattr(err, "retry_after", None)
    waits = (RateLimited | UpstreamRateLimited | BudgetExceeded | NoBackendAvailable
             | UpstreamBusy)
    if isinstance(err, waits) and retry_after is not None:
        headers["retry-after"] = str(max(1, round(retry_after)))
    headers.update(err.headers or {})
    return Reply(err.status, headers, protocol.render_error(err))


class Authenticator:
    """Who is calling, from the credential headers (``x-api-key``, ``Authorization``)."""

    def __init__(self, config: Config, gateway: Callable[[], Gateway]) -> None:
        self._allowed = tuple(k.encode() for k in config.server.api_keys)
        self._gateway = gateway

    async def __call__(self, x_api_key: str, authorization: str
                       ) -> tuple[str, KeyRecord | None]:
        """The caller's tenant (``api.http.tenancy``: a digest of whatever credential it
        presented). A client key (``llmr-...``, with ``server.admin_key`` set) must be live;
        any other credential must be one of ``server.api_keys`` when those are set, or when
        client keys are on (a router that issues keys admits nobody without one). With the
        tenant comes the client key's record, if one was presented.

        Raises:
            Unauthorized: the credential is not one this router accepts.
        """
        given = client_key(x_api_key, authorization)
        gate = self._gateway().keys
        key = None
        if gate is not None and gate.is_client_key(given):
            key = await gate.authenticate(given)
        elif (self._allowed or gate is not None) and not any(
                hmac.compare_digest(given.encode(), k) for k in self._allowed):
            raise Unauthorized("missing or invalid API key for this router")
        return tenant_of(x_api_key, authorization), key


class ChatEndpoint:
    """``POST /v1/chat/completions`` and ``POST /v1/messages``, whichever adapter serves them."""

    def __init__(self, observer: Observer, gateway: Callable[[], Gateway],
                 authenticate: Authenticator) -> None:
        self._observer = observer
        self._gateway = gateway
        self._authenticate = authenticate

    async def answer(self, protocol: WireProtocol, *, headers: Headers,
                     read_body: Callable[[], Awaitable[bytes]], exchange: Exchange,
                     request_id: str, method: str, path: str, scope: Any) -> Reply:
        """Answer one chat request. A refusal raises its :class:`RouterError` (the adapter
        renders it with :meth:`refused`). ``scope`` is the request's ASGI scope (a stream's
        body registers there to be ended, ``api.http.relay``); ``method`` and ``path`` are for
        a stream's access line, which is written after the request is gone."""
        gateway = self._gateway()
        self._observer.chat(exchange, gateway, protocol=protocol.name)
        tenant, key = await self._authenticate(headers.get("x-api-key", ""),
                                               headers.get("authorization", ""))
        body = await read_body()
        chat_request = protocol.parse_request(body)
        beta = headers.get("anthropic-beta", "")
        if beta and protocol is ANTHROPIC:  # relayed to Anthropic upstreams only
            chat_request = dataclasses.replace(chat_request, anthropic_beta=beta)
        self._observer.parsed(exchange, request=chat_request, key=key, headers=headers)
        read, write = cache_controls(headers.get("cache-control", ""), body)
        ctx = RunContext(tenant=tenant, cache_read=read, cache_write=write, key=key)
        call = functools.partial(self._answer, gateway, protocol, chat_request, ctx, exchange,
                                 request_id, method, path, scope)
        if exchange.span is None:
            return await call()
        with exchange.span.current():  # the gateway's work (and its upstream calls) under it
            return await call()

    async def _answer(self, gateway: Gateway, protocol: WireProtocol,
                      chat_request: ChatRequest, ctx: RunContext, exchange: Exchange,
                      request_id: str, method: str, path: str, scope: Any) -> Reply:
        response_id = protocol.id_prefix + request_id
        created = int(time.time())
        if chat_request.stream:
            stream = await gateway.open_stream(chat_request, ctx, request_id=request_id)
            encoder = protocol.encoder(
                chat_request, id=response_id, model=stream.served.model, created=created
            )
            gateway.remember_decision(request_id, stream.served, tenant=ctx.tenant)
            exchange.served, exchange.streaming = stream.served, True
            # The body is sent after the request's context is gone: what the line needs, now.
            ended = functools.partial(self._observer.finish, exchange, gateway, method=method,
                                      path=path, request_id=request_id)
            relay = ChatBody(stream, encoder, exchange=exchange, observer=self._observer,
                             ended=ended, scope=scope)
            return Reply(200, routing_headers(stream.served) | SSE_HEADERS, relay)
        done = await gateway.complete(chat_request, ctx, request_id=request_id)
        exchange.served, exchange.usage = done.served, done.result.usage
        exchange.cost_usd = done.cost_usd
        gateway.remember_decision(request_id, done.served, tenant=ctx.tenant)
        body = protocol.render_result(
            done.result, id=response_id, model=done.served.model, created=created
        )
        return Reply(200, {"content-type": _JSON} | routing_headers(done.served), body)

    def refused(self, err: RouterError, protocol: WireProtocol, exchange: Exchange | None,
                request_id: str) -> Reply:
        """``err`` noted on the request's exchange (a WARNING line when a limit refused it)
        and rendered in ``protocol``."""
        if exchange is not None:
            exchange.error = err.code
            if isinstance(err, BudgetExceeded | RateLimited):
                self._observer.refused(exchange, err, request_id=request_id)
        return error_reply(err, protocol)
