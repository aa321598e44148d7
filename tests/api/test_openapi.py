"""``GET /openapi.json``: public, valid OpenAPI 3.1, the same document whatever the
configuration, free of secrets, and describing every route the app serves (a route added
without a description fails here) with the bodies its validators check."""

from __future__ import annotations

import re

from openapi_spec_validator import validate
from router_harness import make_config
from support_routing import model_entry, open_router_client, provider_key

from api.http.app import create_app
from api.http.openapi import openapi_document
from engine.testing.fake_upstream import open_fake_upstream
from engine.wire import ANTHROPIC, OPENAI, to_schema

ADMIN = "admin-key-for-openapi-0123456789"
CLIENT = "client-key-for-openapi-0123456789"
_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


def _served_routes() -> set[tuple[str, str]]:
    config = make_config({"models": [{"name": "m", "provider": "openai", "model": "x",
                                      "base_url": "http://127.0.0.1:9", "tier": 1}]})
    app = create_app(config)
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        routes |= {(method.lower(), path) for method in rule.methods & _METHODS}
    return routes


def test_every_route_the_app_serves_is_described_and_nothing_else() -> None:
    document = openapi_document()
    described = {(method, path) for path, item in document["paths"].items()
                 for method in item}
    assert described == _served_routes()


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(openapi_document())


def test_the_chat_bodies_are_the_declarations_the_parsers_read() -> None:
    paths = openapi_document()["paths"]

    def body(path: str) -> object:
        return paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]

    assert body("/v1/chat/completions") == to_schema(OPENAI.request_body)
    assert body("/v1/messages") == to_schema(ANTHROPIC.request_body)
    assert body("/v1/admin/keys")["additionalProperties"] is False  # pydantic's extra=forbid


def test_the_headers_that_change_an_answer_are_described() -> None:
    paths = openapi_document()["paths"]

    def headers(method: str, path: str) -> set[str]:
        return {p["name"] for p in paths[path][method].get("parameters", ())
                if p["in"] == "header"}

    assert {"Idempotency-Key", "Prefer", "Cache-Control"} <= headers("post", "/v1/workflows")
    assert "Last-Event-ID" in headers("get", "/v1/workflows/runs/{run_id}/events")
    assert "Cache-Control" in headers("post", "/v1/chat/completions")


def test_errors_are_described_in_each_endpoints_protocol() -> None:
    paths = openapi_document()["paths"]
    assert paths["/v1/messages"]["post"]["responses"]["4XX"]["$ref"].endswith(
        "/AnthropicError")
    assert paths["/v1/chat/completions"]["post"]["responses"]["4XX"]["$ref"].endswith(
        "/OpenAIError")
    admin = paths["/v1/admin/keys"]["post"]
    assert admin["security"] == [{"adminBearer": []}, {"adminApiKey": []}]


async def test_it_is_served_publicly_and_carries_no_secret() -> None:
    async with open_fake_upstream() as fake, open_router_client(
            [model_entry(fake, "model-q7x", tier=1)],
            server={"admin_key": ADMIN, "api_keys": [CLIENT]}) as client:
        refused = await client.request("GET", "/v1/models")
        served = await client.request("GET", "/openapi.json")
    assert refused.status_code == 401
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/json"
    assert served.json() == openapi_document()  # the same whatever the configuration
    for secret in (ADMIN, CLIENT, provider_key("model-q7x"), "model-q7x"):
        assert secret not in served.text
