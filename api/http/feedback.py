"""``POST /v1/feedback``'s body, validated into the engine's
:class:`~engine.runtime.FeedbackReport`.

Two forms (docs/api.md): ``{"request_id": <X-Request-Id of the response>, "quality": 0-1}``
names a request the router answered; ``{"score": 0-1, "tier": N, "quality": 0-1}`` states a
routing decision. With both, ``request_id`` wins (its score and tier are the router's own).
"""

from __future__ import annotations

from typing import Any

import orjson

from engine.errors import RequestInvalid
from engine.runtime import FeedbackReport

__all__ = ["parse_feedback"]


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
        return FeedbackReport(quality, request_id=request_id)
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
    if isinstance(tier, bool) or not isinstance(tier, int) or not 1 <= tier <= 10:
        raise RequestInvalid("tier must be an integer from 1 to 10", param="tier")
    return FeedbackReport(quality, score=score, tier=tier)


def _unit(data: dict[str, Any], key: str, *, hint: str = "") -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise RequestInvalid(f"{key} must be a number from 0 to 1{hint}", param=key)
    return float(value)
