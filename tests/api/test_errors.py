"""Errors as clients see them: every bad request is a 4xx in the caller's protocol (an OpenAI
``{"error": {...}}`` on ``/v1/chat/completions``, an Anthropic ``{"type": "error", ...}`` on
``/v1/messages``), never a 500, and the server keeps serving; upstream errors map to sensible
statuses; client keys are enforced; provider keys never leave the router.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
import trio
from support_routing import RouterClient, model_entry, open_router_client, provider_key, user

from engine.testing.fake_upstream import Behaviour, FakeUpstream

OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert {"message", "type", "param", "code"} <= error.keys()
    assert isinstance(error["message"], str) and error["message"]
    assert "x-llm-router-request-id" in response.headers
    return error


def assert_anthropic_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["type"] == "error"
    error: dict[str, Any] = body["error"]
    assert isinstance(error["type"], str) and error["type"]
    assert isinstance(error["message"], str) and error["message"]
    return error


ASSERT_ERROR: dict[str, Callable[[httpx.Response, int], dict[str, Any]]] = {
    OPENAI_PATH: assert_openai_error,
    ANTHROPIC_PATH: assert_anthropic_error,
}


@pytest.fixture
async def client(fake_upstream: FakeUpstream) -> AsyncIterator[RouterClient]:
    models = [model_entry(fake_upstream, "a1", tier=1),
              model_entry(fake_upstream, "a2", tier=1, provider="anthropic", cost_per_1k_in=1)]
    async with open_router_client(models, server={"max_body_bytes": 1024}) as running:
        yield running


async def still_serving(client: RouterClient) -> None:
    assert (await client.request("GET", "/health")).status_code == 200
    assert (await client.chat("still there?")).status_code == 200
    assert (await client.messages("still there?")).status_code == 200


# ---- malformed requests -----------------------------------------------------------------------

BAD_OPENAI_BODIES: list[tuple[bytes, str | None]] = [
    (b"", None),
    (b"{bad json", None),
    (b"[]", None),
    (b'"a string"', None),
    (b"null", None),
    (b'{"model": "auto"}', "messages"),
    (b'{"messages": "hello"}', "messages"),
    (b'{"messages": []}', "messages"),
    (b'{"messages": [{"role": "user"}]}', None),
    (b'{"messages": [{"role": "wizard", "content": "hi"}]}', None),
    (b'{"messages": [{"role": "user", "content": 42}]}', None),
    (b'{"model": 7, "messages": [{"role": "user", "content": "hi"}]}', "model"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}', "stream"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}', "max_tokens"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "tools": {}}', "tools"),
    (b"\xff\xfe\x00", None),
]

BAD_ANTHROPIC_BODIES: list[bytes] = [
    b"",
    b"{bad json",
    b"[1, 2]",
    b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}',  # no max_tokens
    b'{"model": "auto", "max_tokens": 5}',
    b'{"model": "auto", "max_tokens": 5, "messages": "hi"}',
    b'{"model": "auto", "max_tokens": "five", "messages": [{"role": "user", "content": "hi"}]}',
    b'{"model": "auto", "max_tokens": 5, "messages": [{"role": "system", "content": "hi"}]}',
    b'{"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": [{}]}]}',
    b'{"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], "system": 3}',
]


async def test_malformed_openai_requests_are_400_openai_errors(client: RouterClient) -> None:
    for body, param in BAD_OPENAI_BODIES:
        response = await client.request("POST", OPENAI_PATH, content=body,
                                        headers={"content-type": "application/json"})
        error = assert_openai_error(response, 400)
        assert error["type"] == "invalid_request_error", body
        assert error["code"] == "invalid_request", body
        if param is not None:
            assert error["param"] == param, (body, error)
    await still_serving(client)


async def test_malformed_anthropic_requests_are_400_anthropic_errors(client: RouterClient
                                                                     ) -> None:
    for body in BAD_ANTHROPIC_BODIES:
        response = await client.request("POST", ANTHROPIC_PATH, content=body,
                                        headers={"content-type": "application/json"})
        error = assert_anthropic_error(response, 400)
        assert error["type"] == "invalid_request_error", body
    await still_serving(client)


async def test_the_sdks_see_a_bad_request_error(client: RouterClient) -> None:
    async with openai.AsyncOpenAI(base_url=client.router.v1, api_key="k", max_retries=0) as sdk:
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.chat.completions.create(model="auto", messages=[])
    assert caught.value.status_code == 400

    async with anthropic.AsyncAnthropic(base_url=client.url, api_key="k", max_retries=0) as sdk:
        with pytest.raises(anthropic.BadRequestError):
            await sdk.messages.create(model="auto", max_tokens=0, messages=user("hi"))


@pytest.mark.parametrize("path", [OPENAI_PATH, ANTHROPIC_PATH])
async def test_unknown_model_is_404_in_the_callers_protocol(client: RouterClient, path: str
                                                            ) -> None:
    body = {"model": "no-such-model", "max_tokens": 5, "messages": user("hi")}
    error = ASSERT_ERROR[path](await client.request("POST", path, json=body), 404)
    assert "no-such-model" in error["message"]
    await still_serving(client)


@pytest.mark.parametrize("path", [OPENAI_PATH, ANTHROPIC_PATH])
async def test_a_huge_model_name_is_not_echoed_back_whole(fake_upstream: FakeUpstream,
                                                          path: str) -> None:
    async with open_router_client([model_entry(fake_upstream, "a1", tier=1)]) as client:
        body = {"model": "m" * 20_000, "max_tokens": 5, "messages": user("hi")}
        error = ASSERT_ERROR[path](await client.request("POST", path, json=body), 404)
    assert len(error["message"]) < 400
    assert "'mmmm" in error["message"] and "… (20000 characters)" in error["message"]


@pytest.mark.parametrize("path", [OPENAI_PATH, ANTHROPIC_PATH])
async def test_oversized_body_is_413_in_the_callers_protocol(client: RouterClient, path: str
                                                             ) -> None:
    big = orjson.dumps({"model": "auto", "max_tokens": 5, "messages": user("x" * 2000)})
    response = await client.request("POST", path, content=big)
    error = ASSERT_ERROR[path](response, 413)
    assert "1024" in error["message"]
    # The body was refused unread: the connection ends with this answer, so the client does
    # not send its next request behind the rest of it.
    assert response.headers["connection"] == "close"

    # No Content-Length: the limit still holds. The answer may come before the client has
    # sent every chunk, so the chunks are a stream that needs no closing (httpx wraps any
    # other iterable in an async generator, which would be dropped unfinished).
    request = client.http.build_request("POST", client.url + path)
    request.stream = _Chunks([big[start:start + 256] for start in range(0, len(big), 256)])
    request.headers["transfer-encoding"] = "chunked"
    response = await client.http.send(request)
    ASSERT_ERROR[path](response, 413)
    assert response.headers["connection"] == "close"

    small = orjson.dumps({"model": "auto", "max_tokens": 5, "messages": user("x" * 500)})
    assert (await client.request("POST", path, content=small)).status_code == 200
    await still_serving(client)


class _Chunks(httpx.AsyncByteStream):
    """A request body sent in ``chunks``, iterated without an async generator."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = iter(chunks)

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        await trio.lowlevel.checkpoint()
        try:
            return next(self._chunks)
        except StopIteration:
            raise StopAsyncIteration from None


