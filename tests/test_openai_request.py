"""The OpenAI wire format both ways: inbound (``engine.wire.openai.client``) and upstream
(``engine.wire.openai.upstream``).

The rendering is checked the way it matters, by the official ``openai`` SDK parsing it: an
``httpx.MockTransport`` hands the SDK our bytes in place of a server. The upstream decoder is
fed bytes in OpenAI's real format, split at arbitrary points.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Any

import httpx
import openai
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import (
    ModelNotFound,
    NoBackendAvailable,
    PayloadTooLarge,
    RateLimited,
    RequestInvalid,
    RouterError,
    Unauthorized,
    UpstreamError,
)
from engine.messages import (
    ChatRequest,
    ChatResult,
    Event,
    Finish,
    ImagePart,
    Message,
    ResultBuilder,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolChoice,
    ToolResult,
    Usage,
)
from engine.testing.fake_upstream import Behaviour, FakeUpstream
from engine.testing.fake_upstream import ToolCall as FakeToolCall
from engine.wire.openai.errors import render_error
from engine.wire.openai.request import parse_request
from engine.wire.openai.response import OpenAIStreamDecoder, StreamEncoder, render_result
from engine.wire.providers import OpenAIProvider

PROVIDER = OpenAIProvider()
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def request_of(**fields: Any) -> bytes:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], **fields}
    return orjson.dumps(body)


def upstream_body(request: ChatRequest, *, stream: bool = False) -> dict[str, Any]:
    call = PROVIDER.build_call(
        request, model="m-1", base_url="http://up/v1/", api_key="k", stream=stream
    )
    return orjson.loads(call.body)


# ---- inbound: parse_request ----------------------------------------------------------------


def test_minimal_request() -> None:
    request = parse_request(request_of())
    assert request == ChatRequest(messages=(Message("user", (TextPart("hi"),)),), model="gpt-4o")


@pytest.mark.parametrize("model", [None, "auto"])
def test_auto_or_no_model_lets_the_router_choose(model: str | None) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}]}
    if model is not None:
        body["model"] = model
    assert parse_request(orjson.dumps(body)).model is None


def test_full_request_translation() -> None:
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is here?"},
                    {"type": "image_url", "image_url": {"url": "https://x/cat.png"}},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}},
                    {"id": "c2", "type": "function", "function": {"name": "w", "arguments": "{"}},
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "rain"}]},
            {"role": "user", "content": "thanks"},
        ],
        "tools": [{"type": "function", "function": {"name": "w", "parameters": WEATHER}}],
        "tool_choice": {"type": "function", "function": {"name": "w"}},
        "parallel_tool_calls": False,
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {}}},
        "temperature": 0.5,
        "top_p": 1,
        "max_completion_tokens": 100,
        "stop": "END",
        "seed": 7,
        "n": 1,
        "user": "u-1",
        "stream": True,
        "stream_options": {"include_usage": True},
        "frequency_penalty": 0.5,
        "presence_penalty": 0,  # no penalty: the same as none
        "logit_bias": {"50256": -100, "13": 5},
        "logprobs": True,
        "top_logprobs": 2,
        "reasoning_effort": "low",
        "verbosity": "high",
        "metadata": {"a": "b"},  # does not change the answer: ignored
        "store": False,
        "service_tier": "auto",
    }
    assert parse_request(orjson.dumps(body)) == ChatRequest(
        model="gpt-4o",
        system="Be brief.\n\nUse metric.",
        messages=(
            Message(
                "user",
                (
                    TextPart("What is here?"),
                    ImagePart(url="https://x/cat.png"),
                    ImagePart(media_type="image/png", data="iVBO"),
                ),
            ),
            Message("assistant", (ToolCall("c1", "w", "{}"), ToolCall("c2", "w", "{"))),
            Message("user", (ToolResult("c1", "sunny"), ToolResult("c2", "rain"))),
            Message("user", (TextPart("thanks"),)),
        ),
        tools=(Tool("w", "", WEATHER),),
        tool_choice=ToolChoice("tool", "w"),
        parallel_tool_calls=False,
        json_mode=True,
        json_schema={"name": "s", "schema": {}},
        temperature=0.5,
        top_p=1,
        max_tokens=100,
        stop=("END",),
        seed=7,
        n=1,
        user="u-1",
        frequency_penalty=0.5,
        logit_bias=(("13", 5.0), ("50256", -100.0)),
        logprobs=True,
        top_logprobs=2,
        reasoning_effort="low",
        verbosity="high",
        stream=True,
        include_usage=True,
    )


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"response_format": {"type": "text"}}, (False, None)),
        ({"response_format": {"type": "json_object"}}, (True, None)),
        ({"response_format": None}, (False, None)),
    ],
)
def test_response_format(fields: dict[str, Any], expected: tuple[bool, Any]) -> None:
    request = parse_request(request_of(**fields))
    assert (request.json_mode, request.json_schema) == expected


def test_sampling_options_and_null_means_unset() -> None:
    request = parse_request(
        request_of(max_tokens=5, stop=["a", "b"], temperature=None, n=None, stream=False)
    )
    assert (request.max_tokens, request.stop, request.temperature, request.n) == (
        5,
        ("a", "b"),
        None,
        1,
    )
    # include_usage only means something for a stream
    assert not parse_request(request_of(stream_options={"include_usage": True})).include_usage


def test_assistant_text_with_tool_calls_and_tool_choice_modes() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "Calling.", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c", "content": "done"},
    ]
    tools = [{"type": "function", "function": {"name": "f", "description": "does f"}}]
    for mode in ("auto", "none", "required"):
        request = parse_request(request_of(messages=messages, tools=tools, tool_choice=mode))
        assert request.tool_choice == ToolChoice(mode)
    assert request.messages[1].parts == (TextPart("Calling."), ToolCall("c", "f", "{}"))
    assert request.messages[2] == Message("user", (ToolResult("c", "done"),))
    assert request.tools == (Tool("f", "does f", None),)


def _messages(*messages: Any) -> dict[str, Any]:
    return {"messages": list(messages)}


USER = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"", None, "not valid JSON"),
        (b"[1, 2]", None, "JSON object"),
        (orjson.dumps({"model": "m"}), "messages", "Missing required parameter"),
        (orjson.dumps({"messages": []}), "messages", "at least one"),
        (orjson.dumps({"messages": "hi"}), "messages", "expected an array"),
        (orjson.dumps(_messages(USER, "hi")), "messages[1]", "expected an object"),
        (orjson.dumps(_messages({"content": "x"})), "messages[0].role", "Missing"),
        (orjson.dumps(_messages({"role": "bot", "content": "x"})), "messages[0].role", "'bot'"),
        (orjson.dumps(_messages({"role": "function", "content": "x"})), "messages[0].role", ""),
        (orjson.dumps(_messages({"role": "system", "content": "x"})), "messages", "only system"),
        (orjson.dumps(_messages({"role": "user"})), "messages[0].content", "Missing"),
        (orjson.dumps(_messages({"role": "user", "content": 3})), "messages[0].content", "number"),
        (orjson.dumps(_messages({"role": "user", "content": []})), "messages[0].content", "empty"),
        (
            orjson.dumps(_messages(USER, {"role": "user", "content": [{"text": "x"}]})),
            "messages[1].content[0].type",
            "Missing",
        ),
        (
            orjson.dumps(_messages({"role": "user", "content": [{"type": "text", "text": 1}]})),
            "messages[0].content[0].text",
            "expected a string",
        ),
        (
            orjson.dumps(_messages({"role": "user", "content": [{"type": "input_audio"}]})),
            "messages[0].content[0].type",
            "not supported",
        ),
        (
            orjson.dumps(_messages({"role": "user", "content": [{"type": "file", "file": {}}]})),
            "messages[0].content[0].type",
            "not supported",
        ),
        (
            orjson.dumps(_messages({"role": "user", "content": [{"type": "video"}]})),
            "messages[0].content[0].type",
            "'video'",
        ),
        (
            orjson.dumps(
                _messages({"role": "user", "content": [{"type": "image_url", "image_url": {}}]})
            ),
            "messages[0].content[0].image_url.url",
            "string",
        ),
        (
            orjson.dumps(
                _messages(
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:x,abc"}}],
                    }
                )
            ),
            "messages[0].content[0].image_url.url",
            "base64",
        ),
        (
            orjson.dumps(_messages(USER, {"role": "assistant", "content": None})),
            "messages[1].content",
            "tool_calls",
        ),
        (
            orjson.dumps(_messages(USER, {"role": "assistant", "tool_calls": [{"id": "c"}]})),
            "messages[1].tool_calls[0].function",
            "object",
        ),
        (
            orjson.dumps(
                _messages(
                    USER,
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {}}}],
                    },
                )
            ),
            "messages[1].tool_calls[0].function.arguments",
            "string",
        ),
        (
            orjson.dumps(_messages(USER, {"role": "tool", "content": "x"})),
            "messages[1].tool_call_id",
            "Missing",
        ),
        (
            orjson.dumps(_messages(USER, {"role": "tool", "tool_call_id": "c"})),
            "messages[1].content",
            "Missing",
        ),
        (request_of(model=3), "model", "string"),
        (request_of(temperature=2.5), "temperature", "between 0 and 2"),
        (request_of(temperature="hot"), "temperature", "number"),
        (request_of(temperature=True), "temperature", "boolean"),
        (request_of(top_p=-0.1), "top_p", "between 0 and 1"),
        (request_of(max_tokens=0), "max_tokens", "at least 1"),
        (request_of(max_tokens=1.5), "max_tokens", "integer"),
        (request_of(max_completion_tokens=-1), "max_completion_tokens", "at least 1"),
        (request_of(n=0), "n", "between 1 and 8"),
        (request_of(n=9), "n", "between 1 and 8"),
        (request_of(n=2, stream=True), "n", "not supported with 'stream'"),
        (request_of(frequency_penalty=2.5), "frequency_penalty", "between -2 and 2"),
        (request_of(presence_penalty="x"), "presence_penalty", "number"),
        (request_of(logit_bias=[1]), "logit_bias", "object"),
        (request_of(logit_bias={"abc": 1}), "logit_bias", "token ids"),
        (request_of(logit_bias={"13": 101}), "logit_bias", "between -100 and 100"),
        (request_of(logit_bias={"13": "x"}), "logit_bias", "got a string"),
        (request_of(logprobs=1), "logprobs", "boolean"),
        (request_of(top_logprobs=2), "top_logprobs", "requires 'logprobs'"),
        (request_of(logprobs=True, top_logprobs=21), "top_logprobs", "between 0 and 20"),
        (request_of(reasoning_effort=""), "reasoning_effort", "non-empty string"),
        (request_of(verbosity=3), "verbosity", "non-empty string"),
        (request_of(functions=[{"name": "f"}]), "functions", "use 'tools'"),
        (request_of(function_call="auto"), "function_call", "use 'tool_choice'"),
        (request_of(modalities=["text", "audio"]), "modalities", "'text' output modality"),
        (request_of(audio={"voice": "alloy"}), "audio", "not supported"),
        (request_of(web_search_options={}), "web_search_options", "not supported"),
        (request_of(seed="x"), "seed", "integer"),
        (request_of(stop=["a", "b", "c", "d", "e"]), "stop", "at most 4"),
        (request_of(stop=[1]), "stop[0]", "string"),
        (request_of(stop=3), "stop", "string"),
        (request_of(user=1), "user", "string"),
        (request_of(stream="yes"), "stream", "boolean"),
        (request_of(stream_options=[]), "stream_options", "object"),
        (
            request_of(stream=True, stream_options={"include_usage": 1}),
            "stream_options.include_usage",
            "",
        ),
        (request_of(parallel_tool_calls="no"), "parallel_tool_calls", "boolean"),
        (request_of(tools={}), "tools", "array"),
        (request_of(tools=[{"type": "function"}]), "tools[0].function", "object"),
        (request_of(tools=[{"type": "web_search"}]), "tools[0].type", "'web_search'"),
        (request_of(tools=[{"function": {"name": ""}}]), "tools[0].function.name", "non-empty"),
        (
            request_of(tools=[{"function": {"name": "f", "parameters": []}}]),
            "tools[0].function.parameters",
            "object",
        ),
        (request_of(tool_choice="any"), "tool_choice", "expected 'auto'"),
        (request_of(tool_choice="required"), "tool_choice", "requires 'tools'"),
        (
            request_of(
                tools=[{"function": {"name": "f"}}],
                tool_choice={"type": "function", "function": {"name": "g"}},
            ),
            "tool_choice.function.name",
            "'g'",
        ),
        (request_of(response_format="json"), "response_format", "object"),
        (request_of(response_format={"type": "xml"}), "response_format.type", "'xml'"),
        (
            request_of(response_format={"type": "json_schema"}),
            "response_format.json_schema",
            "object",
        ),
        (
            request_of(response_format={"type": "json_schema", "json_schema": {"schema": {}}}),
            "response_format.json_schema.name",
            "Missing",
        ),
    ],
)
def test_invalid_requests_name_the_field(body: bytes, param: str | None, words: str) -> None:
    with pytest.raises(RequestInvalid) as info:
        parse_request(body)
    assert info.value.param == param
    assert words in info.value.message
    assert info.value.status == 400


# ---- upstream: build_call ------------------------------------------------------------------


def test_build_call_url_headers_and_minimal_body() -> None:
    request = ChatRequest(messages=(Message("user", (TextPart("hi"),)),))
    call = PROVIDER.build_call(
        request, model="m", base_url="http://h/v1/", api_key="k", stream=False
    )
    assert call.url == "http://h/v1/chat/completions"
    assert call.headers == {"content-type": "application/json", "authorization": "Bearer k"}
    assert orjson.loads(call.body) == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
    }
    keyless = PROVIDER.build_call(
        request, model="m", base_url="http://h", api_key=None, stream=True
    )
    assert "authorization" not in keyless.headers
    body = orjson.loads(keyless.body)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_build_call_translates_everything() -> None:
    request = ChatRequest(
        system="sys",
        messages=(
            Message("user", (TextPart("a"), TextPart("b"))),
            Message(
                "user",
                (
                    TextPart("look"),
                    ImagePart(url="https://x/i.png"),
                    ImagePart(media_type="image/jpeg", data="/9j/"),
                ),
            ),
            Message("assistant", (ToolCall("c1", "f", '{"x":1}'),)),
            Message("user", (ToolResult("c1", "r1"), ToolResult("c2", "r2"), TextPart("more"))),
            Message("user", (ToolResult("c3", "r3"),)),
            Message("assistant", (TextPart("ok"), ToolCall("c4", "g", "{}"))),
        ),
        tools=(Tool("f", "does f", WEATHER), Tool("g")),
        tool_choice=ToolChoice("tool", "f"),
        parallel_tool_calls=True,
        json_mode=True,
        temperature=0.2,
        top_p=0.9,
        max_tokens=64,
        stop=("x",),
        seed=1,
        n=3,
        user="u",
        frequency_penalty=0.5,
        presence_penalty=-1.0,
        logit_bias=(("13", 5.0), ("50256", -100.0)),
        logprobs=True,
        top_logprobs=3,
        reasoning_effort="high",
        verbosity="low",
    )
    assert upstream_body(request) == {
        "model": "m-1",
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "a\nb"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "https://x/i.png"}},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"x":1}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "r1"},
            {"role": "tool", "tool_call_id": "c2", "content": "r2"},
            {"role": "user", "content": "more"},
            {"role": "tool", "tool_call_id": "c3", "content": "r3"},
            {
                "role": "assistant",
                "content": "ok",
                "tool_calls": [
                    {"id": "c4", "type": "function", "function": {"name": "g", "arguments": "{}"}}
                ],
            },
        ],
        "tools": [
            {
                "type": "function",
                "function": {"name": "f", "description": "does f", "parameters": WEATHER},
            },
            {
                "type": "function",
                "function": {"name": "g", "parameters": {"type": "object", "properties": {}}},
            },
        ],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "parallel_tool_calls": True,
        "response_format": {"type": "json_object"},
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 64,
        "stop": ["x"],
        "seed": 1,
        "n": 3,
        "user": "u",
        "frequency_penalty": 0.5,
        "presence_penalty": -1.0,
        "logit_bias": {"13": 5.0, "50256": -100.0},
        "logprobs": True,
        "top_logprobs": 3,
        "reasoning_effort": "high",
        "verbosity": "low",
    }


def test_build_call_refuses_what_the_chat_completions_api_lacks() -> None:
    # top_k is not OpenAI's: OpenAI rejects it and others ignore it, so it is never sent
    # (routing sends such requests to a backend that has it).
    request = ChatRequest(messages=(Message("user", (TextPart("hi"),)),), top_k=5)
    with pytest.raises(RequestInvalid) as info:
        upstream_body(request)
    assert info.value.param == "top_k"


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (ToolChoice("auto"), "auto"),
        (ToolChoice("none"), "none"),
        (ToolChoice("required"), "required"),
    ],
)
def test_build_call_tool_choice_modes(choice: ToolChoice, expected: str) -> None:
    user = (Message("user", (TextPart("q"),)),)
    body = upstream_body(ChatRequest(messages=user, tools=(Tool("f"),), tool_choice=choice))
    assert body["tool_choice"] == expected
    # OpenAI rejects tool_choice and parallel_tool_calls when no tools are sent
    bare = upstream_body(ChatRequest(messages=user, tool_choice=choice, parallel_tool_calls=True))
    assert "tool_choice" not in bare
    assert "parallel_tool_calls" not in bare


def test_build_call_json_schema() -> None:
    schema = {"name": "s", "schema": {"type": "object"}, "strict": True}
    request = ChatRequest(messages=(Message("user", ()),), json_mode=True, json_schema=schema)
    body = upstream_body(request)
    assert body["response_format"] == {"type": "json_schema", "json_schema": schema}
    assert body["messages"] == [{"role": "user", "content": ""}]


def test_inbound_request_reaches_upstream_unchanged() -> None:
    """An OpenAI request through the canonical form comes out as the same OpenAI request."""
    body = {
        "model": "m-1",
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c", "content": "r"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "and this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/gif;base64,R0lG"}},
                ],
            },
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": WEATHER}}],
        "tool_choice": "auto",
        "temperature": 1,
        "stop": ["z"],
    }
    assert upstream_body(parse_request(orjson.dumps(body))) == body


# ---- upstream: parse_result ----------------------------------------------------------------


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


LOGPROB = {"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}


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


def test_stream_logprobs_round_trip() -> None:
    events: list[Event] = [TextDelta("Hi", (LOGPROB,)), TextDelta("!"), Finish()]
    body = encoded_stream(events)
    assert b'"logprobs":{"content":[{"token":"Hi"' in body
    decoded = decode(body)
    assert decoded[:2] == events[:2]
    builder = ResultBuilder()
    builder.add(decoded)
    assert builder.result().logprobs == (LOGPROB,)


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


# ---- upstream: error_message ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, b'{"error": {"message": "bad tool", "type": "invalid_request_error"}}',
         "invalid_request_error: bad tool"),
        (400, b'{"object": "error", "message": "too long", "code": 400}', "too long"),
        (404, b'{"error": "model not found"}', "model not found"),
        (502, b"<html>Bad Gateway</html>", "upstream returned HTTP 502"),
        (500, b"", "upstream returned HTTP 500"),
        (500, b'{"error": {"type": "server_error"}}', "server_error"),
    ],
)
def test_error_message(status: int, body: bytes, expected: str) -> None:
    assert PROVIDER.error_message(status, body) == expected


def test_error_message_is_whole() -> None:
    """The codec quotes the upstream whole: the transport scrubs, then shortens."""
    body = orjson.dumps({"error": {"message": "x" * 1000}})
    assert PROVIDER.error_message(400, body) == "x" * 1000


def test_an_error_body_with_status_200_is_an_error() -> None:
    body = b'{"error": {"type": "server_error", "message": "overloaded"}}'
    with pytest.raises(UpstreamError) as info:
        PROVIDER.parse_result(body)
    assert info.value.message == "upstream sent an error: server_error: overloaded"


# ---- upstream: stream decoding -------------------------------------------------------------


def sse_chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
    """One SSE event exactly as OpenAI sends it (usage null until the usage chunk)."""
    choices = (
        []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    )
    chunk = {
        "id": "chatcmpl-9",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_1",
        "choices": choices,
        "usage": None,
        **extra,
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


USAGE_CHUNK = sse_chunk(
    None,
    usage={
        "prompt_tokens": 11,
        "completion_tokens": 6,
        "total_tokens": 17,
        "prompt_tokens_details": {"cached_tokens": 1},
    },
)
OPENAI_STREAM = b"".join(
    [
        sse_chunk({"role": "assistant", "content": "", "refusal": None}),
        sse_chunk({"content": "Hel"}),
        sse_chunk({"content": "lo"}),
        sse_chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            }
        ),
        sse_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
        sse_chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty":"Oslo"}'}}]}),
        sse_chunk(
            {
                "tool_calls": [
                    {"index": 1, "id": "call_b", "function": {"name": "t", "arguments": "{}"}}
                ]
            }
        ),
        sse_chunk({}, "tool_calls"),
        USAGE_CHUNK,
        b"data: [DONE]\n\n",
    ]
)
OPENAI_EVENTS: list[Event] = [
    TextDelta("Hel"),
    TextDelta("lo"),
    ToolCallStart(0, "call_a", "get_weather"),
    ToolCallDelta(0, '{"ci'),
    ToolCallDelta(0, 'ty":"Oslo"}'),
    ToolCallStart(1, "call_b", "t"),
    ToolCallDelta(1, "{}"),
    Finish(
        stop_reason="tool_calls",
        usage=Usage(input_tokens=10, output_tokens=6, cache_read_tokens=1),
        upstream_model="gpt-4o-mini-2024-07-18",
    ),
]


def decode(data: bytes, cuts: list[int] | None = None) -> list[Event]:
    decoder = PROVIDER.stream_decoder()
    bounds = [0, *sorted(cuts or []), len(data)]
    events: list[Event] = []
    for start, end in pairwise(bounds):
        events += decoder.feed(data[start:end])
    return events + decoder.close()


def test_stream_decoding() -> None:
    assert decode(OPENAI_STREAM) == OPENAI_EVENTS


@given(st.lists(st.integers(0, len(OPENAI_STREAM)), max_size=30))
def test_stream_decoding_is_independent_of_read_boundaries(cuts: list[int]) -> None:
    assert decode(OPENAI_STREAM, cuts) == OPENAI_EVENTS


def test_stream_decoding_with_crlf_line_endings() -> None:
    assert decode(OPENAI_STREAM.replace(b"\n", b"\r\n"), [1, 77, 300]) == OPENAI_EVENTS


def test_finish_is_held_back_until_done() -> None:
    decoder = OpenAIStreamDecoder()
    assert decoder.feed(sse_chunk({"content": "x"})) == [TextDelta("x")]
    assert decoder.feed(sse_chunk({}, "length")) == []
    assert decoder.feed(USAGE_CHUNK) == []
    [finish] = decoder.feed(b"data: [DONE]\n\n")
    assert finish == Finish(
        "length", usage=Usage(10, 6, 1), upstream_model="gpt-4o-mini-2024-07-18"
    )
    assert decoder.feed(sse_chunk({"content": "late"}) + b"data: [DONE]\n\n") == []
    assert decoder.close() == []


def test_finish_at_close_when_the_server_sends_no_done() -> None:
    decoder = OpenAIStreamDecoder()
    assert decoder.feed(sse_chunk({"content": "x"}) + sse_chunk({}, "stop")) == [TextDelta("x")]
    assert decoder.close() == [Finish("stop", upstream_model="gpt-4o-mini-2024-07-18")]


def test_done_without_a_final_blank_line() -> None:
    decoder = OpenAIStreamDecoder()
    decoder.feed(sse_chunk({}, "stop") + USAGE_CHUNK + b"data: [DONE]\n")
    [finish] = decoder.close()
    assert finish.usage.output_tokens == 6


@pytest.mark.parametrize(
    "data",
    [
        b"",
        sse_chunk({"content": "partial answer"}),
        sse_chunk({"content": "x"}) + b'data: {"choices": [{"delta": {"cont',
    ],
)
def test_incomplete_stream_fails_on_close(data: bytes) -> None:
    decoder = OpenAIStreamDecoder()
    decoder.feed(data)
    with pytest.raises(UpstreamError):
        decoder.close()


def test_stream_error_payload() -> None:
    decoder = OpenAIStreamDecoder()
    assert decoder.feed(sse_chunk({"content": "x"})) == [TextDelta("x")]
    error = b'data: {"error": {"message": "The server had an error", "type": "server_error"}}\n\n'
    with pytest.raises(UpstreamError, match="The server had an error"):
        decoder.feed(error)


def test_stream_vllm_error_object() -> None:
    with pytest.raises(UpstreamError, match="context too long"):
        OpenAIStreamDecoder().feed(b'data: {"object":"error","message":"context too long"}\n\n')


@pytest.mark.parametrize(
    "payload",
    [
        b"data: {oops\n\n",
        b"data: [1]\n\n",
        b"data: \n\n",
        b'data: {"choices": ["x"]}\n\n',
        b'data: {"choices": [{"delta": {"tool_calls": [3]}}]}\n\n',
    ],
)
def test_stream_undecodable_data(payload: bytes) -> None:
    with pytest.raises(UpstreamError):
        OpenAIStreamDecoder().feed(payload)


def test_stream_tool_calls_without_index_go_by_id() -> None:
    data = b"".join(
        [
            sse_chunk({"tool_calls": [{"id": "x", "function": {"name": "f", "arguments": "{"}}]}),
            sse_chunk({"tool_calls": [{"function": {"arguments": "}"}}]}),
            sse_chunk({"tool_calls": [{"id": "y", "function": {"name": "g", "arguments": ""}}]}),
            sse_chunk({}, "stop"),  # some servers say "stop" after tool calls
            b"data: [DONE]\n\n",
        ]
    )
    assert decode(data) == [
        ToolCallStart(0, "x", "f"),
        ToolCallDelta(0, "{"),
        ToolCallDelta(0, "}"),
        ToolCallStart(1, "y", "g"),
        Finish("tool_calls", upstream_model="gpt-4o-mini-2024-07-18"),
    ]


# ---- inbound rendering, checked by the official SDK -----------------------------------------


def sdk_client(handler: Callable[[httpx.Request], httpx.Response]) -> openai.OpenAI:
    http = httpx.Client(transport=httpx.MockTransport(handler))
    return openai.OpenAI(http_client=http, base_url="http://router/v1", api_key="x", max_retries=0)


def sse_response(body: bytes) -> httpx.Response:
    return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})


def json_response(body: bytes, status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=body, headers={"content-type": "application/json"})


RESULT = ChatResult(
    content=(TextPart("Checking"), ToolCall("call_1", "get_weather", '{"city": "Oslo"}')),
    stop_reason="tool_calls",
    usage=Usage(input_tokens=12, output_tokens=4, cache_read_tokens=2),
)
SDK_MESSAGES: Any = [
    {"role": "system", "content": "be nice"},
    {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
]
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


STREAM_EVENTS: list[Event] = [
    TextDelta("Let me "),
    TextDelta("check."),
    ToolCallStart(0, "call_1", "get_weather"),
    ToolCallDelta(0, '{"city": '),
    ToolCallDelta(0, '"Oslo"}'),
    ToolCallStart(1, "call_2", "get_time"),
    ToolCallDelta(1, "{}"),
    Finish("tool_calls", usage=Usage(input_tokens=9, output_tokens=21)),
]


def encoded_stream(events: list[Event], *, include_usage: bool = True) -> bytes:
    encoder = StreamEncoder(id="chatcmpl-s", model="m", created=7, include_usage=include_usage)
    return (
        encoder.start()
        + encoder.encode_many(events[:3])
        + b"".join(encoder.encode(e) for e in events[3:])
    )


def test_sdk_accumulates_a_rendered_stream() -> None:
    body = encoded_stream(STREAM_EVENTS)
    client = sdk_client(lambda request: sse_response(body))
    with client.chat.completions.stream(
        model="m", messages=SDK_MESSAGES, stream_options={"include_usage": True}
    ) as stream:
        final = stream.get_final_completion()
    assert final.id == "chatcmpl-s"
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    calls = [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]
    assert calls == [
        ("call_1", "get_weather", '{"city": "Oslo"}'),
        ("call_2", "get_time", "{}"),
    ]
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (9, 21)


def test_sdk_iterates_raw_chunks_of_a_rendered_stream() -> None:
    body = encoded_stream([TextDelta("a"), TextDelta("b"), Finish("length")], include_usage=False)
    client = sdk_client(lambda request: sse_response(body))
    chunks = list(client.chat.completions.create(model="m", messages=SDK_MESSAGES, stream=True))
    assert [c.choices[0].delta.content for c in chunks] == ["", "a", "b", None]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None and c.object == "chat.completion.chunk" for c in chunks)


def test_sdk_raises_on_a_rendered_stream_error() -> None:
    encoder = StreamEncoder(id="i", model="m", created=1, include_usage=True)
    body = (
        encoder.start()
        + encoder.encode(TextDelta("par"))
        + encoder.error(UpstreamError("the backend broke off"))
    )
    assert not body.endswith(b"data: [DONE]\n\n")
    assert encoder.encode(TextDelta("after")) == b""
    client = sdk_client(lambda request: sse_response(body))
    stream = client.chat.completions.create(model="m", messages=SDK_MESSAGES, stream=True)
    with pytest.raises(openai.APIError, match="the backend broke off") as info:
        for _ in stream:
            pass
    assert isinstance(info.value.body, dict)
    assert info.value.body["code"] == "upstream_error"


def test_stream_round_trips_through_the_upstream_decoder() -> None:
    finish = STREAM_EVENTS[-1]
    assert isinstance(finish, Finish)
    expected = [*STREAM_EVENTS[:-1], Finish("tool_calls", usage=finish.usage, upstream_model="m")]
    assert decode(encoded_stream(STREAM_EVENTS)) == expected


events_strategy = st.lists(
    st.one_of(
        st.builds(TextDelta, st.text(min_size=1)),
        st.builds(ToolCallDelta, st.just(0), st.text(min_size=1)),
    ),
    max_size=8,
)


@given(events_strategy, st.sampled_from(["stop", "length", "content_filter"]), st.data())
def test_any_stream_round_trips_at_any_read_boundaries(
    events: list[Event], reason: Any, data: st.DataObject
) -> None:
    events = (
        [ToolCallStart(0, "c", "f"), *events]
        if any(isinstance(e, ToolCallDelta) for e in events)
        else events
    )
    usage = Usage(input_tokens=3, output_tokens=4, cache_read_tokens=1)
    rendered = encoded_stream([*events, Finish(reason, usage=usage)])
    cuts = data.draw(st.lists(st.integers(0, len(rendered)), max_size=10))
    decoded = decode(rendered, cuts)
    expected_reason = (
        "tool_calls"
        if events and reason == "stop" and any(isinstance(e, ToolCallStart) for e in events)
        else reason
    )
    assert decoded == [*events, Finish(expected_reason, usage=usage, upstream_model="m")]


def test_stream_chunk_bytes() -> None:
    encoder = StreamEncoder(id="i", model="m", created=1, include_usage=False)
    prefix = b'data: {"id":"i","object":"chat.completion.chunk","created":1,"model":"m",'
    prefix += b'"system_fingerprint":null,"choices":[{"index":0,"delta":'
    assert encoder.encode(TextDelta('say "hi"')) == (
        prefix + b'{"content":"say \\"hi\\""},"logprobs":null,"finish_reason":null}]}\n\n'
    )
    assert encoder.encode(Finish("stop")) == (
        prefix + b'{},"logprobs":null,"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    )
    assert encoder.encode(Finish("stop")) == b""


# ---- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("err", "status", "kind", "sdk_error"),
    [
        (
            RequestInvalid("bad", param="messages[0]"),
            400,
            "invalid_request_error",
            openai.BadRequestError,
        ),
        (ModelNotFound("no model"), 404, "invalid_request_error", openai.NotFoundError),
        (PayloadTooLarge("too big"), 413, "invalid_request_error", openai.APIStatusError),
        (Unauthorized("who?"), 401, "authentication_error", openai.AuthenticationError),
        (RateLimited("slow down"), 429, "rate_limit_error", openai.RateLimitError),
        (UpstreamError("broke"), 502, "server_error", openai.InternalServerError),
        (NoBackendAvailable("none"), 503, "server_error", openai.InternalServerError),
        (RouterError("oops"), 500, "server_error", openai.InternalServerError),
    ],
)
def test_errors_render_as_openai_error_objects(
    err: RouterError, status: int, kind: str, sdk_error: type[openai.APIStatusError]
) -> None:
    body = render_error(err)
    assert orjson.loads(body) == {
        "error": {"message": err.message, "type": kind, "param": err.param, "code": err.code}
    }
    client = sdk_client(lambda request: json_response(body, status=err.status))
    assert err.status == status
    with pytest.raises(sdk_error) as info:
        client.chat.completions.create(model="m", messages=SDK_MESSAGES)
    assert info.value.status_code == status
    assert info.value.code == err.code
    assert info.value.param == err.param
    assert info.value.type == kind


# ---- upstream codec against the fake provider, over real sockets ----------------------------


async def exchange(fake: FakeUpstream, request: ChatRequest, *, stream: bool) -> httpx.Response:
    call = PROVIDER.build_call(
        request, model="m", base_url=fake.base_url("b", "openai"), api_key="k", stream=stream
    )
    async with httpx.AsyncClient() as client:
        response = await client.post(call.url, headers=call.headers, content=call.body)
    return response


QUESTION = ChatRequest(messages=(Message("user", (TextPart("how are you"),)),), tools=(Tool("f"),))


async def test_codec_against_the_fake_upstream(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(
        "b",
        Behaviour(text="fine thanks", tool_call=FakeToolCall("f", {"city": "Oslo"}, id="call_7")),
        Behaviour(text="fine thanks", tool_call=FakeToolCall("f", {"city": "Oslo"}, id="call_7")),
    )
    result = PROVIDER.parse_result((await exchange(fake_upstream, QUESTION, stream=False)).content)
    assert result.text == "fine thanks"
    assert result.tool_calls == (ToolCall("call_7", "f", '{"city":"Oslo"}'),)
    events = decode((await exchange(fake_upstream, QUESTION, stream=True)).content)
    finish = events[-1]
    assert isinstance(finish, Finish)
    assert finish.stop_reason == result.stop_reason == "tool_calls"
    assert finish.usage == result.usage != Usage()
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "fine thanks"
    assert [e for e in events if isinstance(e, ToolCallStart)] == [ToolCallStart(0, "call_7", "f")]
    arguments = "".join(e.arguments for e in events if isinstance(e, ToolCallDelta))
    assert orjson.loads(arguments) == {"city": "Oslo"}
    [recorded, recorded_stream] = fake_upstream.requests("b")
    assert recorded.headers["authorization"] == "Bearer k"
    assert recorded_stream.body["stream_options"] == {"include_usage": True}


async def test_codec_errors_against_the_fake_upstream(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script("b", Behaviour(status=400), Behaviour(error_event_after=1))
    rejected = await exchange(fake_upstream, QUESTION, stream=False)
    assert rejected.status_code == 400
    assert PROVIDER.error_message(400, rejected.content) != "upstream returned HTTP 400"
    broken = await exchange(fake_upstream, QUESTION, stream=True)
    with pytest.raises(UpstreamError):
        decode(broken.content)
