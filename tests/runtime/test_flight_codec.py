"""What a shared flight carries between processes survives the trip through Redis: heads,
stream events of every kind, results with tool calls, log probabilities and extra choices,
and errors of their own class with the details the API renders."""

from __future__ import annotations

from engine.errors import NoBackendAvailable, RouterError, UpstreamRateLimited
from engine.messages import (
    ChatResult,
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
from engine.runtime.flight_codec import (
    decode_error,
    decode_item,
    decode_result,
    encode_error,
    encode_item,
    encode_result,
)
from engine.runtime.node import NodeResult, Served

SERVED = Served(model="m", tier=2, score=41, router="heuristic")


def test_a_head_and_events_come_back_as_they_left() -> None:
    assert decode_item(*encode_item(SERVED, 0)) == (
        Served(model="m", tier=2, score=41, router="heuristic", dedup="FOLLOWER"), 0)
    events = [
        TextDelta("Hel", ({"token": "Hel", "logprob": -0.1, "top_logprobs": []},)),
        TextDelta("lo"),
        ToolCallStart(0, "call_1", "lookup"), ToolCallDelta(0, '{"q": "x"}'),
        Finish("tool_calls", None, Usage(3, 4, 1, 0), "up-m"),
    ]
    assert decode_item(*encode_item(events, 123)) == (events, 123)


def test_a_result_comes_back_as_a_followers() -> None:
    second = ChatResult((TextPart("b"),), stop_reason="length")
    result = ChatResult(
        (TextPart("a"), ToolCall("call_1", "lookup", "{}")), stop_reason="tool_calls",
        stop_sequence=None, usage=Usage(5, 6, 7, 8), upstream_model="up-m",
        logprobs=({"token": "a", "logprob": -0.5, "top_logprobs": []},),
        extra_choices=(second,),
    )
    done = decode_result(encode_result(NodeResult(result, SERVED, 0.25, 1.5)))
    assert done.result == result
    assert done.served.dedup == "FOLLOWER" and done.served.model == "m"
    assert (done.cost_usd, done.saved_usd) == (0.25, 1.5)


def test_thinking_comes_back_intact() -> None:
    events = [ThinkingDelta("Hmm."), ThinkingDelta(signature="sig=="),
              ThinkingDelta("opaque", redacted=True), TextDelta("ok"), Finish()]
    assert decode_item(*encode_item(events, 7)) == (events, 7)
    result = ChatResult((ThinkingPart("Hmm.", "sig=="), ThinkingPart("opaque", redacted=True),
                         TextPart("ok")))
    assert decode_result(encode_result(NodeResult(result, SERVED, 0.0, 0.0))).result == result


def test_errors_keep_their_class_and_details() -> None:
    limited = decode_error(encode_error(
        UpstreamRateLimited("slow down", retry_after=2.0, backend="m")))
    assert type(limited) is UpstreamRateLimited
    assert (limited.message, limited.retry_after, limited.backend, limited.status) == (
        "slow down", 2.0, "m", 429)
    none = decode_error(encode_error(NoBackendAvailable("no backend")))
    assert type(none) is NoBackendAvailable and none.message == "no backend"
    assert type(decode_error(encode_error(RouterError("internal error")))) is RouterError
