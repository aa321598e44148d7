"""OpenAI request fields that only OpenAI-compatible upstreams take, both ways. Sans-IO.

None of them but ``web_search_options`` changes the answer: ``prompt_cache_key``,
``safety_identifier``, ``service_tier``, ``store``, ``metadata`` and ``prediction`` (a
latency hint: the answer is the model's either way) are forwarded to OpenAI-compatible
upstreams and left out for Anthropic ones (which get ``safety_identifier`` as
``metadata.user_id`` when ``user`` is unset). ``web_search_options`` makes the model search
the web: it is a feature (:meth:`~engine.messages.ChatRequest.features`) that routes the
request to OpenAI upstreams.
"""

from __future__ import annotations

from typing import Any

import orjson

from engine.errors import RequestInvalid
from engine.messages import ChatRequest

from .fields import boolean, invalid_type

__all__ = ["EXTRA_FIELDS", "parse_extras", "render_extras"]

EXTRA_FIELDS = ("prompt_cache_key", "safety_identifier", "service_tier", "store", "metadata",
                "prediction", "web_search_options")
_WORDS = ("prompt_cache_key", "safety_identifier", "service_tier")


def parse_extras(data: dict[str, Any]) -> dict[str, Any]:
    """The :class:`ChatRequest` fields these make of a request body (absent ones left out).

    Raises:
        RequestInvalid: one is malformed; ``param`` names it.
    """
    out: dict[str, Any] = {}
    for key in _WORDS:
        value = data.get(key)
        if value is not None:
            if type(value) is not str or not value:
                raise invalid_type(key, "a non-empty string", value)
            out[key] = value
    store = boolean(data, "store")
    if store is not None:
        out["store"] = store
    metadata = data.get("metadata")
    if metadata is not None:
        if type(metadata) is not dict or any(type(v) is not str for v in metadata.values()):
            raise invalid_type("metadata", "an object of strings", metadata)
        out["metadata"] = tuple(sorted(metadata.items()))
    prediction = data.get("prediction")
    if prediction is not None:
        if type(prediction) is not dict or prediction.get("type") != "content":
            raise RequestInvalid("Invalid value for 'prediction': expected "
                                 '{"type": "content", "content": ...}.', param="prediction")
        out["prediction"] = orjson.dumps(prediction).decode()
    options = data.get("web_search_options")
    if options is not None:
        if type(options) is not dict:
            raise invalid_type("web_search_options", "an object", options)
        out["web_search_options"] = orjson.dumps(options).decode()
    return out


def render_extras(request: ChatRequest, body: dict[str, Any]) -> None:
    """Add the fields ``request`` has to an OpenAI-compatible upstream's ``body``."""
    for key in _WORDS:
        value = getattr(request, key)
        if value is not None:
            body[key] = value
    if request.store is not None:
        body["store"] = request.store
    if request.metadata:
        body["metadata"] = dict(request.metadata)
    if request.prediction is not None:
        body["prediction"] = orjson.Fragment(request.prediction)
    if request.web_search_options is not None:
        body["web_search_options"] = orjson.Fragment(request.web_search_options)
