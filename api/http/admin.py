"""The admin API's bodies and its guard: ``/v1/admin/keys`` creates, lists, shows, updates
and revokes client keys, for callers presenting ``server.admin_key`` (as ``Authorization:
Bearer`` or ``x-api-key``). A client key never opens it."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

import orjson
from pydantic import ValidationError

from engine.core import KeySettings
from engine.errors import NotFound, RequestInvalid, Unauthorized, did_you_mean

from .tenancy import client_key

__all__ = ["apply_changes", "check_admin", "key_schemas", "parse_changes", "parse_settings"]

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
    return _validated(KeySettings.model_validate, _object(body))


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
    return _validated(settings.updated, changes)


def key_schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON Schemas of the create and the change body, from the model that validates
    them (:class:`KeySettings`; a change names any of its fields, ``null`` clearing a
    limit)."""
    create = KeySettings.model_json_schema(ref_template="#/components/schemas/{model}")
    change = {key: value for key, value in create.items() if key != "required"}
    change["description"] = "The settings to change, each validated as in a create."
    return create, change


def _object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError:
        raise RequestInvalid("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise RequestInvalid("the body must be a JSON object")
    return data


def _validated(build: Callable[[dict[str, Any]], KeySettings],
               data: dict[str, Any]) -> KeySettings:
    """``build(data)``, a pydantic validation failure told as a 400 naming its first field
    (one place turns pydantic's errors into the router's)."""
    try:
        return build(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(body)"
        message = str(first["msg"])
        if first["type"] == "extra_forbidden":
            message = "unknown field" + did_you_mean(str(first["loc"][-1]), _FIELDS)
        raise RequestInvalid(f"{where}: {message}", param=where) from None