@pytest.mark.parametrize(
    ("method", "path", "status", "protocol"),
    [
        ("GET", "/v1/nope", 404, OPENAI_PATH),
        ("POST", "/v1/completions", 404, OPENAI_PATH),
        ("GET", "/", 404, OPENAI_PATH),
        ("POST", "/v1/messages/batches", 404, ANTHROPIC_PATH),
        ("GET", OPENAI_PATH, 405, OPENAI_PATH),
        ("PUT", OPENAI_PATH, 405, OPENAI_PATH),
        ("GET", ANTHROPIC_PATH, 405, ANTHROPIC_PATH),
        ("DELETE", ANTHROPIC_PATH, 405, ANTHROPIC_PATH),
        ("POST", "/health", 405, OPENAI_PATH),
        ("POST", "/v1/backends", 405, OPENAI_PATH),
    ],
)
async def test_unknown_routes_and_wrong_methods(
    client: RouterClient, method: str, path: str, status: int, protocol: str
) -> None:
    answer = await client.request(method, path)
    ASSERT_ERROR[protocol](answer, status)
    if status == 405:  # RFC 9110: with the methods the path takes
        allowed = {m.strip() for m in answer.headers["allow"].split(",")}
        assert ("POST" if path.startswith("/v1/") and path.endswith(("completions", "messages"))
                else "GET") in allowed and method not in allowed
    await still_serving(client)


# ---- upstream errors --------------------------------------------------------------------------


