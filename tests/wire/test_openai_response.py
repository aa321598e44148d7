"""The OpenAI chat completion both ways (``engine.wire.openai.response``): an upstream's
completion read into the canonical result, and the canonical result written for clients.

The rendering is checked the way it matters, by the official ``openai`` SDK parsing it: an
``httpx.MockTransport`` hands the SDK our bytes in place of a server.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support_openai_wire import LOGPROB, PROVIDER, SDK_MESSAGES, WEATHER, json_response, sdk_client

from engine.errors import UpstreamError
from engine.messages import ChatRequest, ChatResult, TextPart, Tool, ToolCall, Usage
from engine.wire.openai.errors import error_message, is_error
from engine.wire.openai.request import parse_request
from engine.wire.openai.response import (
    _arguments_text,
    _parse_logprobs,
    _parse_usage,
    _stop_reason,
    _text_of,
    parse_result,
    render_result,
)

# ---- reading an upstream's completion: parse_result ----------------------------------------------


def completion(message: dict[str, Any], finish: str | None = "stop", **extra: Any) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            **extra,
        }
    )


def test_parse_result_text_and_usage() -> None:
    usage = {
        "prompt_tokens": 20,
        "completion_tokens": 5,
        "total_tokens": 25,
        "prompt_tokens_details": {"cached_tokens": 8},
    }
    result = PROVIDER.parse_result(completion({"role": "assistant", "content": "Hi"}, usage=usage))
    assert result == ChatResult(
        content=(TextPart("Hi"),),
        stop_reason="stop",
        usage=Usage(input_tokens=12, output_tokens=5, cache_read_tokens=8),
        upstream_model="gpt-4o-2024-08-06",
    )


def test_parse_result_every_choice_and_its_logprobs() -> None:
    body = orjson.dumps({
        "model": "m",
        "choices": [  # out of order on purpose: index decides
            {"index": 1, "message": {"role": "assistant", "content": "B"},
             "finish_reason": "length", "logprobs": None},
            {"index": 0, "message": {"role": "assistant", "content": "Hi"},
             "finish_reason": "stop", "logprobs": {"content": [LOGPROB], "refusal": None}},
        ],
        "usage": {"prompt_tokens": 4, "completion_tokens": 3},
    })
    result = PROVIDER.parse_result(body)
    assert [(c.text, c.stop_reason, c.logprobs) for c in result.choices] == [
        ("Hi", "stop", (LOGPROB,)), ("B", "length", None)
    ]
    assert result.usage == Usage(input_tokens=4, output_tokens=3)  # all choices'
    assert result.extra_choices[0].usage == Usage()


def test_parse_result_tool_calls() -> None:
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}},
            {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
        ],
    }
    result = PROVIDER.parse_result(completion(message, "tool_calls"))
    assert result.content == (ToolCall("a", "f", '{"x":1}'), ToolCall("b", "g", "{}"))
    assert result.stop_reason == "tool_calls"
    assert result.usage == Usage()


@pytest.mark.parametrize(
    ("finish", "expected"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("tool_calls", "tool_calls"),
        ("function_call", "tool_calls"),
        ("content_filter", "content_filter"),
        ("eos", "stop"),
        (None, "stop"),
    ],
)
def test_parse_result_stop_reasons(finish: str | None, expected: str) -> None:
    result = PROVIDER.parse_result(completion({"role": "assistant", "content": "x"}, finish))
    assert result.stop_reason == expected


@pytest.mark.parametrize(
    "body",
    [
        b"<html>502 Bad Gateway</html>",
        b'"a string"',
        b"{}",
        b'{"choices": []}',
        b'{"choices": [{"message": null}]}',
        b'{"choices": [{"message": {"tool_calls": [{"id": "x"}]}}]}',
    ],
)
def test_parse_result_rejects_what_is_not_a_completion(body: bytes) -> None:
    with pytest.raises(UpstreamError, match="upstream sent an invalid chat completion"):
        PROVIDER.parse_result(body)


def test_result_round_trips_through_both_sides() -> None:
    result = ChatResult(
        content=(TextPart("Let me check."), ToolCall("call_1", "f", '{"city":"Oslo"}')),
        stop_reason="tool_calls",
        usage=Usage(input_tokens=7, output_tokens=9, cache_read_tokens=3),
        upstream_model="m",
    )
    body = render_result(result, id="chatcmpl-x", model="m", created=5)
    assert PROVIDER.parse_result(body) == result


def _parse_result_choice_by_choice(body: bytes) -> ChatResult:
    """``parse_result`` as it was before it built one result for the first choice: a
    result per choice, the first then rebuilt with the answer's usage and model."""

    def choice_result(choice: dict[str, Any]) -> ChatResult:
        message = choice["message"]
        content: list[TextPart | ToolCall] = []
        text = _text_of(message.get("content")) or _text_of(message.get("refusal"))
        if text:
            content.append(TextPart(text))
        calls = [ToolCall(id=call.get("id") or f"call_{i}", name=call["function"]["name"],
                          arguments=_arguments_text(call["function"].get("arguments")))
                 for i, call in enumerate(message.get("tool_calls") or ())]
        content.extend(calls)
        return ChatResult(content=tuple(content),
                          stop_reason=_stop_reason(choice.get("finish_reason"), bool(calls)),
                          logprobs=_parse_logprobs(choice.get("logprobs")))

    try:
        data = orjson.loads(body)
        if isinstance(data, dict) and "choices" not in data and is_error(data):
            raise UpstreamError(f"upstream sent an error: {error_message(200, body)}")
        choices = sorted(data["choices"], key=lambda c: c.get("index") or 0)
        results = [choice_result(choice) for choice in choices]
        first = results[0]
        usage = _parse_usage(data.get("usage"))
        model = data.get("model")
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        detail = f"{type(exc).__name__}: {exc}"
        raise UpstreamError(f"upstream sent an invalid chat completion: {detail}") from None
    return ChatResult(content=first.content, stop_reason=first.stop_reason, usage=usage,
                      upstream_model=model if isinstance(model, str) else None,
                      logprobs=first.logprobs, extra_choices=tuple(results[1:]))


