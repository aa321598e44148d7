"""The HTTP API: a Quart-Trio app that speaks OpenAI and Anthropic to clients.

Handlers parse the wire format into a canonical request, hand it to the gateway, and render
the result back in the caller's protocol. A handler that fails just raises: one error handler
per kind renders any :class:`~engine.errors.RouterError` (and HTTP-level and internal errors)
in the caller's protocol (:func:`caller_protocol`). Every response, errors and streams
included, carries ``X-LLM-Router-Request-Id`` and ``X-Request-Id`` (one id per request, made
by :func:`this_request_id`); answered ones also carry the routing headers (docs/api.md).
"""

from __future__ import annotations

import dataclasses
import functools
import hmac
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import orjson
from quart import Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from engine.core import (
    Config,
    KeyRecord,
    RedactingFilter,
    Redactor,
    iso_time,
    new_request_id,
)
from engine.errors import (
    ModelNotFound,
    PayloadTooLarge,
    RequestInvalid,
    RequestTimeout,
    RouterError,
    Unauthorized,
    echo,
)
from engine.runtime import (
    Gateway,
    KeyGate,
    Models,
    RunContext,
    open_gateway,
)
from engine.wire import ANTHROPIC, OPENAI, WireProtocol, parse_count_request, render_count

from .access import Exchange, Observer
from .admin import apply_changes, check_admin, parse_changes, parse_settings
from .chat import Authenticator, ChatEndpoint, Reply, error_reply
from .chat_front import ChatFront
from .dashboard import add_dashboard
from .feedback import parse_feedback
from .metrics import CONTENT_TYPE, render_metrics
from .model_pages import model_page
from .openapi import openapi_document
from .params import (
    AFTER,
    LIMIT,
    cache_controls,
    cancel_reason,
    event_id,
    idempotency_key,
    int_arg,
    prefers_async,
    run_status,
)
from .relay import SSE_HEADERS, EndBodies
from .stream_writes import StreamWriteDeadline
from .tenancy import client_key, tenant_of
from .workflows import WorkflowAPI, parse_call, run_events_sse

__all__ = ["create_app"]

log = logging.getLogger("llm_router")

# Where the router's own, the server's and the HTTP client's log lines go: each is scrubbed.
# (Access lines scrub their free text themselves: a client key's id, which the filter would
# take for a credential, must show there; api.http.access.)
_LOGGERS = ("llm_router", "hypercorn.error", "httpx")
_JSON = "application/json"
_Handler = Callable[..., Awaitable[Response]]


def _model_object(model_id: str, owner: str, display_name: str) -> dict[str, object]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": owner,
            "type": "model", "display_name": display_name,
            "created_at": "1970-01-01T00:00:00Z"}


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status=status, content_type=_JSON)


def this_request_id() -> str:
    """The request's id, made here on first use (the one place ids are made): every response
    carries it, and a chat's is its response id's tail and what feedback names it by."""
    request_id: str | None = g.get("request_id")
    if request_id is None:
        request_id = g.request_id = new_request_id()
    return request_id


def caller_protocol() -> WireProtocol:
    """The protocol an error is told in: Anthropic's on ``/v1/messages`` (and on a model
    lookup by a client that sends ``anthropic-version``), OpenAI's everywhere else."""
    if request.path.startswith("/v1/messages"):
        return ANTHROPIC
    if request.endpoint == "model" and "anthropic-version" in request.headers:
        return ANTHROPIC
    return OPENAI


def _response(reply: Reply) -> Response:
    return Response(reply.body, status=reply.status, headers=reply.headers)


def _error_response(err: RouterError) -> Response:
    return _response(error_reply(err, caller_protocol()))


