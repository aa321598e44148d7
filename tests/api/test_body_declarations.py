"""The API's own request bodies (workflow, feedback, cancel, admin keys) agree with what
/openapi.json declares for them: every body valid by its schema is accepted, unless it
breaks a cross-field rule the schema's description states."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from schema_strategies import from_schema

from api.http.admin import key_schemas, parse_changes, parse_settings
from api.http.feedback import FEEDBACK, parse_feedback
from api.http.params import CANCEL, cancel_reason
from api.http.workflows import RUN_NAMED, SUBMIT, parse_call
from engine.errors import RequestInvalid
from engine.wire import to_schema

_SETTINGS = settings(max_examples=100, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(from_schema(to_schema(FEEDBACK)))
def test_feedback_valid_by_its_schema_is_accepted(body: Any) -> None:
    try:
        parse_feedback(orjson.dumps(body))
    except RequestInvalid as err:  # neither a request_id nor score and tier, or a
        # comparison (other_quality) that names no request: rules across fields
        assert "request_id" not in body and (
            not {"score", "tier"} <= body.keys() or "other_quality" in body), err


@_SETTINGS
@given(from_schema(to_schema(SUBMIT)), from_schema(to_schema(RUN_NAMED)))
def test_workflow_calls_valid_by_their_schemas_are_accepted(submit: Any, named: Any) -> None:
    for body, needs_workflow in ((submit, True), (named, False)):
        try:
            parse_call(orjson.dumps(body), needs_workflow=needs_workflow)
        except RequestInvalid as err:
            assert "async cannot be combined" in err.message, err


@_SETTINGS
@given(from_schema(to_schema(CANCEL)))
def test_cancel_bodies_valid_by_their_schema_are_accepted(body: Any) -> None:
    cancel_reason(orjson.dumps(body))


@_SETTINGS
@given(from_schema(key_schemas()[0]), from_schema(key_schemas()[1]))
def test_key_bodies_valid_by_the_models_schema_are_accepted(create: Any, change: Any) -> None:
    settings = parse_settings(orjson.dumps(create))
    settings.updated(parse_changes(orjson.dumps(change)))