_JUNK: Any = st.one_of(st.none(), st.integers(-1, 3), st.text(max_size=3), st.just([]), st.just({}))


def _mostly(valid: Any) -> Any:
    """``valid`` values, or now and then any value at all."""
    return st.integers(0, 7).flatmap(lambda i: _JUNK if i == 0 else valid)


_CALL = st.fixed_dictionaries(
    {"function": _mostly(st.fixed_dictionaries(
        {"name": st.sampled_from(["f", "get_weather"])},
        optional={"arguments": _mostly(st.sampled_from(['{"a": 1}', {"a": 1}]))}))},
    optional={"id": _mostly(st.just("call_x"))})
_MESSAGE = st.fixed_dictionaries({}, optional={
    "content": _mostly(st.one_of(st.text(max_size=5), st.lists(
        _mostly(st.fixed_dictionaries({"text": st.text(max_size=3)})), max_size=2))),
    "refusal": _mostly(st.text(max_size=5)),
    "tool_calls": _mostly(st.lists(_CALL, max_size=2)),
})
_CHOICE = _mostly(st.fixed_dictionaries(
    {"message": _mostly(_MESSAGE)},
    optional={"index": _mostly(st.integers(0, 3)),
              "finish_reason": _mostly(st.sampled_from(
                  ["stop", "length", "tool_calls", "function_call", "content_filter"])),
              "logprobs": _mostly(st.fixed_dictionaries(
                  {"content": _mostly(st.lists(st.just(LOGPROB), max_size=2))}))}))
_COMPLETION = _mostly(st.one_of(
    st.fixed_dictionaries(
        {"choices": _mostly(st.lists(_CHOICE, min_size=1, max_size=3))},
        optional={"usage": _mostly(st.fixed_dictionaries(
                      {"prompt_tokens": st.integers(0, 50),
                       "completion_tokens": st.integers(0, 50)},
                      optional={"prompt_tokens_details": st.fixed_dictionaries(
                          {"cached_tokens": st.integers(0, 60)})})),
                  "model": _mostly(st.just("m-1"))}),
    st.fixed_dictionaries({"error": st.fixed_dictionaries({"message": st.text(max_size=5)})}),
))


def _outcome(parse: Any, body: bytes) -> Any:
    try:
        return parse(body)
    except UpstreamError as exc:
        return ("error", exc.message)


@settings(max_examples=1000, deadline=None)
@given(_COMPLETION)
def test_parse_result_is_the_choice_by_choice_reading(data: Any) -> None:
    body = orjson.dumps(data)
    assert _outcome(parse_result, body) == _outcome(_parse_result_choice_by_choice, body)


# ---- writing a client's completion, checked by the official SDK ----------------------------------


RESULT = ChatResult(
    content=(TextPart("Checking"), ToolCall("call_1", "get_weather", '{"city": "Oslo"}')),
    stop_reason="tool_calls",
    usage=Usage(input_tokens=12, output_tokens=4, cache_read_tokens=2),
)


SDK_TOOLS: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]


def test_sdk_reads_a_rendered_result_and_its_request_parses() -> None:
    seen: list[ChatRequest] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(parse_request(request.content))
        return json_response(render_result(RESULT, id="chatcmpl-r", model="m", created=42))

    client = sdk_client(handler)
    completion = client.chat.completions.create(
        model="auto", messages=SDK_MESSAGES, tools=SDK_TOOLS, max_completion_tokens=50, seed=3
    )
    assert seen[0].model is None
    assert seen[0].system == "be nice"
    assert seen[0].tools == (Tool("get_weather", "", WEATHER),)
    assert (seen[0].max_tokens, seen[0].seed) == (50, 3)
    assert completion.id == "chatcmpl-r"
    assert completion.created == 42
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking"
    [call] = choice.message.tool_calls or []
    assert (call.id, call.function.name, call.function.arguments) == (
        "call_1",
        "get_weather",
        '{"city": "Oslo"}',
    )
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.total_tokens) == (14, 18)
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 2


def test_rendered_result_shape() -> None:
    only_calls = ChatResult(content=(ToolCall("c", "f", "{}"),), stop_reason="tool_calls")
    body = orjson.loads(render_result(only_calls, id="i", model="m", created=1))
    assert body == {
        "id": "i",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        "system_fingerprint": None,
    }
    empty = orjson.loads(render_result(ChatResult(content=()), id="i", model="m", created=1))
    assert empty["choices"][0]["message"] == {"role": "assistant", "content": "", "refusal": None}


def test_rendered_result_has_every_choice_and_logprobs() -> None:
    result = ChatResult(
        (TextPart("Hi"),), logprobs=(LOGPROB,), usage=Usage(4, 3),
        extra_choices=(ChatResult((TextPart("B"),), stop_reason="length"),),
    )
    data = orjson.loads(render_result(result, id="c", model="m", created=1))
    assert [(c["index"], c["message"]["content"], c["finish_reason"], c["logprobs"])
            for c in data["choices"]] == [
        (0, "Hi", "stop", {"content": [LOGPROB], "refusal": None}), (1, "B", "length", None)
    ]
    assert data["usage"]["completion_tokens"] == 3
