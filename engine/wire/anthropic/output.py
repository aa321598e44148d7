"""The Messages API's ``output_config``, read from clients. Sans-IO.

``format`` (structured outputs: ``{"type": "json_schema", "schema"}``) becomes the canonical
JSON mode with that schema, which every upstream can honour (OpenAI's ``response_format``, an
instruction for Anthropic upstreams, as for OpenAI clients); ``effort`` is Anthropic's own and
routes the request to Anthropic upstreams, which get it as given.
"""

from __future__ import annotations

from typing import Any

from engine.errors import RequestInvalid

__all__ = ["EFFORTS", "parse_output_config"]

EFFORTS = ("low", "medium", "high", "xhigh", "max")


def parse_output_config(value: Any) -> tuple[Any, str | None]:
    """``(json_schema, effort)`` of an ``output_config``: the schema in OpenAI's
    ``{"name", "schema"}`` wrapper (None: no format asked), and the effort (None: unset).

    >>> parse_output_config({"format": {"type": "json_schema", "schema": {"type": "object"}},
    ...                      "effort": "low"})
    ({'name': 'output', 'schema': {'type': 'object'}}, 'low')

    Raises:
        RequestInvalid: it is not an object of those two fields, well formed.
    """
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise _invalid("output_config", "must be an object")
    effort = value.get("effort")
    if effort is not None and effort not in EFFORTS:
        raise _invalid("output_config.effort", f"must be one of {', '.join(EFFORTS)}")
    form = value.get("format")
    if form is None:
        return None, effort
    if not isinstance(form, dict) or form.get("type") != "json_schema":
        raise _invalid("output_config.format.type", "must be 'json_schema'")
    schema = form.get("schema")
    if not isinstance(schema, dict):
        raise _invalid("output_config.format.schema",
                       "field required" if schema is None else "must be an object")
    return {"name": "output", "schema": schema}, effort


def _invalid(param: str, problem: str) -> RequestInvalid:
    return RequestInvalid(f"{param}: {problem}", param=param)
