"""OpenAI's error object, both ways: written to clients, read from upstreams. Sans-IO.

Clients get ``{"error": {"message", "type", "param", "code"}}``, which the official SDKs turn
into their exception classes. Upstreams send that shape, a bare ``{"error": "..."}``, or vLLM's
``{"object": "error", "message": ...}``; all three are read.
"""

from __future__ import annotations

from typing import Any

import orjson

from engine.errors import RouterError

__all__ = ["describe_error", "error_message", "error_object", "is_error", "render_error"]

_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
}


def render_error(err: RouterError) -> bytes:
    """The OpenAI error object for ``err``."""
    return orjson.dumps({"error": error_object(err)})


def error_object(err: RouterError) -> dict[str, Any]:
    """The value of ``error`` in the error body for ``err``."""
    return {
        "message": err.message,
        "type": _error_type(err.status),
        "param": err.param,
        "code": err.code,
    }


def _error_type(status: int) -> str:
    if status >= 500:
        return "server_error"  # what OpenAI itself sends for 5xx
    return _ERROR_TYPES.get(status, "invalid_request_error")


def is_error(data: Any) -> bool:
    """Whether a decoded body or stream chunk is an error payload in any of the three shapes."""
    return isinstance(data, dict) and (
        data.get("error") is not None or data.get("object") == "error"
    )


def error_message(status: int, body: bytes) -> str:
    """The upstream's ``error.type: error.message`` when it sent one, else a generic text
    (raw: the transport scrubs and shortens it)."""
    try:
        data = orjson.loads(body)
    except ValueError:
        data = None
    return describe_error(data) or f"upstream returned HTTP {status}"


def describe_error(data: Any) -> str | None:
    """``type: message`` of an OpenAI-style error payload (``{"error": {...}}``, ``{"error":
    "..."}`` or vLLM's ``{"object": "error", "message": ...}``), or ``None``."""
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, str):
        return error if error.strip() else None
    if not isinstance(error, dict):
        if data.get("object") != "error":
            return None
        error = data  # vLLM's ErrorResponse
    parts = [error.get("type"), error.get("message")]
    return ": ".join(p for p in parts if isinstance(p, str) and p.strip()) or None
