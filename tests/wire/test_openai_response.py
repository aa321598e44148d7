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
from support_openai_wire import LOGPROB, PROVIDER, SDK_MESSAGES, WEATHER, json_response, sdk_client

from engine.errors import UpstreamError
from engine.messages import ChatRequest, ChatResult, TextPart, Tool, ToolCall, Usage
from engine.wire.openai.request import parse_request
from engine.wire.openai.response import render_result

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
