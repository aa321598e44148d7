"""``POST /v1/messages/count_tokens``: the body read, and the count written. Sans-IO.

The router answers it itself, for every backend alike, with an estimate of the prompt's
tokens (:func:`estimate_prompt_tokens`): the same body as ``POST /v1/messages`` without
``max_tokens``, validated by the same parser, so a request that counts is one that would be
accepted.
"""

from __future__ import annotations

import orjson

from engine.messages import ChatRequest, estimate_prompt_tokens

from .request import load_object, parse_request

__all__ = ["parse_count_request", "render_count"]


def parse_count_request(body: bytes) -> ChatRequest:
    """A ``count_tokens`` body as the :class:`ChatRequest` it counts.

    Raises:
        RequestInvalid: the body is not a valid Messages request (``max_tokens`` aside).
    """
    data = load_object(body)
    if data.get("max_tokens") is None:
        data["max_tokens"] = 1  # not part of this endpoint; the parser requires one
    data.pop("stream", None)
    return parse_request(data)


def render_count(request: ChatRequest) -> bytes:
    """The answer: ``{"input_tokens": N}``, N the router's estimate."""
    return orjson.dumps({"input_tokens": estimate_prompt_tokens(request)})
