"""Checking one JSON field of an OpenAI request, with faults worded the way OpenAI's API words
them (``Invalid type for 'messages[0].content': expected a string, got a number.``) and
``param`` naming the field's path. Sans-IO; the request parser
(:mod:`engine.wire.openai.request`) is built from these.
"""

from __future__ import annotations

from typing import Any

from engine.errors import RequestInvalid, echo
from engine.wire.schema import Num

from .body import MAX_STOP

__all__ = [
    "MISSING",
    "boolean",
    "check_modalities",
    "invalid_type",
    "invalid_value",
    "kind_of",
    "logit_bias",
    "number",
    "show",
    "stop_sequences",
    "string",
    "word",
]

MISSING: Any = object()  # a key absent from its object (unlike one present as null)


def string(obj: dict[str, Any], key: str, path: str, *, non_empty: bool = False) -> str:
    value = obj.get(key, MISSING)
    if value is MISSING or value is None:
        raise RequestInvalid(f"Missing required parameter: '{path}.{key}'.", param=f"{path}.{key}")
    if type(value) is not str or (non_empty and not value):
        raise invalid_type(
            f"{path}.{key}", "a non-empty string" if non_empty else "a string", value
        )
    return value


def number(obj: dict[str, Any], key: str, spec: Num) -> Any:
    """An optional number within ``spec``'s bounds; an integer spec refuses fractions. Never
    a bool."""
    value = obj.get(key)
    if value is None:
        return None
    if type(value) is not int and (spec.integer or type(value) is not float):
        raise invalid_type(key, "an integer" if spec.integer else "a number", value)
    low, high = spec.low, spec.high
    if (low is not None and value < low) or (high is not None and value > high):
        bound = f"at least {low}" if high is None else f"between {low} and {high}"
        raise RequestInvalid(
            f"Invalid value for '{key}': expected a number {bound}, got {value}.", param=key
        )
    return value


def boolean(obj: dict[str, Any], key: str, path: str | None = None) -> bool | None:
    value = obj.get(key)
    if value is not None and type(value) is not bool:
        raise invalid_type(path or key, "a boolean", value)
    return value


def kind_of(value: Any) -> str:
    if value is None or value is MISSING:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def show(value: Any) -> str:
    return echo(value) if isinstance(value, str) else kind_of(value)


def invalid_type(path: str, expected: str, value: Any) -> RequestInvalid:
    return RequestInvalid(
        f"Invalid type for '{path}': expected {expected}, got {kind_of(value)}.", param=path
    )


def invalid_value(path: str, expected: str, value: Any) -> RequestInvalid:
    return RequestInvalid(
        f"Invalid value for '{path}': expected {expected}, got {show(value)}.", param=path
    )


def word(data: dict[str, Any], key: str) -> str | None:
    """An optional non-empty string whose values the upstream validates (``"low"``, ...)."""
    value = data.get(key)
    if value is not None and (type(value) is not str or not value):
        raise invalid_type(key, "a non-empty string", value)
    return value


def stop_sequences(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if type(value) is str:
        return (value,)
    if type(value) is not list:
        raise invalid_type("stop", "a string or an array of strings", value)
    if len(value) > MAX_STOP:
        raise RequestInvalid(f"'stop' may hold at most {MAX_STOP} sequences.", param="stop")
    for j, item in enumerate(value):
        if type(item) is not str:
            raise invalid_type(f"stop[{j}]", "a string", item)
    return tuple(value)


def logit_bias(value: Any) -> tuple[tuple[str, float], ...]:
    if value is None:
        return ()
    if type(value) is not dict:
        raise invalid_type("logit_bias", "an object mapping token ids to numbers", value)
    pairs = []
    for token, bias in value.items():
        if not (token.isascii() and token.isdigit()):
            raise RequestInvalid(
                f"Invalid value for 'logit_bias': keys must be token ids, got {token[:40]!r}.",
                param="logit_bias",
            )
        if type(bias) not in (int, float) or not -100 <= bias <= 100:
            raise RequestInvalid(
                f"Invalid value for 'logit_bias.{token}': expected a number between -100 and "
                f"100, got {bias if type(bias) in (int, float) else kind_of(bias)}.",
                param="logit_bias",
            )
        pairs.append((token, float(bias)))
    return tuple(sorted(pairs, key=lambda pair: int(pair[0])))


def check_modalities(value: Any) -> None:
    if value is None:
        return
    if type(value) is not list or any(type(m) is not str for m in value):
        raise invalid_type("modalities", "an array of strings", value)
    if any(m != "text" for m in value):
        raise RequestInvalid(
            "Only the 'text' output modality is supported by this router (audio answers are "
            "not relayed); leave out 'modalities' or ask for ['text'].", param="modalities"
        )