def create_app(config: Config, *, preloaded: Models | None = None) -> QuartTrio:
    """Build the app for ``config``. The gateway starts and stops with serving; ``preloaded``
    are models already loaded (``engine.runtime.load_models``), else they load at start-up."""
    app = QuartTrio("llm_router")
    # An API answers a path as given: "/v1/models//x" asks for model "/x" (a 404 in the
    # caller's protocol), not a 308 redirect that an SDK would not follow with its body.
    app.url_map.merge_slashes = False
    app.config.update(
        RESPONSE_TIMEOUT=None,  # streams may run for minutes; deadlines live in the engine
        BODY_TIMEOUT=config.server.read_timeout_sec,
        MAX_CONTENT_LENGTH=config.server.max_body_bytes,
        PROVIDE_AUTOMATIC_OPTIONS=False,
    )
    allowed_keys = tuple(k.encode() for k in config.server.api_keys)
    holder: dict[str, Gateway] = {}

    redactor = Redactor.for_config(config)

    @app.while_serving
    async def lifespan() -> AsyncGenerator[None, None]:
        # Log lines never carry a configured secret either (see engine.core.redact).
        loggers = [logging.getLogger(name) for name in _LOGGERS]
        log_filter = RedactingFilter(redactor)
        for logger in loggers:
            logger.addFilter(log_filter)
        try:
            async with open_gateway(config, models=preloaded, redactor=redactor) as gateway:
                holder["gateway"] = gateway
                yield
                holder.pop("gateway", None)
        finally:
            for logger in loggers:
                logger.removeFilter(log_filter)

    def gateway() -> Gateway:
        return holder["gateway"]

    # Every request's access line and a chat's metrics and span (api.http.access).
    observer = Observer(config, redactor)
    observer.install(app, lambda: holder.get("gateway"), this_request_id)
    credentials = Authenticator(config, gateway)
    chat_endpoint = ChatEndpoint(observer, gateway, credentials)
    # The chat endpoints' lean path answers them in front of Quart (api.http.chat_front); a
    # streaming client that stops reading is disconnected (hypercorn's writes wait for it),
    # and a chat stream's body ends even if its client left before it was sent (api.http.relay).
    app.asgi_app = StreamWriteDeadline(  # type: ignore[method-assign]
        EndBodies(ChatFront(app.asgi_app, chat_endpoint, observer, lambda: holder.get("gateway"),
                            max_body_bytes=config.server.max_body_bytes,
                            read_timeout=config.server.read_timeout_sec)),
        timeout=config.server.stream_write_timeout_sec, background=lambda: app.nursery,
    )

    @app.after_request
    async def tag_response(response: Response) -> Response:
        request_id = this_request_id()
        response.headers["x-llm-router-request-id"] = request_id
        response.headers["x-request-id"] = request_id
        if g.get("body_unread"):  # the rest of the body is on its way: no next request after it
            response.headers["connection"] = "close"
        return response

    async def authenticate() -> tuple[str, KeyRecord | None]:
        return await credentials(request.headers.get("x-api-key", ""),
                                 request.headers.get("authorization", ""))

    async def read_body() -> bytes:
        g.body_unread = True
        length = request.content_length
        if length is not None and length > config.server.max_body_bytes:
            raise PayloadTooLarge(
                f"request body is {length} bytes; the limit is {config.server.max_body_bytes}"
            )
        try:
            body: bytes = await request.get_data(cache=False, as_text=False,
                                                 parse_form_data=False)
            g.body_unread = False
            return body
        except HTTPException as exc:
            if exc.code == 413:
                raise PayloadTooLarge(
                    f"request body exceeds the limit of {config.server.max_body_bytes} bytes"
                ) from None
            if exc.code == 408:
                raise RequestTimeout(
                    f"the request body did not arrive within server.read_timeout_sec "
                    f"({config.server.read_timeout_sec} s)"
                ) from None
            raise RequestInvalid("could not read the request body") from None

    async def chat(protocol: WireProtocol) -> Response:
        """A chat request spelt other than the lean path takes it (``//v1/messages``): the
        same answer through Quart (its error handlers render a refusal)."""
        reply = await chat_endpoint.answer(
            protocol, headers=request.headers, read_body=read_body, exchange=g.exchange,
            request_id=this_request_id(), method=request.method, path=request.path,
            scope=request.scope)
        return _response(reply)

    @app.post("/v1/chat/completions")
    async def chat_completions() -> Response:
        return await chat(OPENAI)

    @app.post("/v1/messages")
    async def messages() -> Response:
        return await chat(ANTHROPIC)

    admin_key = (config.server.admin_key or "").encode()

    def guarded(handler: _Handler) -> _Handler:
        """An endpoint that takes no tenant (the operator endpoints, feedback): for any
        credential the router accepts, and for the admin key."""

        @functools.wraps(handler)
        async def checked(*args: Any, **kwargs: Any) -> Response:
            given = client_key(request.headers.get("x-api-key", ""),
                               request.headers.get("authorization", "")).encode()
            if not (admin_key and hmac.compare_digest(given, admin_key)):
                await authenticate()
            return await handler(*args, **kwargs)

        return checked

    def cross_tenant(handler: _Handler) -> _Handler:
        """An endpoint that shows every tenant's data: for the admin key when one is set,
        else as :func:`guarded`."""
        if not admin_key:
            return guarded(handler)

        @functools.wraps(handler)
        async def checked(*args: Any, **kwargs: Any) -> Response:
            given = client_key(request.headers.get("x-api-key", ""),
                               request.headers.get("authorization", "")).encode()
            if not hmac.compare_digest(given, admin_key):
                raise Unauthorized("this endpoint needs the admin key "
                                   "(Authorization: Bearer <key>)")
            return await handler(*args, **kwargs)

        return checked

    add_dashboard(app, gateway, guarded=guarded, cross_tenant=cross_tenant,
                  needs_key=bool(allowed_keys or admin_key))

    workflows = WorkflowAPI(config)

    async def workflow_call(name: str | None) -> Response:
        tenant, key = await authenticate()
        body = await read_body()
        call = parse_call(body, needs_workflow=name is None)
        read, write = cache_controls(request.headers.get("cache-control", ""), body)
        ctx = RunContext(tenant=tenant, cache_read=read, cache_write=write, key=key)
        if name is None:
            assert call.workflow is not None
            text = call.workflow
            workflow = await workflows.load_submitted(text, limiter=gateway().render_limiter)
        else:
            text, workflow = workflows.named(name)
        exchange: Exchange = g.exchange
        observer.workflow(exchange, name=name, headers=request.headers)
        response = await workflows.respond(
            gateway(), workflow, call, ctx, text=text, name=name,
            prefer_async=prefers_async(request.headers.get("prefer", "")),
            idempotency_key=idempotency_key(request.headers.get("idempotency-key")),
            traceparent=exchange.span.traceparent() if exchange.span is not None else None,
        )
        exchange.run_id = response.headers.get("x-llm-router-run-id")
        return response

    @app.post("/v1/workflows")
    async def run_workflow() -> Response:
        return await workflow_call(None)

    @app.post("/v1/workflows/<name>")
    async def run_named_workflow(name: str) -> Response:
        return await workflow_call(name)

    @app.get("/v1/workflows")
    @guarded
    async def list_workflows() -> Response:
        return _json({"workflows": workflows.listing()})

    # ---- durable runs ----------------------------------------------------------------------

    @app.get("/v1/workflows/runs")
    async def list_runs() -> Response:
        tenant, _ = await authenticate()
        status = run_status(request.args.get("status"))
        limit = int_arg(request.args.get("limit"), "limit", LIMIT)
        found = await gateway().workflow_runs().list(tenant=tenant, status=status,
                                                     limit=limit + 1)
        return _json({"object": "list", "data": [r.summary() for r in found[:limit]],
                      "has_more": len(found) > limit})

    @app.get("/v1/workflows/runs/<run_id>")
    async def get_run(run_id: str) -> Response:
        tenant, _ = await authenticate()
        return _json((await gateway().workflow_runs().get(run_id, tenant=tenant)).public())

    @app.get("/v1/workflows/runs/<run_id>/events")
    async def run_events(run_id: str) -> Response:
        tenant, _ = await authenticate()
        last = request.headers.get("last-event-id")
        after = (int_arg(request.args.get("after"), "after", AFTER) if last is None
                 else event_id(last))
        runs = gateway().workflow_runs()
        await runs.get(run_id, tenant=tenant)  # unknown: a 404, not an error event
        events = runs.watch(run_id, tenant=tenant, after=after)
        return Response(run_events_sse(events), headers=SSE_HEADERS)

    @app.post("/v1/workflows/runs/<run_id>/cancel")
    async def cancel_run(run_id: str) -> Response:
        tenant, _ = await authenticate()
        body = await read_body()
        reason = cancel_reason(body)
        by = {"request_id": this_request_id(), "at": iso_time(time.time())}
        if reason is not None:
            by["reason"] = reason
        record = await gateway().workflow_runs().cancel(run_id, tenant=tenant, by=by)
        return _json(record.public())

    @app.post("/v1/feedback")
    @guarded
    async def feedback() -> Response:
        report = parse_feedback(await read_body())
        reporter = tenant_of(request.headers.get("x-api-key", ""),
                             request.headers.get("authorization", ""))
        return _json(await gateway().report_feedback(
            dataclasses.replace(report, reporter=reporter or None)))

    @app.get("/v1/routing")
    async def routing() -> Response:
        # The admin key sees every tenant's cache threshold; a client, its own.
        given = client_key(request.headers.get("x-api-key", ""),
                           request.headers.get("authorization", "")).encode()
        if admin_key and hmac.compare_digest(given, admin_key):
            return _json(await gateway().routing_state(tenant=None))
        tenant, _ = await authenticate()
        return _json(await gateway().routing_state(tenant=tenant))

    @app.delete("/v1/routing/learning")
    async def reset_learning() -> Response:
        check_admin(config.server.admin_key, request.headers.get("x-api-key", ""),
                    request.headers.get("authorization", ""))
        return _json(await gateway().reset_learning())

    @app.get("/v1/backends")
    @guarded
    async def backends() -> Response:
        return _json(await gateway().backends_snapshot())

    # One object per model that both SDKs read: OpenAI's (id, object, created, owned_by) and
    # Anthropic's (type, id, display_name, created_at). `auto` (routed) comes first, so chat
    # UIs that pick from this list can reach routing.
    model_list = [_model_object("auto", "llm-router", "auto (routed by llm-router)")] + [
        _model_object(m.name, m.provider, f"{m.name} (tier {m.tier})") for m in config.models
    ]
    model_by_id = {m["id"]: m for m in model_list}

    @app.get("/v1/models")
    @guarded
    async def models() -> Response:
        return _json(model_page(model_list, request.args))

    @app.get("/v1/models/<path:model_id>")
    @guarded
    async def model(model_id: str) -> Response:
        found = model_by_id.get(model_id)
        if found is None:
            raise ModelNotFound(f"no model {echo(model_id)} on this router; "
                                "GET /v1/models lists them", param="model")
        return _json(found)

    @app.post("/v1/messages/count_tokens")
    @guarded
    async def count_tokens() -> Response:
        """Anthropic's token count, estimated by the router for every backend alike
        (``engine.wire.anthropic.count``); the model must be one this router serves."""
        counted = parse_count_request(await read_body())
        if counted.model is not None and counted.model not in model_by_id:
            raise ModelNotFound(f"no model {echo(counted.model)} on this router; "
                                "GET /v1/models lists them", param="model")
        return Response(render_count(counted), content_type=_JSON)

    @app.get("/stats")
    @guarded
    async def stats() -> Response:
        return _json(await gateway().stats_snapshot())

    # ---- the admin API: client keys (``server.admin_key``) -----------------------------------

    def key_gate() -> KeyGate:
        check_admin(config.server.admin_key, request.headers.get("x-api-key", ""),
                    request.headers.get("authorization", ""))
        gate = gateway().keys
        assert gate is not None  # admin_key set: the gateway has one
        return gate

    async def key_view(gate: KeyGate, record: KeyRecord) -> dict[str, Any]:
        return record.public() | {"usage": await gate.usage(record)}

    @app.post("/v1/admin/keys")
    async def create_key() -> Response:
        gate = key_gate()
        settings = parse_settings(await read_body())
        record, secret = await gate.create(settings)
        return _json(await key_view(gate, record) | {"key": secret}, status=201)

    @app.get("/v1/admin/keys")
    async def list_keys() -> Response:
        gate = key_gate()
        data = [await key_view(gate, record) for record in await gate.list()]
        return _json({"object": "list", "data": data})

    @app.get("/v1/admin/keys/<key_id>")
    async def get_key(key_id: str) -> Response:
        gate = key_gate()
        return _json(await key_view(gate, await gate.get(key_id)))

    @app.patch("/v1/admin/keys/<key_id>")
    async def update_key(key_id: str) -> Response:
        gate = key_gate()
        changes = parse_changes(await read_body())
        record = await gate.get(key_id)
        record = await gate.update(key_id, apply_changes(record.settings, changes))
        return _json(await key_view(gate, record))

    @app.delete("/v1/admin/keys/<key_id>")
    async def revoke_key(key_id: str) -> Response:
        gate = key_gate()
        return _json(await key_view(gate, await gate.revoke(key_id)))

    @app.delete("/v1/admin/cache/thresholds")
    async def reset_cache_thresholds() -> Response:
        check_admin(config.server.admin_key, request.headers.get("x-api-key", ""),
                    request.headers.get("authorization", ""))
        tenant = request.args.get("tenant")
        if tenant is not None and not 0 < len(tenant.strip()) <= len(tenant) <= 200:
            raise RequestInvalid("tenant must name a tenant as GET /v1/routing shows it (a "
                                 "digest, or anonymous); leave it out to reset every tenant",
                                 param="tenant")
        count = await gateway().reset_cache_thresholds(None if tenant is None else [tenant])
        return _json({"reset": count})

    @app.get("/health")
    async def health() -> Response:
        return _json(gateway().health())

    @app.get("/metrics")
    @guarded
    async def metrics() -> Response:
        body = render_metrics(await gateway().metrics_snapshot())
        return Response(body, status=200, content_type=CONTENT_TYPE)

    document = orjson.dumps(openapi_document())

    @app.get("/openapi.json")
    async def openapi() -> Response:
        """Public, as /health: the API's description carries no secret or configuration."""
        return Response(document, content_type=_JSON)

    # ---- errors: each rendered in the caller's protocol (``caller_protocol``) ------------

    @app.errorhandler(RouterError)
    async def router_error(err: RouterError) -> Response:
        return _response(chat_endpoint.refused(err, caller_protocol(), g.get("exchange"),
                                               this_request_id()))

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        err = (PayloadTooLarge if code == 413 else RequestInvalid)(
            f"{request.method} {request.path}: {exc.name.lower()}"
        )
        err.status = code
        response = _error_response(err)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            # RFC 9110: a 405 says which methods the resource takes
            response.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        return response

    @app.errorhandler(Exception)
    async def internal_error(exc: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.path, exc_info=exc)
        return _error_response(RouterError("internal error"))

    return app
