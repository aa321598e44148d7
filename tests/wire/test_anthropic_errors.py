"""Anthropic's error object both ways (``engine.wire.anthropic.errors``): an upstream's error
read into a message, and the router's errors written for clients, checked by the official SDK.
"""

from __future__ import annotations

import anthropic
import httpx2  # the installed anthropic SDK is built on httpx2, and rejects httpx objects
import orjson
import pytest
from support_anthropic_wire import PROVIDER, body, sdk_client

from engine.errors import RateLimited, RequestInvalid, RouterError, Unauthorized, UpstreamError
from engine.wire.anthropic.errors import error_type, render_error
from engine.wire.anthropic.request import parse_request

# ---- reading an upstream's error: error_message --------------------------------------------------


def test_error_message() -> None:
    error = b'{"type":"error","error":{"type":"invalid_request_error","message":"bad tools"}}'
    assert PROVIDER.error_message(400, error) == "invalid_request_error: bad tools"
    assert PROVIDER.error_message(502, b"<html>gateway</html>") == "upstream answered HTTP 502"
    assert PROVIDER.error_message(500, b'{"error": "plain"}') == "upstream answered HTTP 500"
    # Whole: the transport scrubs, then shortens.
    long = orjson.dumps({"error": {"message": "x" * 1000}})
    assert PROVIDER.error_message(400, long) == "x" * 1000


# ---- writing a client's error: render_error ------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ],
)
def test_error_type(status: int, kind: str) -> None:
    assert error_type(status) == kind


def test_render_error_names_the_param() -> None:
    err = RequestInvalid("must be a number", param="temperature")
    assert orjson.loads(render_error(err)) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "temperature: must be a number",
                  "code": "invalid_request"},
    }
    with pytest.raises(RequestInvalid) as info:
        parse_request(body(temperature="x"))
    assert orjson.loads(render_error(info.value))["error"]["message"] == (
        "temperature: must be a number"
    )


@pytest.mark.parametrize(
    ("err", "exception"),
    [
        (
            RequestInvalid("max_tokens: field required", param="max_tokens"),
            anthropic.BadRequestError,
        ),
        (Unauthorized("bad key"), anthropic.AuthenticationError),
        (RateLimited("slow down"), anthropic.RateLimitError),
        (UpstreamError("upstream broke"), anthropic.InternalServerError),
    ],
)
def test_sdk_raises_on_rendered_errors(err: RouterError, exception: type[Exception]) -> None:
    client = sdk_client(lambda _: httpx2.Response(err.status, content=render_error(err)))
    with pytest.raises(exception) as info:
        client.messages.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert err.message in str(info.value)
