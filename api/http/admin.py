"""The admin API's bodies and its guard: ``/v1/admin/keys`` creates, lists, shows, updates
and revokes client keys, for callers presenting ``server.admin_key`` (as ``Authorization:
Bearer`` or ``x-api-key``). A client key never opens it."""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from pydantic import ValidationError

from engine.core import KeySettings
from engine.errors import NotFound, RequestInvalid, Unauthorized, did_you_mean

from .tenancy import client_key

__all__ = ["check_admin", "parse_changes", "parse_settings"]

_FIELDS = tuple(KeySettings.model_fields)


def check_admin(admin_key: str | None, x_api_key: str, authorization: str) -> None:
    """Raises NotFound when the admin API is off, Unauthorized without the admin key."""
    if admin_key is None:
        raise NotFound("the admin API is off: set server.admin_key to enable it")
    given = client_key(x_api_key, authorization).encode()
    if not hmac.compare_digest(given, admin_key.encode()):
        raise Unauthorized("the admin API needs the admin key (Authorization: Bearer <key>)")


def parse_settings(body: bytes) -> KeySettings:
    """``POST /v1/admin/keys``'s body: a whole :class:`KeySettings`."""
    try:
        return KeySettings.model_validate(_object(body))
    except ValidationError as exc:
        raise _invalid(exc) from None


def parse_changes(body: bytes) -> dict[str, Any]:
    """``PATCH``'s body: the settings it names (validated once applied:
    :func:`apply_changes`)."""
    data = _object(body)
    for key in data:
        if key not in _FIELDS:
            raise RequestInvalid(f"{key}: unknown field{did_you_mean(key, _FIELDS)}",
                                 param=str(key))
    return data


def apply_changes(settings: KeySettings, changes: dict[str, Any]) -> KeySettings:
    try:
        return settings.updated(changes)
    except ValidationError as exc:
        raise _invalid(exc) from None


def _object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError:
        raise RequestInvalid("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise RequestInvalid("the body must be a JSON object")
    return data


def _invalid(exc: ValidationError) -> RequestInvalid:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(body)"
    message = str(first["msg"])
    if first["type"] == "extra_forbidden":
        message = "unknown field" + did_you_mean(str(first["loc"][-1]), _FIELDS)
    return RequestInvalid(f"{where}: {message}", param=where)