@pytest.mark.parametrize("path", [OPENAI_PATH, ANTHROPIC_PATH])
async def test_upstream_400_is_400_without_failover(
    fake_upstream: FakeUpstream, client: RouterClient, path: str
) -> None:
    fake_upstream.script("a1", Behaviour(status=400))
    body = {"model": "auto", "max_tokens": 5, "messages": user("hi")}
    error = ASSERT_ERROR[path](await client.request("POST", path, json=body), 400)
    assert "a1" in error["message"]
    assert fake_upstream.requests("a2") == []  # another backend would reject it too
    assert (await client.backends())["a1"]["status"] == "healthy"  # not the backend's fault


async def test_upstream_401_is_the_backends_fault_and_fails_over(
    fake_upstream: FakeUpstream, client: RouterClient
) -> None:
    fake_upstream.script("a1", Behaviour(status=401))
    response = await client.chat()
    assert response.status_code == 200
    assert response.headers["x-llm-router-model"] == "a2"
    assert (await client.backends())["a1"]["status"] == "degraded"


@pytest.mark.parametrize(("upstream", "routed"), [(401, 503), (500, 503), (502, 503),
                                                  (503, 503)])
async def test_upstream_401_and_5xx_statuses(
    fake_upstream: FakeUpstream, client: RouterClient, upstream: int, routed: int
) -> None:
    # Pinned: the upstream's failure, as a bad gateway (never its 401: the client's key is fine).
    fake_upstream.script("a1", Behaviour(status=upstream))
    error = assert_openai_error(await client.chat(model="a1"), 502)
    assert error["code"] == "upstream_error"
    assert f"a1 answered {upstream}" in error["message"]

    # Routed, with every backend failing: nothing could serve it.
    fake_upstream.script("a1", Behaviour(status=upstream))
    fake_upstream.script("a2", Behaviour(status=upstream))
    error = assert_anthropic_error(await client.messages(), routed)
    assert "a1" in error["message"] and "a2" in error["message"]


async def test_a_503_says_when_to_come_back(fake_upstream: FakeUpstream,
                                            client: RouterClient) -> None:
    # Every backend overloaded: the SDKs see their 5xx error, with a Retry-After they honour.
    fake_upstream.set_default("a1", Behaviour(status=503, retry_after=30))
    fake_upstream.set_default("a2", Behaviour(status=529))
    async with openai.AsyncOpenAI(base_url=client.router.v1, api_key="k", max_retries=0) as oai:
        with pytest.raises(openai.InternalServerError) as failed:
            await oai.chat.completions.create(model="auto", messages=user("hi"))
    assert failed.value.status_code == 503
    assert failed.value.body["code"] == "no_backend_available"  # type: ignore[index]
    assert int(failed.value.response.headers["retry-after"]) >= 1

    # Then both are down until their probe: the wait is known, and said.
    for _ in range(3):
        await client.messages()
    assert {b["status"] for b in (await client.backends()).values()} == {"down"}
    async with anthropic.AsyncAnthropic(base_url=client.url, api_key="k",
                                        max_retries=0) as claude:
        with pytest.raises(anthropic.InternalServerError) as refused:
            await claude.messages.create(model="auto", max_tokens=5, messages=user("hi"))
    assert refused.value.status_code == 503
    assert refused.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    next_probe = min(b["next_probe_in_sec"] for b in (await client.backends()).values())
    assert abs(int(refused.value.response.headers["retry-after"]) - next_probe) <= 1


def routing_headers(response: httpx.Response) -> dict[str, str]:
    return {k.removeprefix("x-llm-router-"): v for k, v in response.headers.items()
            if k in ("x-llm-router-score", "x-llm-router-tier", "x-llm-router-model",
                     "x-llm-router-cache", "x-llm-router-router")}


async def test_a_request_that_fails_after_routing_says_where_it_was_routed(
    fake_upstream: FakeUpstream, client: RouterClient
) -> None:
    # Every response carries the routing headers, a failed one too once it was routed.
    fake_upstream.set_default("a1", Behaviour(status=500))
    fake_upstream.set_default("a2", Behaviour(status=500))
    question = "a question that fails everywhere"

    # Pinned: the model named, and who decided.
    pinned = await client.chat(question, model="a2")
    assert_openai_error(pinned, 502)
    assert routing_headers(pinned) | {"score": ""} == {
        "score": "", "tier": "1", "model": "a2", "cache": "MISS", "router": "pinned"}

    routed = await client.chat(question)
    assert_openai_error(routed, 503)
    headers = routing_headers(routed)
    assert headers.keys() == {"score", "tier", "model", "cache", "router"}
    assert headers["tier"] == "1" and headers["cache"] == "MISS"
    assert headers["score"].isdigit() and headers["router"].startswith("heuristic")
    assert headers["model"] in {"a1", "a2"}  # the last one tried

    # The same, streamed (refused before its first byte) and in the Anthropic protocol.
    streamed, _ = await client.stream_chat(question)
    assert streamed.status_code == 503
    anthropic_routed = await client.messages(question)
    assert_anthropic_error(anthropic_routed, 503)
    for failed in (streamed, anthropic_routed):
        assert routing_headers(failed) | {"model": "?"} == headers | {"model": "?"}
        assert routing_headers(failed)["model"] in {"a1", "a2"}

    # Every backend down before it is tried: the model it would have gone to.
    assert {b["status"] for b in (await client.backends()).values()} == {"down"}
    down = await client.chat(question)
    assert_openai_error(down, 503)
    assert routing_headers(down) | {"model": "?"} == headers | {"model": "?"}
    assert routing_headers(down)["model"] in {"a1", "a2"}

    # Refused before routing: no routing headers.
    for refused in (await client.chat(model="nope"), await client.chat(max_tokens=-1)):
        assert refused.status_code in (400, 404)
        assert routing_headers(refused) == {}
        assert "x-llm-router-request-id" in refused.headers


