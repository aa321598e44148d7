"""Anthropic's error object, both ways: written to clients, read from upstreams. Sans-IO.

``{"type": "error", "error": {"type": ..., "message": ..., "code": ...}}``, with ``error.type``
chosen by HTTP status as Anthropic's errors documentation lists it (the official SDK maps the
status to its exception classes) and ``error.code`` the router's stable code from the error
tree (``budget_exceeded``, ``rate_limited``, ...), the same one the OpenAI shape carries.
"""

from __future__ import annotations

from typing import Any

import orjson

from engine.errors import RouterError

__all__ = ["describe_error", "error_message", "error_type", "render_error"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    """Anthropic's ``error.type`` for an HTTP status (per its errors documentation)."""
    return _ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def render_error(err: RouterError) -> bytes:
    """The error response body for ``err``; send it with status ``err.status``.

    A stream's ``error`` event carries the same object.
    """
    message = err.message
    if err.param and not message.startswith(err.param):
        message = f"{err.param}: {message}"
    return orjson.dumps(
        {"type": "error",
         "error": {"type": error_type(err.status), "message": message, "code": err.code}}
    )


def error_message(status: int, body: bytes) -> str:
    """Anthropic's ``error.type: error.message``, else a generic line naming the status
    (raw: the transport scrubs and shortens it)."""
    try:
        error = orjson.loads(body)["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError, IndexError):
        error = None
    return describe_error(error) or f"upstream answered HTTP {status}"


def describe_error(error: Any) -> str | None:
    """``type: message`` of an Anthropic error object (either part alone if the other is
    missing), or ``None`` if it has neither."""
    if not isinstance(error, dict):
        return None
    parts = [error.get("type"), error.get("message")]
    text = ": ".join(p for p in parts if isinstance(p, str) and p.strip())
    return text or None
