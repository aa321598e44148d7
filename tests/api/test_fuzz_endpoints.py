"""Every endpoint fuzzed from the router's own ``/openapi.json``, the admin API first: each
operation the document lists gets requests built from its schemas (path and query
parameters, headers, a body valid by the schema, the same body mutated, arbitrary JSON or
bytes), as the admin, as a client key, or with no credential, over real HTTP against a
running router with keys configured. None may get a 5xx (a 503 from a missing backend
aside), every error is an error object valid by the schema the document gives for that
operation's errors (Anthropic's on /v1/messages, OpenAI's elsewhere), every success status
is one the document lists, with a JSON body valid by its schema, and nothing is logged as
an internal error. A route the app serves without a description fails test_openapi.py, so
a new endpoint is fuzzed from the day it is added.

Bounded for CI (``LLM_ROUTER_FUZZ_EXAMPLES`` examples of up to 30 requests each, 20 by
default); set it higher for a longer run. The hand-made edge cases (deep nesting, huge
numbers, NaN, invalid UTF-8, oversized bodies) stay in test_errors.py and test_secrets.py.
"""

from __future__ import annotations

import json
import logging
import os
import re
import string
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from schema_strategies import from_schema
from support_routing import model_entry, open_router_client

from engine.testing.fake_upstream import open_fake_upstream

ADMIN = "admin-key-for-fuzzing-012345"
EXAMPLES = int(os.environ.get("LLM_ROUTER_FUZZ_EXAMPLES", "20"))
_SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_TEXT = st.text(max_size=30)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | _TEXT
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)
_HEADER_TEXT = st.text(alphabet=string.printable.strip(" \t\n\r\x0b\x0c") + " ", max_size=40)
_ODD_IDS = st.sampled_from(["run_0", "key_0000000000000000", "auto", "%2e%2e", "x" * 300,
                            "a%20b", "a/b"])


