"""The chat bodies' declared schemas (engine/wire/*/body.py, what /openapi.json shows) agree
with the parsers that validate them: every body generated from a schema is accepted, unless
it breaks one of the cross-field rules the schema's descriptions state (listed here, each
with the parser's words), and a number out of its declared bounds is refused naming it."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from schema_strategies import from_schema

from engine.errors import RequestInvalid
from engine.wire import ANTHROPIC, OPENAI, WireProtocol
from engine.wire.anthropic.body import NUMBERS as ANTHROPIC_NUMBERS
from engine.wire.anthropic.body import REQUEST as ANTHROPIC_REQUEST
from engine.wire.openai.body import NUMBERS as OPENAI_NUMBERS
from engine.wire.openai.body import REQUEST as OPENAI_REQUEST
from engine.wire.schema import Num, to_schema

# The rules a JSON Schema cannot state, as the parsers word them.
_CROSS_FIELD = {
    "openai": (
        "required unless tool_calls is set",  # an assistant turn: content or tool calls
        "not only system ones",  # at least one non-system message
        "'tool_choice' requires 'tools'",
        "no tool named",  # tool_choice names one of tools
        "'top_logprobs' requires 'logprobs'",
        "'n' above 1 is not supported with 'stream'",
        "must be an http(s) URL or a base64 data URL",
        "must hold one of 'file_data' or 'file_id'",  # a file part: exactly one of them
        "must be a base64 data URL",  # a file part's file_data
    ),
    "anthropic": (
        "must not be empty",  # empty content outside a final assistant prefill
        "at least one message with content",  # turns of thinking blocks alone drop out
    ),
}
_SETTINGS = settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _accepted_or_cross_field(protocol: WireProtocol, body: Any) -> None:
    try:
        protocol.parse_request(orjson.dumps(body))
    except RequestInvalid as err:
        assert any(rule in err.message for rule in _CROSS_FIELD[protocol.name]), (
            body, err.message)


@_SETTINGS
@given(from_schema(to_schema(OPENAI_REQUEST)))
def test_openai_bodies_valid_by_the_schema_are_accepted(body: Any) -> None:
    _accepted_or_cross_field(OPENAI, body)


@_SETTINGS
@given(from_schema(to_schema(ANTHROPIC_REQUEST)))
def test_anthropic_bodies_valid_by_the_schema_are_accepted(body: Any) -> None:
    _accepted_or_cross_field(ANTHROPIC, body)


def _outside(spec: Num) -> list[Any]:
    values: list[Any] = ["1", True]
    if spec.integer:
        values.append(1.5)
    if spec.low is not None:
        values.append(spec.low - 1)
    if spec.high is not None:
        values.append(spec.high + 1)
    return values


_VALID = {
    "openai": {"model": "auto", "messages": [{"role": "user", "content": "Hi"}]},
    "anthropic": {"model": "auto", "max_tokens": 5,
                  "messages": [{"role": "user", "content": "Hi"}]},
}


@pytest.mark.parametrize(("protocol", "name", "bad"), [
    (protocol, name, bad)
    for protocol, numbers in ((OPENAI, OPENAI_NUMBERS), (ANTHROPIC, ANTHROPIC_NUMBERS))
    for name, spec in numbers.items() for bad in _outside(spec)
], ids=lambda value: value.name if isinstance(value, WireProtocol) else repr(value))
def test_a_number_outside_its_declared_bounds_is_refused_naming_it(
        protocol: WireProtocol, name: str, bad: Any) -> None:
    with pytest.raises(RequestInvalid) as raised:
        protocol.parse_request(orjson.dumps(_VALID[protocol.name] | {name: bad}))
    assert raised.value.param == name


@pytest.mark.parametrize(("protocol", "spec"), [(OPENAI, OPENAI_REQUEST),
                                                (ANTHROPIC, ANTHROPIC_REQUEST)],
                         ids=["openai", "anthropic"])
def test_fields_the_schema_forbids_are_refused_naming_them(protocol: WireProtocol,
                                                           spec: Any) -> None:
    for name in spec.forbidden:
        with pytest.raises(RequestInvalid) as raised:
            protocol.parse_request(orjson.dumps(_VALID[protocol.name] | {name: {"x": 1}}))
        assert raised.value.param == name