# ---- client authentication --------------------------------------------------------------------


@pytest.fixture
async def guarded(fake_upstream: FakeUpstream) -> AsyncIterator[RouterClient]:
    models = [model_entry(fake_upstream, "a1", tier=1)]
    server = {"api_keys": ["client-key-1", "client-key-2"]}
    async with open_router_client(models, server=server) as running:
        yield running


async def test_client_key_is_required(guarded: RouterClient) -> None:
    body = {"model": "auto", "max_tokens": 5, "messages": user("hi")}
    for headers in ({}, {"x-api-key": "wrong"}, {"authorization": "Bearer wrong"},
                    {"authorization": "client-key-1"}, {"x-api-key": ""}):
        error = assert_openai_error(
            await guarded.request("POST", OPENAI_PATH, json=body, headers=headers), 401)
        assert error["type"] == "authentication_error"
        error = assert_anthropic_error(
            await guarded.request("POST", ANTHROPIC_PATH, json=body, headers=headers), 401)
        assert error["type"] == "authentication_error"


@pytest.mark.parametrize(
    "headers",
    [{"x-api-key": "client-key-1"}, {"authorization": "Bearer client-key-2"},
     {"authorization": "bearer client-key-1"}],
)
async def test_both_key_headers_are_accepted(
    fake_upstream: FakeUpstream, guarded: RouterClient, headers: dict[str, str]
) -> None:
    body = {"model": "auto", "max_tokens": 5, "messages": user("hi")}
    for path in (OPENAI_PATH, ANTHROPIC_PATH):
        response = await guarded.request("POST", path, json=body, headers=headers)
        assert response.status_code == 200, response.text
    # The client's key is the router's business: the provider gets the provider key.
    for recorded in fake_upstream.requests("a1"):
        assert recorded.headers["authorization"] == f"Bearer {provider_key('a1')}"


async def test_the_sdks_authenticate(guarded: RouterClient) -> None:
    async with openai.AsyncOpenAI(base_url=guarded.router.v1, api_key="client-key-1",
                                  max_retries=0) as sdk:
        done = await sdk.chat.completions.create(model="auto", messages=user("hi"))
        assert done.choices[0].message.content == "[a1] hi"
    async with anthropic.AsyncAnthropic(base_url=guarded.url, api_key="client-key-2",
                                        max_retries=0) as sdk:
        message = await sdk.messages.create(model="auto", max_tokens=5, messages=user("hi"))
        assert message.content[0].text == "[a1] hi"  # type: ignore[union-attr]
    async with anthropic.AsyncAnthropic(base_url=guarded.url, api_key="nope",
                                        max_retries=0) as sdk:
        with pytest.raises(anthropic.AuthenticationError):
            await sdk.messages.create(model="auto", max_tokens=5, messages=user("hi"))