class Operation:
    """One operation of the document (shown by its method and path alone)."""

    def __init__(self, method: str, path: str, spec: dict[str, Any],
                 document: dict[str, Any]) -> None:
        self.method, self.path, self.spec, self.document = method, path, spec, document

    def __repr__(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def body_schema(self) -> dict[str, Any] | None:
        body = self.spec.get("requestBody")
        return body["content"]["application/json"]["schema"] if body else None

    def parameters(self, where: str) -> list[dict[str, Any]]:
        return [p for p in self.spec.get("parameters", ()) if p["in"] == where]

    def validator(self, schema: dict[str, Any]) -> Draft202012Validator:
        """Validates against ``schema``, its ``#/components/...`` references resolved in
        the document."""
        return Draft202012Validator(schema | {"components": self.document["components"]})

    def error_schema(self) -> dict[str, Any]:
        ref = self.spec["responses"]["4XX"]["$ref"].removeprefix("#/")
        response: Any = self.document
        for part in ref.split("/"):
            response = response[part]
        schema: dict[str, Any] = response["content"]["application/json"]["schema"]
        return schema


@dataclass(frozen=True)
class Call:
    operation: Operation
    path: str
    headers: dict[str, str]
    body: Any  # JSON, bytes sent as they are, or None for no body
    auth: str  # "admin", "client" or "none"


def operations(document: dict[str, Any]) -> list[Operation]:
    """The document's operations in its order (the admin API first)."""
    return [Operation(method.upper(), path, spec, document)
            for path, item in document["paths"].items() for method, spec in item.items()]


_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@st.composite
def stray_call(draw: st.DrawFn, document: dict[str, Any]) -> Call:
    """A path the document does not list, or a listed path with a method it does not take:
    404 or 405, as an error object in the path's protocol."""
    templates = [(re.compile("^" + re.sub(r"\{[a-z_]+\}", "[^/]+", path) + "$"),
                  {m.upper() for m in item}) for path, item in document["paths"].items()]
    path = draw(st.sampled_from([p for p in document["paths"] if "{" not in p]) | st.builds(
        "/v1/nothing-{}".format, st.text(max_size=20).map(lambda t: quote(t, safe=""))))
    served = set().union(*(methods for pattern, methods in templates if pattern.match(path)))
    method = draw(st.sampled_from([m for m in _METHODS if m not in served]))
    shape = "AnthropicError" if path.startswith("/v1/messages") else "OpenAIError"
    spec = {"responses": {"4XX": {"$ref": f"#/components/responses/{shape}"}}}
    return Call(Operation(method, path, spec, document), path, {}, draw(_JSON),
                draw(st.sampled_from(["admin", "client", "none"])))


@st.composite
def _mutated(draw: st.DrawFn, valid: Any) -> Any:
    body: Any = dict(valid) if isinstance(valid, dict) else valid
    for _ in range(draw(st.integers(1, 3))):
        keys = list(body) if isinstance(body, dict) else []
        kind = draw(st.sampled_from(["drop", "replace", "add", "nest"]))
        if kind == "drop" and keys:
            body.pop(draw(st.sampled_from(keys)))
        elif kind == "replace" and keys:
            body[draw(st.sampled_from(keys))] = draw(_JSON)
        elif kind == "add" and isinstance(body, dict):
            body[draw(_TEXT)] = draw(_JSON)
        elif kind == "nest" and keys:
            name = draw(st.sampled_from(keys))
            body[name] = [body[name], draw(_JSON)]
    return body


def _body(op: Operation) -> st.SearchStrategy[Any]:
    schema = op.body_schema
    if schema is None:
        return st.none() | _JSON | st.binary(max_size=32)
    valid = from_schema(schema, root=op.document)
    return st.one_of(
        valid, valid.flatmap(_mutated), _JSON, st.binary(max_size=64),
        st.builds(lambda v, n: json.dumps(v).encode()[:n], valid, st.integers(0, 60)),
    )


def _value(parameter: dict[str, Any], document: dict[str, Any]) -> st.SearchStrategy[str]:
    schema = parameter["schema"]
    typed = from_schema(schema, root=document).map(
        lambda v: json.dumps(v) if isinstance(v, bool) else str(v))
    if parameter["in"] == "header":  # what HTTP can carry in a header
        return typed.filter(lambda v: v.isascii() and v.isprintable()) | _HEADER_TEXT
    return typed | _TEXT


@st.composite
def call_of(draw: st.DrawFn, op: Operation, known_ids: tuple[str, ...]) -> Call:
    path = op.path
    for parameter in op.parameters("path"):
        value = draw(st.sampled_from(known_ids) | _ODD_IDS
                     # "." and "..": the client would resolve them, asking another path
                     | st.text(min_size=1, max_size=40).filter(lambda t: t.strip(".")))
        path = path.replace("{" + parameter["name"] + "}", quote(value, safe=""))
    query = {p["name"]: draw(_value(p, op.document)) for p in op.parameters("query")
             if draw(st.booleans())}
    if query:
        path += "?" + urlencode(query)
    headers = {p["name"]: value for p in op.parameters("header")
               if draw(st.booleans()) and (value := draw(_value(p, op.document)).strip())}
    return Call(op, path, headers, draw(_body(op)),
                draw(st.sampled_from(["admin", "client", "none"])))


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _check(call: Call, response: httpx.Response) -> None:
    op = call.operation
    body = b"" if _endless(response) else response.content
    where = (op.method, call.path, call.headers, call.body, call.auth, response.status_code,
             body[:300])
    assert response.status_code < 500 or response.status_code == 503, where
    assert b"internal_error" not in body, where
    if "summary" not in op.spec:  # a stray call
        assert response.status_code in (404, 405), where
    if response.status_code >= 400:
        errors = list(op.validator(op.error_schema()).iter_errors(response.json()))
        assert not errors, (where, errors[0].message)
        return
    answer = op.spec["responses"].get(str(response.status_code))
    assert answer is not None, ("an answer the document does not list", where)
    content = answer["content"]
    media_type = response.headers["content-type"].split(";")[0]
    assert media_type in content, where
    if media_type == "application/json":
        errors = list(op.validator(content[media_type]["schema"]).iter_errors(response.json()))
        assert not errors, (where, errors[0].message)


def _endless(response: httpx.Response) -> bool:
    """The dashboard's event stream runs until its client leaves: its head is what is
    checked."""
    return (response.request.url.path == "/stats/events" and response.status_code == 200
            and response.headers["content-type"] == "text/event-stream")


async def _fuzz(data: st.DataObject, admin_only: bool) -> None:
    log = _Errors()
    logger = logging.getLogger("llm_router")
    logger.addHandler(log)
    try:
        async with open_fake_upstream() as fake, open_router_client(
                [model_entry(fake, "small", tier=1)], server={"admin_key": ADMIN}) as client:
            document = (await client.request("GET", "/openapi.json")).json()
            made = await client.request("POST", "/v1/admin/keys", json={"name": "fuzzer"},
                                        headers={"authorization": f"Bearer {ADMIN}"})
            tokens = {"admin": ADMIN, "client": made.json()["key"], "none": None}
            known = (made.json()["id"], "small", "auto")
            ops = [op for op in operations(document)
                   if not admin_only or op.path.startswith("/v1/admin/")]
            described = st.sampled_from(ops).flatmap(lambda op: call_of(op, known))
            calls = data.draw(st.lists(
                described if admin_only else described | stray_call(document),
                min_size=10, max_size=30))
            for call in calls:
                token = tokens[call.auth]
                headers = dict(call.headers) | {"content-type": "application/json"}
                if token is not None:
                    headers["authorization"] = f"Bearer {token}"
                if call.operation.path == "/v1/messages":
                    headers.setdefault("anthropic-version", "2023-06-01")
                body = call.body
                # json, not orjson: integers past 64 bits are fair game too.
                content = (body if isinstance(body, bytes)
                           else b"" if body is None else json.dumps(body).encode())
                request = client.http.build_request(
                    call.operation.method, client.url + call.path, content=content,
                    headers=headers, timeout=10)
                response = await client.http.send(request, stream=True)
                try:
                    if not _endless(response):
                        await response.aread()
                finally:
                    await response.aclose()
                _check(call, response)
    finally:
        logger.removeHandler(log)
    assert [r.getMessage() for r in log.records] == []


@_SETTINGS
@given(st.data())
async def test_the_admin_api_fuzzed_from_its_schema(data: st.DataObject) -> None:
    await _fuzz(data, admin_only=True)


@_SETTINGS
@given(st.data())
async def test_every_endpoint_fuzzed_from_the_document(data: st.DataObject) -> None:
    await _fuzz(data, admin_only=False)
