"""Request bodies declared once: the kinds and bounds of their fields, as small frozen specs
that the hand-written validators read (a bound is written here, never in a parser) and that
render as JSON Schema for the OpenAPI document (``api/http/openapi.py``).

Why specs rather than pydantic models for the bodies the router validates by hand: the chat
parsers run on every request and name the exact field at fault in each protocol's own words
(``messages[2].content``, ``messages.2.content``); a model would either cost its validation
again on the hot path or lose those names. The parsers keep the cross-field rules and the
translation to the canonical request; each spec carries the field rules they read. What a
spec cannot say (a cross-field rule) its ``doc`` says, and the document shows it.

Sans-IO and dependency-free. The document is what ``to_schema`` renders; a property test
(``tests/wire/test_body_schemas.py``) generates bodies from it and checks the parsers accept
them, so a parser that grew stricter than its spec fails the build.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ROUTER_CACHE",
    "Anything",
    "Const",
    "Either",
    "Fields",
    "Flag",
    "ListOf",
    "Num",
    "Spec",
    "Text",
    "to_schema",
]

JSONSchema = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Num:
    """A JSON number (``integer``: no fraction; never a boolean) within ``[low, high]``.
    Integers are 64-bit (``format: int64``): the JSON parser refuses larger ones."""

    integer: bool = False
    low: float | None = None
    high: float | None = None
    default: float = 0  # a query parameter's value when absent
    doc: str = ""

    def schema(self) -> JSONSchema:
        out: JSONSchema = ({"type": "integer", "format": "int64"} if self.integer
                           else {"type": "number"})
        if self.low is not None:
            out["minimum"] = self.low
        if self.high is not None:
            out["maximum"] = self.high
        return out


@dataclass(frozen=True, slots=True)
class Text:
    """A JSON string: one of ``values`` when given, else of ``min_length`` to ``max_length``
    characters."""

    min_length: int = 0
    max_length: int | None = None
    values: tuple[str, ...] = ()
    doc: str = ""

    def schema(self) -> JSONSchema:
        if self.values:
            return {"type": "string", "enum": list(self.values)}
        out: JSONSchema = {"type": "string"}
        if self.min_length:
            out["minLength"] = self.min_length
        if self.max_length is not None:
            out["maxLength"] = self.max_length
        return out


@dataclass(frozen=True, slots=True)
class Flag:
    """``true`` or ``false``."""

    doc: str = ""

    def schema(self) -> JSONSchema:
        return {"type": "boolean"}


@dataclass(frozen=True, slots=True)
class Const:
    """Exactly ``value`` (a discriminator such as a message's ``role``)."""

    value: str
    doc: str = ""

    def schema(self) -> JSONSchema:
        return {"const": self.value}


@dataclass(frozen=True, slots=True)
class Anything:
    """Any JSON value the router passes on unread (a tool's parameter schema, metadata)."""

    objects_only: bool = False
    doc: str = ""

    def schema(self) -> JSONSchema:
        return {"type": "object"} if self.objects_only else {}


@dataclass(frozen=True, slots=True)
class ListOf:
    """A JSON array of ``items``, ``min_items`` to ``max_items`` long."""

    items: Spec
    min_items: int = 0
    max_items: int | None = None
    doc: str = ""

    def schema(self) -> JSONSchema:
        out: JSONSchema = {"type": "array", "items": to_schema(self.items)}
        if self.min_items:
            out["minItems"] = self.min_items
        if self.max_items is not None:
            out["maxItems"] = self.max_items
        return out


@dataclass(frozen=True, slots=True)
class Either:
    """One of ``options`` (a string or an array of parts, one message kind or another)."""

    options: tuple[Spec, ...]
    doc: str = ""

    def schema(self) -> JSONSchema:
        return {"anyOf": [to_schema(option) for option in self.options]}


@dataclass(frozen=True, slots=True)
class Fields:
    """A JSON object. ``closed``: a field not in ``fields`` is refused (otherwise ignored);
    ``forbidden``: fields refused because the router cannot honour them (never dropped);
    ``values`` and ``key_pattern``: what any other field holds and is named (a map)."""

    fields: Mapping[str, Spec]
    required: tuple[str, ...] = ()
    closed: bool = False
    forbidden: tuple[str, ...] = ()
    values: Spec | None = None
    key_pattern: str | None = None
    doc: str = ""
    names: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", frozenset(self.fields))

    def schema(self) -> JSONSchema:
        properties: dict[str, Any] = {name: to_schema(spec) for name, spec in self.fields.items()}
        properties.update((name, False) for name in self.forbidden)
        out: JSONSchema = {"type": "object", "properties": properties}
        if self.required:
            out["required"] = list(self.required)
        if self.closed:
            out["additionalProperties"] = False
        elif self.values is not None:
            out["additionalProperties"] = to_schema(self.values)
        if self.key_pattern is not None:
            out["propertyNames"] = {"pattern": self.key_pattern}
        return out


Spec = Num | Text | Flag | Const | Anything | ListOf | Either | Fields


#: The cache choice every cacheable body may carry (chat and workflow requests), for clients
#: that cannot set the Cache-Control header (read in api/http/app.py).
ROUTER_CACHE = Text(
    values=("no-cache", "no-store", "default"),
    doc="The Cache-Control header's choice, for clients that cannot set headers.",
)


def to_schema(spec: Spec) -> JSONSchema:
    """``spec`` as JSON Schema (2020-12, the dialect of OpenAPI 3.1), its ``doc`` as the
    description.

    >>> to_schema(Num(integer=True, low=1, doc="tokens"))
    {'type': 'integer', 'format': 'int64', 'minimum': 1, 'description': 'tokens'}
    >>> to_schema(Fields({"n": Num()}, required=("n",), closed=True))["additionalProperties"]
    False
    """
    out = spec.schema()
    if spec.doc:
        out["description"] = spec.doc
    return out