async def test_every_response_carries_its_own_request_id(guarded: RouterClient) -> None:
    key = {"x-api-key": "client-key-1"}
    body = {"model": "auto", "max_tokens": 5, "messages": user("hi")}
    responses = [
        await guarded.request("POST", OPENAI_PATH, json=body, headers=key),
        await guarded.request("POST", ANTHROPIC_PATH, json=body, headers=key),
        await guarded.request("POST", OPENAI_PATH, json=body | {"stream": True}, headers=key),
        await guarded.request("POST", OPENAI_PATH, json=body | {"model": "none"}, headers=key),
        await guarded.request("POST", OPENAI_PATH, content=b"{", headers=key),
        await guarded.request("GET", "/v1/routing", headers=key),
        await guarded.request("GET", "/v1/models/a1", headers=key),
        await guarded.request("GET", "/health"),
        await guarded.request("GET", "/no/such/route"),
        await guarded.request("GET", ANTHROPIC_PATH),
    ]
    # Refused without a key, each in the caller's protocol.
    for path in ("/v1/routing", "/v1/backends", "/stats", "/v1/models", "/v1/workflows"):
        assert_openai_error(await guarded.request("GET", path), 401)
    assert_openai_error(await guarded.request("POST", "/v1/feedback", json={}), 401)
    assert_anthropic_error(await guarded.request("POST", ANTHROPIC_PATH, json=body), 401)
    assert_anthropic_error(await guarded.request(
        "GET", "/v1/models/a1", headers={"anthropic-version": "2023-06-01"}), 401)
    responses += [await guarded.request("GET", "/stats")]

    ids = []
    for response in responses:
        request_id = response.headers["x-llm-router-request-id"]
        assert response.headers["x-request-id"] == request_id, response.url
        assert request_id.startswith("req_") and len(request_id) == 28
        assert int(request_id[4:], 16) >= 0
        ids.append(request_id)
    assert len(set(ids)) == len(ids)
    assert [r.status_code for r in responses] == [200, 200, 200, 404, 400, 200, 200, 200, 404,
                                                  405, 401]


# ---- provider keys never leak -----------------------------------------------------------------

# Not shaped like a key, so only the exact-key scrub can catch it, not a pattern.
ECHOED_KEY = "zebra-quartz-lantern-9151"


async def serve_key_echoing_upstream(
    *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """An OpenAI-style upstream that repeats the caller's key in its error messages, as some
    self-hosted servers do: 401 for ``/v401/...``, 400 for ``/v400/...``, else 500."""

    async def handle(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        while len(body) < int(headers.get("content-length", "0")):
            body += await stream.receive_some(65536)
        path = lines[0].split(" ")[1]
        status = 401 if path.startswith("/v401/") else 400 if path.startswith("/v400/") else 500
        key = headers.get("authorization", "").removeprefix("Bearer ")
        payload = orjson.dumps({"error": {"message": f"Incorrect API key provided: {key}",
                                          "type": "invalid_request_error", "param": None,
                                          "code": "invalid_api_key"}})
        await stream.send_all(
            f"HTTP/1.1 {status} Error\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n".encode() + payload
        )
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        task_status.started(listeners[0].socket.getsockname()[1])


async def test_provider_keys_never_appear_in_responses_or_logs(
    fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_key_echoing_upstream)
        echo = f"http://127.0.0.1:{port}"
        models = [
            model_entry(fake_upstream, "e401", tier=1, base_url=f"{echo}/v401/v1",
                        api_key=ECHOED_KEY),
            model_entry(fake_upstream, "e400", tier=4, base_url=f"{echo}/v400/v1",
                        api_key=ECHOED_KEY),
            model_entry(fake_upstream, "e500", tier=2, base_url=f"{echo}/v500/v1",
                        api_key=ECHOED_KEY),
            model_entry(fake_upstream, "good", tier=3),
            model_entry(fake_upstream, "claude", tier=3, provider="anthropic"),
        ]
        async with open_router_client(models) as client:
            calls: list[Callable[[], Awaitable[httpx.Response]]] = [
                lambda: client.chat(model="e401"),
                lambda: client.messages(model="e400"),
                lambda: client.chat(model="e500"),
                lambda: client.chat(),  # routed: e401, then e500, then tier 3 answers
                lambda: client.messages(model="claude"),
                lambda: client.request("POST", OPENAI_PATH, content=b"{bad"),
                lambda: client.request("GET", "/v1/backends"),
                lambda: client.request("GET", "/stats"),
                lambda: client.request("GET", "/v1/models"),
            ]
            for call in calls:
                await call()
            await client.stream_chat(model="good")
            statuses = [seen.status for seen in client.seen]
        nursery.cancel_scope.cancel()

    assert statuses[:5] == [502, 400, 502, 200, 200], statuses
    assert "Incorrect API key provided" in client.seen[1].text  # the detail itself is kept
    secrets = [ECHOED_KEY, provider_key("good"), provider_key("claude")]
    for seen in client.seen:
        for secret in secrets:
            assert secret not in seen.text
            assert all(secret not in value for value in seen.headers.values())
    assert caplog.records, "expected some log output to scan"
    for secret in secrets:
        assert secret not in caplog.text
    # The keys were used: the fake upstream received them.
    assert fake_upstream.requests("claude")[0].headers["x-api-key"] == provider_key("claude")
