"""``GET /openapi.json``: the HTTP API as an OpenAPI 3.1 document, built from the declarations
the validators use, never written a second time: the chat bodies from ``engine.wire``'s
specs (``OPENAI.request_body``, ``ANTHROPIC.request_body``), the workflow, feedback and
cancel bodies and the query parameters and headers from theirs (:mod:`.workflows`,
:mod:`.feedback`, :mod:`.params`), the admin API's from the pydantic model that validates it
(:func:`.admin.key_schemas`).

Public, like ``/health``: it describes the public contract and carries no secret and nothing
of the configuration (no model, backend or key names). ``tests/api/test_openapi.py`` checks
that every route of the app is in it, and validates it; the endpoint fuzz
(``tests/api/test_fuzz_endpoints.py``) draws its requests from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.wire import ANTHROPIC, OPENAI, Num, Text, to_schema

from .admin import key_schemas
from .feedback import FEEDBACK
from .model_pages import AFTER_ID, BEFORE_ID, MODELS_LIMIT
from .params import AFTER, CANCEL, EVERY_LIMIT, IDEMPOTENCY_KEY, LIMIT, STATUS, TENANT
from .workflows import RUN_NAMED, SUBMIT

__all__ = ["openapi_document"]

JSON = dict[str, Any]
_ERROR_SCHEMAS: JSON = {
    "OpenAIError": {
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["message", "type", "param", "code"],
            "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                           "param": {"type": ["string", "null"]},
                           "code": {"type": ["string", "null"]}}}},
    },
    "AnthropicError": {
        "type": "object", "required": ["type", "error"],
        "properties": {"type": {"const": "error"}, "error": {
            "type": "object", "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}}}},
    },
}
_SECURITY: dict[str, list[JSON]] = {
    "public": [],
    "client": [{"clientBearer": []}, {"clientApiKey": []}, {}],
    "operator": [{"clientBearer": []}, {"clientApiKey": []}, {"adminBearer": []},
                 {"adminApiKey": []}, {}],
    "admin": [{"adminBearer": []}, {"adminApiKey": []}],
}
_SCHEMES = {
    "clientBearer": {"type": "http", "scheme": "bearer", "description":
                     "A client key (server.api_keys, or llmr-... from the admin API). Needed "
                     "only when the router has keys; any credential names the cache tenant."},
    "clientApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key",
                     "description": "The same client key, as the Anthropic SDK sends it."},
    "adminBearer": {"type": "http", "scheme": "bearer",
                    "description": "server.admin_key (the admin API is off without it)."},
    "adminApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key",
                    "description": "server.admin_key, in x-api-key."},
}


def _header(name: str, spec: Text, *, required: bool = False) -> JSON:
    return {"name": name, "in": "header", "required": required,
            "description": spec.doc, "schema": to_schema(Text(min_length=spec.min_length,
                                                               max_length=spec.max_length))}


def _query(name: str, spec: Num | Text) -> JSON:
    return {"name": name, "in": "query", "required": False, "description": spec.doc,
            "schema": to_schema(spec) | ({"default": int(spec.default)}
                                         if isinstance(spec, Num) else {})}


def _path(name: str, doc: str) -> JSON:
    return {"name": name, "in": "path", "required": True, "description": doc,
            "schema": {"type": "string", "minLength": 1}}


_CACHE_CONTROL = _header("Cache-Control", Text(
    doc="no-cache: do not look in the cache; no-store: neither look nor store."))
_PREFER = _header("Prefer", Text(doc="respond-async: answer 202 at once with the run's id."))
_IDEMPOTENCY = _header("Idempotency-Key", IDEMPOTENCY_KEY)
_LAST_EVENT_ID = _header("Last-Event-ID", Text(
    doc="Resume after this event id (a number this router sent)."))
_ANTHROPIC_VERSION = _header("anthropic-version", Text(
    doc="Sent by the Anthropic SDK; accepted and not checked."))
_MODEL_LOOKUP_VERSION = _header("anthropic-version", Text(
    doc="With it, errors are Anthropic's error object (the Anthropic SDK's models.retrieve)."))


def _object(description: str, **properties: JSON) -> JSON:
    return {"type": "object", "description": description, "properties": properties}


_RUN = {
    "type": "object", "required": ["run_id", "status"],
    "properties": {
        "run_id": {"type": "string"}, "workflow": {"type": ["string", "null"]},
        "status": {"type": "string", "enum": list(STATUS.values)},
        "created_at": {"type": "string", "format": "date-time"},
        "finished_at": {"type": ["string", "null"], "format": "date-time"},
        "ops": {"type": "object", "additionalProperties": {"type": "object"}},
        "cost_usd": {"type": "number"}, "final_output": {"type": ["string", "null"]},
        "error": {},
    },
}
_ACCEPTED = _object("The run was queued; watch it at status_url or events_url.",
                    run_id={"type": "string"}, status={"type": "string"},
                    status_url={"type": "string"}, events_url={"type": "string"})
_MODEL = {"type": "object", "required": ["id", "object"],
          "description": "Read by both SDKs: OpenAI's model object and Anthropic's.",
          "properties": {"id": {"type": "string"}, "object": {"const": "model"},
                         "created": {"type": "integer"}, "owned_by": {"type": "string"},
                         "type": {"const": "model"}, "display_name": {"type": "string"},
                         "created_at": {"type": "string"}}}
_SSE = {"text/event-stream": {"schema": {"type": "string"}}}
_HTML = {"text/html": {"schema": {"type": "string"}}}
_ASSET = {kind: {"schema": {"type": "string"}}
          for kind in ("text/html", "text/css", "text/javascript", "image/svg+xml")}
_ROUTING_HEADERS = {
    f"X-LLM-Router-{name}": {"description": doc, "schema": {"type": "string"}}
    for name, doc in (
        ("Score", "The complexity score, 0-100, used for routing."),
        ("Tier", "The tier of the model that answered."),
        ("Model", "The configured name of the model that answered."),
        ("Cache", "HIT or MISS."),
        ("Router", "Who chose the tier: pinned, heuristic, learned, ..."),
        ("Similarity", "On a cache hit: how close the request was to the cached one."),
        ("Dedup", "LEADER or FOLLOWER (joined an identical request in flight)."),
    )
}


@dataclass(frozen=True, slots=True)
class _Op:
    method: str
    path: str
    summary: str
    tag: str
    auth: str
    ok: dict[str, JSON]  # status -> content by media type
    body: JSON | None = None
    body_required: bool = True
    parameters: tuple[JSON, ...] = ()
    errors: str = "OpenAIError"
    routed: bool = False  # a chat answer: the routing headers (docs/api.md)


def _json(schema: JSON) -> dict[str, JSON]:
    return {"application/json": {"schema": schema}}


def _operations(create_key: JSON, change_key: JSON) -> tuple[_Op, ...]:
    key_view = {"type": "object", "required": ["id", "prefix", "name"],
                "description": "A key's settings, id, prefix, times and usage; never its "
                               "secret.",
                "properties": create_key["properties"] | {
                    "id": {"type": "string"}, "prefix": {"type": "string"},
                    "created_at": {"type": "string"},
                    "revoked_at": {"type": ["string", "null"]}, "usage": {"type": "object"}}}
    created = key_view | {"required": [*key_view["required"], "key"], "properties":
                          key_view["properties"] | {"key": {
                              "type": "string", "description": "The secret, shown once."}}}
    key_id = _path("key_id", "The key's id (key_...).")
    run_id = _path("run_id", "The run's id (run_...).")
    workflow_ok = {"200": _json({"type": "object", "description": "The result, or a dry "
                                 "run's plan."}) | _SSE, "202": _json(_ACCEPTED)}
    workflow_headers = (_CACHE_CONTROL, _PREFER, _IDEMPOTENCY)
    return (
        # the admin API first: it changes who may do everything else
        _Op("post", "/v1/admin/keys", "Create a client key", "admin", "admin",
            {"201": _json(created)}, body=create_key),
        _Op("get", "/v1/admin/keys", "List client keys", "admin", "admin",
            {"200": _json(_object("All keys.", object={"const": "list"},
                                  data={"type": "array", "items": key_view}))}),
        _Op("get", "/v1/admin/keys/{key_id}", "Show a client key", "admin", "admin",
            {"200": _json(key_view)}, parameters=(key_id,)),
        _Op("patch", "/v1/admin/keys/{key_id}", "Change a client key", "admin", "admin",
            {"200": _json(key_view)}, body=change_key, parameters=(key_id,)),
        _Op("delete", "/v1/admin/keys/{key_id}", "Revoke a client key", "admin", "admin",
            {"200": _json(key_view)}, parameters=(key_id,)),
        _Op("post", "/v1/chat/completions", "OpenAI chat completions, routed", "chat",
            "client", {"200": _json({"type": "object", "required": ["id", "choices"]}) | _SSE},
            body=to_schema(OPENAI.request_body), parameters=(_CACHE_CONTROL,), routed=True),
        _Op("post", "/v1/messages", "Anthropic Messages, routed", "chat", "client",
            {"200": _json({"type": "object", "required": ["id", "content"]}) | _SSE},
            body=to_schema(ANTHROPIC.request_body),
            parameters=(_CACHE_CONTROL, _ANTHROPIC_VERSION), errors="AnthropicError",
            routed=True),
        _Op("post", "/v1/messages/count_tokens", "Anthropic token count, estimated by the "
            "router", "chat", "client",
            {"200": _json(_object("The estimate (docs/api.md).",
                                  input_tokens={"type": "integer", "minimum": 0}))},
            body=_count_body(), parameters=(_ANTHROPIC_VERSION,), errors="AnthropicError"),
        _Op("post", "/v1/workflows", "Run a workflow given as YAML", "workflows", "client",
            workflow_ok, body=to_schema(SUBMIT), parameters=workflow_headers),
        _Op("get", "/v1/workflows", "List the ready pipelines", "workflows", "operator",
            {"200": _json(_object("The ready pipelines.", workflows={
                "type": "array", "items": {"type": "object"}}))}),
        _Op("post", "/v1/workflows/{name}", "Run a ready pipeline", "workflows", "client",
            workflow_ok, body=to_schema(RUN_NAMED), body_required=False,
            parameters=(_path("name", "A ready pipeline's name."), *workflow_headers)),
        _Op("get", "/v1/workflows/runs", "Recent runs, newest first", "runs", "client",
            {"200": _json(_object("A page of runs.", object={"const": "list"},
                                  data={"type": "array", "items": _RUN},
                                  has_more={"type": "boolean"}))},
            parameters=(_query("status", STATUS), _query("limit", LIMIT))),
        _Op("get", "/v1/workflows/runs/{run_id}", "One run", "runs", "client",
            {"200": _json(_RUN)}, parameters=(run_id,)),
        _Op("get", "/v1/workflows/runs/{run_id}/events", "A run's progress as SSE", "runs",
            "client", {"200": _SSE},
            parameters=(run_id, _query("after", AFTER), _LAST_EVENT_ID)),
        _Op("post", "/v1/workflows/runs/{run_id}/cancel", "Cancel a run", "runs", "client",
            {"200": _json(_RUN)}, body=to_schema(CANCEL), body_required=False,
            parameters=(run_id,)),
        _Op("post", "/v1/feedback", "Report the quality of an answer", "operator",
            "operator", {"200": _json({"type": "object"}), "202": _json({"type": "object"})},
            body=to_schema(FEEDBACK)),
        _Op("get", "/v1/routing", "Thresholds and calibration", "operator", "operator",
            {"200": _json({"type": "object"})}),
        _Op("delete", "/v1/routing/learning", "Forget what feedback taught the router",
            "admin", "admin", {"200": _json(_object("Reset, and the learning state now.",
                                                    reset={"type": "boolean"},
                                                    learning={"type": "object"}))}),
        _Op("get", "/v1/backends", "Health and load of each backend", "operator", "operator",
            {"200": _json({"type": "array", "items": {"type": "object"}})}),
        _Op("get", "/v1/models", "auto and the configured models", "models", "operator",
            {"200": _json(_object("OpenAI's list shape, with Anthropic's paging fields.",
                                  object={"const": "list"},
                                  data={"type": "array", "items": _MODEL}))},
            parameters=(_query("limit", MODELS_LIMIT), _query("after_id", AFTER_ID),
                        _query("before_id", BEFORE_ID))),
        _Op("get", "/v1/models/{model_id}", "One model", "models", "operator",
            {"200": _json(_MODEL)}, errors="ModelLookupError",
            parameters=(_path("model_id", "A name from GET /v1/models."),
                        _MODEL_LOOKUP_VERSION)),
        _Op("get", "/stats", "Requests, spend and savings", "operator", "operator",
            {"200": _json({"type": "object"})}),
        _Op("get", "/metrics", "Prometheus metrics (docs/observability.md)", "operator",
            "operator", {"200": {"text/plain": {"schema": {"type": "string"}}}}),
        _Op("delete", "/v1/admin/cache/thresholds", "Reset cache thresholds feedback moved",
            "admin", "admin", {"200": _json(_object("How many tenants were reset.",
                                                    reset={"type": "integer"}))},
            parameters=(_query("tenant", TENANT),)),
        _Op("get", "/stats/recent", "The last requests, rate and latency (every process's)",
            "dashboard", "operator", {"200": _json({"type": "object"})}),
        _Op("get", "/stats/events", "The dashboard's figures, pushed when they change",
            "dashboard", "operator", {"200": _SSE},
            parameters=({"name": "run", "in": "query", "required": False,
                         "description": "The run whose DAG to send (default: the newest "
                                        "running one, else the newest).",
                         "schema": {"type": "string"}},)),
        _Op("get", "/stats/runs", "Every tenant's runs, without their text", "dashboard",
            "admin", {"200": _json(_object("A page of runs.", object={"const": "list"},
                                           data={"type": "array", "items": _RUN}))},
            parameters=(_query("status", STATUS), _query("limit", EVERY_LIMIT))),
        _Op("get", "/stats/runs/{run_id}", "One run of any tenant, without its text",
            "dashboard", "admin", {"200": _json(_RUN)}, parameters=(run_id,)),
        _Op("get", "/ui", "The dashboard page", "dashboard", "public", {"200": _HTML}),
        _Op("get", "/ui/", "The dashboard page", "dashboard", "public", {"200": _HTML}),
        _Op("get", "/ui/{name}", "One of the dashboard's files", "dashboard", "public",
            {"200": _ASSET}, parameters=(_path("name", "index.html, dashboard.css, "
                                                       "dashboard.js or favicon.svg."),)),
        _Op("get", "/health", "Liveness", "operator", "public",
            {"200": _json({"type": "object"})}),
        _Op("get", "/openapi.json", "This document", "operator", "public",
            {"200": _json({"type": "object"})}),
    )


def _count_body() -> JSON:
    """The Messages body without ``max_tokens`` and ``stream``: what count_tokens takes."""
    body = to_schema(ANTHROPIC.request_body)
    body["required"] = [name for name in body["required"] if name != "max_tokens"]
    body["properties"] = {name: spec for name, spec in body["properties"].items()
                          if name not in ("max_tokens", "stream", "router_cache")}
    return body


def _operation(op: _Op) -> JSON:
    headers: JSON = {"X-Request-Id": {"$ref": "#/components/headers/RequestId"}}
    if op.routed:
        headers |= _ROUTING_HEADERS
    responses: JSON = {
        status: {"description": "OK", "headers": headers, "content": content}
        for status, content in op.ok.items()
    }
    for status in ("4XX", "429", "5XX"):
        responses[status] = {"$ref": f"#/components/responses/{op.errors}"
                                     + ("RateLimited" if status == "429" else "")}
    out: JSON = {"summary": op.summary, "tags": [op.tag],
                 "operationId": (f"{op.method}_{op.path}".replace("/", "_").rstrip("_")
                                 + ("_index" if op.path.endswith("/") else "")),
                 "security": _SECURITY[op.auth], "responses": responses}
    if op.parameters:
        out["parameters"] = list(op.parameters)
    if op.body is not None:
        out["requestBody"] = {"required": op.body_required, "content": _json(op.body)}
    return out


def _error_responses() -> JSON:
    openai, anthropic = ({"$ref": "#/components/schemas/OpenAIError"},
                         {"$ref": "#/components/schemas/AnthropicError"})
    shapes: dict[str, JSON] = {"OpenAIError": openai, "AnthropicError": anthropic,
                               "ModelLookupError": {"anyOf": [openai, anthropic]}}
    request_id = {"X-Request-Id": {"$ref": "#/components/headers/RequestId"}}
    out: JSON = {}
    for name, schema in shapes.items():
        out[name] = {"description": "An error, in the caller's protocol (docs/errors.md).",
                     "headers": request_id, "content": _json(schema)}
        out[name + "RateLimited"] = {
            "description": "Over a rate limit or budget; Retry-After when the wait is known.",
            "headers": request_id | {"Retry-After": {
                "description": "Whole seconds, at least 1.",
                "schema": {"type": "integer", "minimum": 1}}},
            "content": _json(schema)}
    return out


def openapi_document() -> JSON:
    """The document ``GET /openapi.json`` serves (the same for every configuration)."""
    create_key, change_key = key_schemas()
    schemas = dict(_ERROR_SCHEMAS) | create_key.pop("$defs", {}) | change_key.pop("$defs", {})
    paths: JSON = {}
    for op in _operations(create_key, change_key):
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "llm-router", "version": "1",
                 "description": "A cost-optimizing LLM gateway (OpenAI and Anthropic "
                                "protocols) and workflow engine. Bad input is a 4xx in the "
                                "caller's protocol: Anthropic's error object under "
                                "/v1/messages, OpenAI's elsewhere."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": _error_responses(),
            "headers": {"RequestId": {"description": "req_ and 24 hex digits, new for each "
                                                     "request; "
                                                     "also in X-LLM-Router-Request-Id.",
                                      "schema": {"type": "string"}}},
            "securitySchemes": _SCHEMES,
        },
    }
