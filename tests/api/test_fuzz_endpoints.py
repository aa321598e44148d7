"""Every endpoint, fuzzed: requests built from valid bodies with fields removed, replaced by
arbitrary JSON or added, arbitrary JSON and bytes, odd path parameters and query strings,
with and without credentials. None may get a 5xx, every refusal is an error object in its
endpoint's protocol (Anthropic's on /v1/messages, OpenAI's elsewhere), and nothing is logged
as an internal error. Hand-made edge cases (deep nesting, huge numbers, invalid UTF-8,
oversized bodies) stay in test_errors.py; this keeps new endpoints honest."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support_routing import model_entry, open_router_client

from engine.testing.fake_upstream import open_fake_upstream

ADMIN = "admin-key-for-fuzzing-012345"

_TEXT = st.text(max_size=30)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | _TEXT
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)
_ID = (st.sampled_from(["run_0", "key_0000000000000000", "small", "auto", "%2e%2e", "x" * 300,
                        "..", "a%20b"])
       | st.text(min_size=1, max_size=40).map(lambda t: quote(t, safe="")))

_CHAT = {"model": "auto", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}
_MESSAGES = {"model": "small", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]}
_WORKFLOW = {"workflow": "ops: {a: {prompt: Hi, model: small}}", "input": "x"}
_FEEDBACK = {"score": 0.5, "tier": 1, "quality": 0.9}
_KEY = {"name": "fuzz", "rpm": 100, "budget_usd": 1.0, "models": ["auto"]}


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: Any = None  # JSON, or bytes sent as they are
    auth: str | None = None  # "admin", "none", or None: the test's client key

    @property
    def anthropic(self) -> bool:
        return self.path.startswith("/v1/messages")


@st.composite
def _mutated(draw: st.DrawFn, valid: dict[str, Any]) -> Any:
    body: Any = dict(valid)
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["drop", "replace", "add", "nest"]))
        keys = list(body) if isinstance(body, dict) else []
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


def _body(valid: dict[str, Any]) -> st.SearchStrategy[Any]:
    return (_mutated(valid) | _JSON | st.binary(max_size=64)
            | st.builds(lambda b: json.dumps(valid).encode()[: b], st.integers(0, 40)))


_CALLS = st.one_of(
    st.builds(Call, st.just("POST"), st.just("/v1/chat/completions"), _body(_CHAT)),
    st.builds(Call, st.just("POST"), st.just("/v1/messages"), _body(_MESSAGES)),
    st.builds(Call, st.just("POST"), st.just("/v1/workflows"), _body(_WORKFLOW)),
    st.builds(Call, st.just("POST"), st.builds("/v1/workflows/{}".format, _ID),
              _body({"input": "x"})),
    st.builds(Call, st.just("POST"), st.just("/v1/feedback"), _body(_FEEDBACK)),
    st.builds(Call, st.just("GET"), st.builds(
        lambda status, limit: "/v1/workflows/runs?" + urlencode({"status": status,
                                                                 "limit": limit}),
        _TEXT, _TEXT | st.integers())),
    st.builds(Call, st.sampled_from(["GET", "POST"]), st.builds(
        "/v1/workflows/runs/{}{}".format, _ID, st.sampled_from(["", "/events", "/cancel"])),
        _JSON),
    st.builds(Call, st.sampled_from(["POST", "GET"]), st.just("/v1/admin/keys"), _body(_KEY),
              st.sampled_from(["admin", "none", None])),
    st.builds(Call, st.sampled_from(["GET", "PATCH", "DELETE"]),
              st.builds("/v1/admin/keys/{}".format, _ID), _body(_KEY),
              st.sampled_from(["admin", "none", None])),
    st.builds(Call, st.just("GET"), st.sampled_from(
        ["/v1/models", "/v1/backends", "/v1/routing", "/stats", "/health", "/v1/workflows"])),
    st.builds(Call, st.just("GET"), st.builds("/v1/models/{}".format, _ID)),
    st.builds(Call, st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
              st.builds("/v1/{}".format, _ID), _JSON),
)


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _check(call: Call, response: httpx.Response) -> None:
    where = (call, response.status_code, response.text[:300])
    assert response.status_code < 500 or response.status_code == 503, where
    assert b"internal_error" not in response.content, where
    if response.status_code < 400:
        return
    body = response.json()
    if call.anthropic:
        assert body["type"] == "error" and body["error"]["type"], where
        assert body["error"]["message"], where
    else:
        assert body["error"]["message"] and body["error"]["type"], where
        assert "code" in body["error"], where


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_CALLS, min_size=10, max_size=40))
async def test_no_endpoint_answers_a_fuzzed_request_with_a_5xx(calls: list[Call]) -> None:
    errors = _Errors()
    logger = logging.getLogger("llm_router")
    logger.addHandler(errors)
    try:
        async with open_fake_upstream() as fake, open_router_client(
                [model_entry(fake, "small", tier=1)], server={"admin_key": ADMIN}) as client:
            made = await client.request("POST", "/v1/admin/keys", json={"name": "fuzzer"},
                                        headers={"authorization": f"Bearer {ADMIN}"})
            secret = made.json()["key"]
            for call in calls:
                token = {"admin": ADMIN, "none": None}.get(call.auth or "", secret)
                headers = {"authorization": f"Bearer {token}"} if token else {}
                if call.anthropic:
                    headers["anthropic-version"] = "2023-06-01"
                if isinstance(call.body, bytes):
                    content = call.body
                else:
                    # json, not orjson: integers past 64 bits are fair game too.
                    content = json.dumps(call.body).encode() if call.body is not None else b""
                response = await client.http.request(
                    call.method, client.url + call.path, content=content,
                    headers=headers | {"content-type": "application/json"}, timeout=10)
                _check(call, response)
    finally:
        logger.removeHandler(errors)
    assert [r.getMessage() for r in errors.records] == []
