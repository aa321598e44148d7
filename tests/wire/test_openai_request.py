"""The OpenAI chat-completions request both ways (``engine.wire.openai.request``): what
clients send, parsed into the canonical request, and the canonical request written as an
OpenAI-compatible upstream's body.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support_openai_wire import PROVIDER, WEATHER

from engine.errors import RequestInvalid
from engine.messages import (
    ChatRequest,
    ImagePart,
    Message,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
)
from engine.wire.openai import request as request_module
from engine.wire.openai.request import parse_request
from engine.wire.providers import OllamaProvider


def request_of(**fields: Any) -> bytes:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], **fields}
    return orjson.dumps(body)


def upstream_body(request: ChatRequest, *, stream: bool = False) -> dict[str, Any]:
    call = PROVIDER.build_call(
        request, model="m-1", base_url="http://up/v1/", api_key="k", stream=stream
    )
    return orjson.loads(call.body)


# ---- reading a client's request: parse_request ---------------------------------------------------


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
        "metadata": {"b": "2", "a": "1"},  # OpenAI's own: for OpenAI-compatible upstreams
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
        max_tokens_param="max_completion_tokens",
        stop=("END",),
        seed=7,
        n=1,
        user="u-1",
        frequency_penalty=0.5,
        logit_bias=(("13", 5.0), ("50256", -100.0)),
        logprobs=True,
        top_logprobs=2,
        reasoning_effort="low",
        metadata=(("a", "1"), ("b", "2")),
        store=False,
        service_tier="auto",
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
            "messages[0].content[0].file",
            "one of 'file_data' or 'file_id'",
        ),
        (
            orjson.dumps(_messages({"role": "user", "content": [{"type": "file"}]})),
            "messages[0].content[0].file",
            "expected an object",
        ),
        (
            orjson.dumps(_messages({"role": "user", "content": [
                {"type": "file", "file": {"file_data": "data:application/pdf,abc"}}]})),
            "messages[0].content[0].file.file_data",
            "base64 data URL",
        ),
        (
            orjson.dumps(_messages({"role": "user", "content": [
                {"type": "file", "file": {"file_id": "f", "filename": 3}}]})),
            "messages[0].content[0].file.filename",
            "non-empty string",
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
        (request_of(logit_bias={"\u00b9": 1}), "logit_bias", "token ids"),
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
        (request_of(web_search_options=[]), "web_search_options", "an object"),
        (request_of(prediction={"content": "x"}), "prediction", "\"content\""),
        (request_of(metadata={"a": 1}), "metadata", "an object of strings"),
        (request_of(store="yes"), "store", "boolean"),
        (request_of(service_tier=""), "service_tier", "non-empty string"),
        (request_of(prompt_cache_key=1), "prompt_cache_key", "non-empty string"),
        (request_of(safety_identifier=[]), "safety_identifier", "non-empty string"),
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


# ---- writing the upstream's request: build_call --------------------------------------------------


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
        "max_tokens": 64,  # the name every OpenAI-compatible server reads
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


def test_ollama_gets_the_older_name_of_the_output_limit() -> None:
    call = OllamaProvider().build_call(ChatRequest(messages=(Message("user", (TextPart("hi"),)),),
                                                   max_tokens=9,
                                                   max_tokens_param="max_completion_tokens"),
                                       model="m-1", base_url="http://up", api_key=None,
                                       stream=False)
    body = orjson.loads(call.body)
    assert body["max_tokens"] == 9 and "max_completion_tokens" not in body


# ---- the plain body's path, held to the general one ---------------------------------------------

_ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 300_000), st.floats(-5, 5, allow_nan=False),
    st.sampled_from(["", "auto", "gpt-4o", "x"]), st.just([]), st.just({}),
)
_MESSAGE = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "developer"]),
                           "content": st.sampled_from(["hi", "", [{"type": "text", "text": "a"}],
                                                       None])}),
    st.just({"role": "assistant", "content": "so"}),
    st.just({"role": "tool", "tool_call_id": "c1", "content": "r"}),
)


def _mostly(valid: Any) -> Any:
    """``valid`` values, or now and then any value at all."""
    return st.integers(0, 3).flatmap(lambda i: _ANY_VALUE if i == 0 else valid)


_PLAIN_VALUES = {
    "model": _mostly(st.sampled_from(["auto", "gpt-4o"])),
    "messages": _mostly(st.lists(_mostly(_MESSAGE), max_size=2).map(
        lambda messages: [*messages, {"role": "user", "content": "q"}])),
    "temperature": _mostly(st.floats(0, 2)),
    "top_p": _mostly(st.floats(0, 1)),
    "max_tokens": _mostly(st.integers(1, 4096)),
    "max_completion_tokens": _mostly(st.integers(1, 4096)),
    "stream": _mostly(st.booleans()),
    "stream_options": _mostly(
        st.fixed_dictionaries({}, optional={"include_usage": _mostly(st.booleans())})),
}


def _outcome(parse: Any, data: Any) -> Any:
    try:
        return parse(data)
    except RequestInvalid as exc:
        return ("invalid", exc.message, exc.param)


@settings(max_examples=1000, deadline=None)
@given(st.one_of(  # messages mostly present: without them every body is the same fault
    st.fixed_dictionaries({"messages": _PLAIN_VALUES["messages"]}, optional={
        key: value for key, value in _PLAIN_VALUES.items() if key != "messages"}),
    st.fixed_dictionaries({}, optional=_PLAIN_VALUES)))
def test_a_plain_body_reads_as_the_general_reading_reads_it(data: dict[str, Any]) -> None:
    assert data.keys() <= request_module._PLAIN
    plain = _outcome(request_module._parse_plain, data)
    assert plain == _outcome(request_module._parse_any, data)
    assert plain == _outcome(parse_request, orjson.dumps(data))


def test_a_body_with_any_other_field_takes_the_general_reading() -> None:
    # top_k is not a plain field: it must be read, not left at its default
    assert parse_request(request_of(top_k=3, temperature=0.5)).top_k == 3
    with pytest.raises(RequestInvalid) as caught:
        parse_request(request_of(seed="x", temperature=0.5))
    assert caught.value.param == "seed"
