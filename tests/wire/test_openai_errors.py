"""OpenAI's error object both ways (``engine.wire.openai.errors``): an upstream's error read
into a message, and the router's errors written for clients, checked by the official SDK.
"""

from __future__ import annotations

import openai
import orjson
import pytest
from support_openai_wire import (
    PROVIDER,
    QUESTION,
    SDK_MESSAGES,
    decode,
    exchange,
    json_response,
    sdk_client,
)

from engine.errors import (
    ModelNotFound,
    NoBackendAvailable,
    PayloadTooLarge,
    RateLimited,
    RequestInvalid,
    RouterError,
    Unauthorized,
    UpstreamError,
)
from engine.testing.fake_upstream import Behaviour, FakeUpstream
from engine.wire.openai.errors import render_error

# ---- reading an upstream's error: error_message --------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, b'{"error": {"message": "bad tool", "type": "invalid_request_error"}}',
         "invalid_request_error: bad tool"),
        (400, b'{"object": "error", "message": "too long", "code": 400}', "too long"),
        (404, b'{"error": "model not found"}', "model not found"),
        (502, b"<html>Bad Gateway</html>", "upstream returned HTTP 502"),
        (500, b"", "upstream returned HTTP 500"),
        (500, b'{"error": {"type": "server_error"}}', "server_error"),
    ],
)
def test_error_message(status: int, body: bytes, expected: str) -> None:
    assert PROVIDER.error_message(status, body) == expected


def test_error_message_is_whole() -> None:
    """The codec quotes the upstream whole: the transport scrubs, then shortens."""
    body = orjson.dumps({"error": {"message": "x" * 1000}})
    assert PROVIDER.error_message(400, body) == "x" * 1000


def test_an_error_body_with_status_200_is_an_error() -> None:
    body = b'{"error": {"type": "server_error", "message": "overloaded"}}'
    with pytest.raises(UpstreamError) as info:
        PROVIDER.parse_result(body)
    assert info.value.message == "upstream sent an error: server_error: overloaded"


# ---- writing a client's error: render_error ------------------------------------------------------


@pytest.mark.parametrize(
    ("err", "status", "kind", "sdk_error"),
    [
        (
            RequestInvalid("bad", param="messages[0]"),
            400,
            "invalid_request_error",
            openai.BadRequestError,
        ),
        (ModelNotFound("no model"), 404, "invalid_request_error", openai.NotFoundError),
        (PayloadTooLarge("too big"), 413, "invalid_request_error", openai.APIStatusError),
        (Unauthorized("who?"), 401, "authentication_error", openai.AuthenticationError),
        (RateLimited("slow down"), 429, "rate_limit_error", openai.RateLimitError),
        (UpstreamError("broke"), 502, "server_error", openai.InternalServerError),
        (NoBackendAvailable("none"), 503, "server_error", openai.InternalServerError),
        (RouterError("oops"), 500, "server_error", openai.InternalServerError),
    ],
)
def test_errors_render_as_openai_error_objects(
    err: RouterError, status: int, kind: str, sdk_error: type[openai.APIStatusError]
) -> None:
    body = render_error(err)
    assert orjson.loads(body) == {
        "error": {"message": err.message, "type": kind, "param": err.param, "code": err.code}
    }
    client = sdk_client(lambda request: json_response(body, status=err.status))
    assert err.status == status
    with pytest.raises(sdk_error) as info:
        client.chat.completions.create(model="m", messages=SDK_MESSAGES)
    assert info.value.status_code == status
    assert info.value.code == err.code
    assert info.value.param == err.param
    assert info.value.type == kind


# ---- the codec against the fake upstream, over real sockets --------------------------------------


async def test_codec_errors_against_the_fake_upstream(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script("b", Behaviour(status=400), Behaviour(error_event_after=1))
    rejected = await exchange(fake_upstream, QUESTION, stream=False)
    assert rejected.status_code == 400
    assert PROVIDER.error_message(400, rejected.content) != "upstream returned HTTP 400"
    broken = await exchange(fake_upstream, QUESTION, stream=True)
    with pytest.raises(UpstreamError):
        decode(broken.content)
