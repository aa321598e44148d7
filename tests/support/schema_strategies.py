"""Hypothesis strategies from JSON Schema: the subset /openapi.json uses (``type``, ``enum``,
``const``, bounds and lengths, ``items``, ``properties`` / ``required`` /
``additionalProperties`` / ``propertyNames``, ``anyOf``, ``false``, ``format: date-time``,
local ``$ref``). hypothesis-jsonschema would do this, but its releases no longer run on
current Hypothesis (it drives Hypothesis internals that have since changed); this is small
enough to keep, and refuses a schema keyword it does not know instead of ignoring it."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from hypothesis import strategies as st

__all__ = ["from_schema"]

_ANNOTATIONS = {"description", "title", "default", "examples"}
_KNOWN = _ANNOTATIONS | {
    "type", "enum", "const", "minimum", "maximum", "minLength", "maxLength", "items",
    "minItems", "maxItems", "properties", "required", "additionalProperties", "propertyNames",
    "anyOf", "format", "$ref",
}
_KEY = st.text(max_size=12)
_LEAF = (st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=20)
         | st.floats(allow_nan=False, allow_infinity=False))
_ANY = st.recursive(_LEAF, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(_KEY, inner, max_size=3), max_leaves=6)


def from_schema(schema: Any, *, root: dict[str, Any] | None = None) -> st.SearchStrategy[Any]:
    """Values valid by ``schema``; ``root`` resolves ``#/...`` references."""
    root = root if root is not None else schema
    if schema is True or schema == {}:
        return _ANY
    if schema is False:
        return st.nothing()
    unknown = set(schema) - _KNOWN
    assert not unknown, f"schema keywords this generator does not know: {unknown}"
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return from_schema(target, root=root)
    if "anyOf" in schema:
        return st.one_of([from_schema(option, root=root) for option in schema["anyOf"]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        low, high = _bound(schema.get("minimum")), _bound(schema.get("maximum"))
        if schema.get("format") == "int64":
            low = -(2**63) if low is None else low
            high = 2**63 - 1 if high is None else high
        return st.integers(low, high)
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False,
                         allow_infinity=False) | st.integers(
            _bound(schema.get("minimum"), up=True), _bound(schema.get("maximum")))
    if kind == "string":
        if schema.get("format") == "date-time":
            return st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat())
        return st.text(min_size=schema.get("minLength", 0),
                       max_size=min(schema.get("maxLength", 40), 40))
    if kind == "array":
        return st.lists(from_schema(schema.get("items", True), root=root),
                        min_size=schema.get("minItems", 0),
                        max_size=min(schema.get("maxItems", 4), 4))
    if kind == "object":
        return _object(schema, root)
    raise AssertionError(f"schema of no known type: {schema}")


def _bound(value: float | None, *, up: bool = False) -> int | None:
    if value is None:
        return None
    return int(value) + (1 if up and value != int(value) else 0)


def _object(schema: dict[str, Any], root: dict[str, Any]) -> st.SearchStrategy[Any]:
    properties = {name: sub for name, sub in schema.get("properties", {}).items()
                  if sub is not False}
    required = set(schema.get("required", ()))
    extra = schema.get("additionalProperties", True)
    keys = _KEY.filter(lambda k: k not in schema.get("properties", {}))
    if "propertyNames" in schema:
        assert set(schema["propertyNames"]) == {"pattern"}
        keys = st.from_regex(schema["propertyNames"]["pattern"], fullmatch=True)
    more = (st.just({}) if extra is False
            else st.dictionaries(keys, from_schema(extra, root=root), max_size=2))

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        out = draw(more)
        for name, sub in properties.items():
            if name in required or draw(st.booleans()):
                out[name] = draw(from_schema(sub, root=root))
        return out

    return build()
