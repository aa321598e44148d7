"""``POST /v1/feedback``'s body, validated into the engine's
:class:`~engine.runtime.FeedbackReport`.

Two forms (docs/api.md): ``{"request_id": <X-Request-Id of the response>, "quality": 0-1}``
names a request the router answered (with ``"other_quality"``, the other tier's answer to it
was rated too: a comparison); ``{"score": 0-1, "tier": N, "quality": 0-1}`` states a
routing decision. With both, ``request_id`` wins (its score and tier are the router's own).
"""

from __future__ import annotations

from typing import Any

import orjson

from engine.errors import RequestInvalid
from engine.runtime import FeedbackReport
from engine.wire import Fields, Num, Text

__all__ = ["FEEDBACK", "parse_feedback"]

_NUMBERS = {  # each number's bounds, declared once: checked below, shown in /openapi.json
    "quality": Num(low=0, high=1, doc="How good the answer was."),
    "score": Num(low=0, high=1, doc="The routing score as a fraction "
                                    "(X-LLM-Router-Score / 100)."),
    "tier": Num(integer=True, low=1, high=10, doc="The tier that answered."),
    "other_quality": Num(low=0, high=1, doc=(
        "How good the other tier's answer to the same request was (a comparison: the "
        "deployment also asked the other tier). With request_id only; teaches online "
        "learning whether the strong model was better.")),
}
FEEDBACK = Fields(
    {"request_id": Text(doc="The X-Request-Id of the answer; wins over score and tier."),
     **_NUMBERS},
    required=("quality",),
    doc="Names a request (request_id), or states its decision (score and tier).",
)


def parse_feedback(body: bytes) -> FeedbackReport:
    """The report in ``body``.

    Raises:
        RequestInvalid: not JSON, not an object, or a field missing or out of range (naming
            it).
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RequestInvalid("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise RequestInvalid("feedback must be a JSON object")
    quality = _unit(data, "quality")
    request_id = data.get("request_id")
    if request_id is not None:
        if not isinstance(request_id, str):
            raise RequestInvalid("request_id must be a string", param="request_id")
        other = None if data.get("other_quality") is None else _unit(data, "other_quality")
        return FeedbackReport(quality, request_id=request_id, other_quality=other)
    if data.get("other_quality") is not None:
        raise RequestInvalid("other_quality compares two answers to one request: name it "
                             "with request_id", param="other_quality")
    if "score" not in data and "tier" not in data:
        raise RequestInvalid(
            'feedback names a request: {"request_id": <X-Request-Id of the response>, '
            '"quality": 0-1}, or gives its decision: {"score": 0-1, "tier": N, "quality": 0-1}',
            param="request_id",
        )
    score = _unit(data, "score", hint=(
        "; score is the routing score as a fraction (X-LLM-Router-Score / 100), or name "
        "the request instead with request_id"))
    tier = data.get("tier")
    low, high = _bounds("tier")
    if isinstance(tier, bool) or not isinstance(tier, int) or not low <= tier <= high:
        raise RequestInvalid(f"tier must be an integer from {low:g} to {high:g}", param="tier")
    return FeedbackReport(quality, score=score, tier=tier)


def _bounds(key: str) -> tuple[float, float]:
    spec = _NUMBERS[key]
    assert spec.low is not None and spec.high is not None
    return spec.low, spec.high


def _unit(data: dict[str, Any], key: str, *, hint: str = "") -> float:
    value = data.get(key)
    low, high = _bounds(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise RequestInvalid(f"{key} must be a number from {low:g} to {high:g}{hint}", param=key)
    return float(value)
