"""What a shared flight carries between router processes, as Redis stream entries.

A flight leader in one process writes what its local flight publishes (the served head, then
batches of stream events with their upstream size) and, once another process follows it, one
final record (the node's result, or its error); a follower in another process decodes each
entry back into the same Python objects and publishes them into its own local flight, as if
they came from an upstream. Each entry is two fields: ``t`` (its kind) and ``d`` (compact JSON).

Everything here is data the caller is about to receive anyway (the answer, the model's
name, the error message the client would see): no key or credential ever goes in.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from engine import errors
from engine.errors import RouterError
from engine.messages import (
    ChatResult,
    Event,
    Finish,
    TextDelta,
    TextPart,
    ThinkingDelta,
    ThinkingPart,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)

from .node import NodeResult, Served

__all__ = [
    "ERROR", "EVENTS", "GONE", "HEAD", "RESULT",
    "decode_error", "decode_item", "decode_result",
    "encode_error", "encode_item", "encode_result",
]

HEAD, EVENTS, RESULT, ERROR, GONE = b"head", b"events", b"result", b"error", b"gone"

_ERROR_CLASSES: dict[str, type[RouterError]] = {}
for _value in vars(errors).values():
    if isinstance(_value, type) and issubclass(_value, RouterError):
        _ERROR_CLASSES.setdefault(_value.code, _value)
_ERROR_CLASSES["internal_error"] = RouterError
# What some error classes carry besides their message (the API renders them: Retry-After).
_ERROR_EXTRAS = ("upstream_status", "backend", "retry_after")


def encode_item(item: Any, size: int) -> tuple[bytes, bytes]:
    """One published item (a :class:`Served` head or a list of events) as ``(t, d)``."""
    if type(item) is Served:
        return HEAD, orjson.dumps(_served(item))
    return EVENTS, orjson.dumps({"n": size, "e": [_event(e) for e in item]})


def _served(served: Served) -> dict[str, Any]:
    # The belief stays with the process that routed the request (feedback is learned there).
    return dataclasses.asdict(dataclasses.replace(served, belief=None))


def decode_item(kind: bytes, data: bytes) -> tuple[Any, int]:
    """An item :func:`encode_item` made, and its size; a head comes back as a follower's."""
    body = orjson.loads(data)
    if kind == HEAD:
        return dataclasses.replace(Served(**body), dedup="FOLLOWER"), 0
    return [_parse_event(e) for e in body["e"]], int(body["n"])


def encode_result(done: NodeResult) -> bytes:
    return orjson.dumps({
        "r": _result(done.result), "s": _served(done.served),
        "c": done.cost_usd, "v": done.saved_usd,
    })


def decode_result(data: bytes) -> NodeResult:
    """The leader's node result, as its followers report it (``dedup="FOLLOWER"``)."""
    body = orjson.loads(data)
    served = dataclasses.replace(Served(**body["s"]), dedup="FOLLOWER")
    return NodeResult(_parse_result(body["r"]), served, float(body["c"]), float(body["v"]))


def encode_error(exc: RouterError) -> bytes:
    body: dict[str, Any] = {"code": exc.code, "message": exc.message, "param": exc.param}
    for name in _ERROR_EXTRAS:
        if hasattr(exc, name):
            body[name] = getattr(exc, name)
    return orjson.dumps(body)


def decode_error(data: bytes) -> RouterError:
    """The leader's error, of the same class (by its code), message and details."""
    body = orjson.loads(data)
    cls = _ERROR_CLASSES.get(body.get("code", ""), RouterError)
    exc = cls.__new__(cls)
    Exception.__init__(exc, body["message"])
    exc.message = body["message"]
    exc.param = body.get("param")
    for name in _ERROR_EXTRAS:
        if name in body:
            setattr(exc, name, body[name])
    return exc


def _usage(usage: Usage) -> list[int]:
    return [usage.input_tokens, usage.output_tokens, usage.cache_read_tokens,
            usage.cache_write_tokens]


def _event(event: Event) -> list[Any]:
    if type(event) is TextDelta:
        return ["t", event.text, event.logprobs]
    if type(event) is ToolCallStart:
        return ["s", event.index, event.id, event.name]
    if type(event) is ToolCallDelta:
        return ["a", event.index, event.arguments]
    if type(event) is ThinkingDelta:
        return ["k", event.thinking, event.signature, event.redacted]
    assert type(event) is Finish
    return ["f", event.stop_reason, event.stop_sequence, _usage(event.usage),
            event.upstream_model]


def _parse_event(raw: list[Any]) -> Event:
    kind = raw[0]
    if kind == "t":
        return TextDelta(raw[1], None if raw[2] is None else tuple(raw[2]))
    if kind == "s":
        return ToolCallStart(raw[1], raw[2], raw[3])
    if kind == "a":
        return ToolCallDelta(raw[1], raw[2])
    if kind == "k":
        return ThinkingDelta(raw[1], raw[2], raw[3])
    return Finish(raw[1], raw[2], Usage(*raw[3]), raw[4])


def _result(result: ChatResult) -> dict[str, Any]:
    return {
        "c": [["t", p.text] if isinstance(p, TextPart)
              else ["k", p.thinking, p.signature, p.redacted] if isinstance(p, ThinkingPart)
              else ["c", p.id, p.name, p.arguments]
              for p in result.content],
        "r": result.stop_reason, "q": result.stop_sequence, "u": _usage(result.usage),
        "m": result.upstream_model, "l": result.logprobs,
        "x": [_result(c) for c in result.extra_choices],
    }


def _parse_result(body: dict[str, Any]) -> ChatResult:
    return ChatResult(
        content=tuple(TextPart(p[1]) if p[0] == "t"
                      else ThinkingPart(p[1], p[2], p[3]) if p[0] == "k"
                      else ToolCall(p[1], p[2], p[3])
                      for p in body["c"]),
        stop_reason=body["r"], stop_sequence=body["q"], usage=Usage(*body["u"]),
        upstream_model=body["m"], logprobs=None if body["l"] is None else tuple(body["l"]),
        extra_choices=tuple(_parse_result(c) for c in body["x"]),
    )
