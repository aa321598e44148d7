"""The Anthropic Messages request both ways (``engine.wire.anthropic.request``): the
canonical request written as Anthropic's body, and what clients send parsed into the canonical
request.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from support_anthropic_wire import PROVIDER, body, payload

from engine.errors import RequestInvalid
from engine.messages import (
    ChatRequest,
    ImagePart,
    Message,
    TextPart,
    ThinkingPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
)
from engine.wire.anthropic.request import parse_request


def user(*parts: Any) -> Message:
    return Message("user", tuple(TextPart(p) if isinstance(p, str) else p for p in parts))


def assistant(*parts: Any) -> Message:
    return Message("assistant", tuple(TextPart(p) if isinstance(p, str) else p for p in parts))


# ---- writing the upstream's request: build_call --------------------------------------------------


def test_build_call_url_headers_and_defaults() -> None:
    call = PROVIDER.build_call(
        ChatRequest(messages=(user("hi"),)),
        model="claude-x",
        base_url="https://api.example/",
        api_key="secret",
        stream=False,
    )
    assert call.url == "https://api.example/v1/messages"
    assert call.headers == {
        "content-type": "application/json",
        "anthropic-version": "2023-06-01",
        "x-api-key": "secret",
    }
    assert orjson.loads(call.body) == {
        "model": "claude-x",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_build_call_without_key_sends_no_key_header() -> None:
    call = PROVIDER.build_call(
        ChatRequest(messages=(user("hi"),)),
        model="m",
        base_url="http://local",
        api_key=None,
        stream=True,
    )
    assert "x-api-key" not in call.headers
    assert orjson.loads(call.body)["stream"] is True


def test_build_call_sampling_options() -> None:
    request = ChatRequest(
        messages=(user("hi"),),
        system="be brief",
        temperature=1.7,
        top_p=0.9,
        top_k=40,
        max_tokens=77,
        stop=("END", "STOP"),
        seed=42,
        user="u-1",
    )
    data = payload(request)
    assert data["system"] == "be brief"
    assert data["temperature"] == 1.0  # Anthropic's range ends at 1
    assert data["top_p"] == 0.9
    assert data["top_k"] == 40
    assert data["max_tokens"] == 77
    assert data["stop_sequences"] == ["END", "STOP"]
    assert data["metadata"] == {"user_id": "u-1"}
    assert "seed" not in data
    assert "stream" not in data


def test_build_call_keeps_temperature_within_range() -> None:
    assert payload(ChatRequest(messages=(user("hi"),), temperature=0.3))["temperature"] == 0.3


def test_build_call_rejects_n() -> None:
    with pytest.raises(RequestInvalid) as info:
        payload(ChatRequest(messages=(user("hi"),), n=2))
    assert info.value.param == "n"
    assert "n > 1" in info.value.message


def test_build_call_json_mode_appends_instruction_and_schema() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    request = ChatRequest(
        messages=(user("hi"),),
        system="sys",
        json_mode=True,
        json_schema={"name": "thing", "schema": schema, "strict": True},
    )
    system = payload(request)["system"]
    assert system.startswith("sys\n\n")
    assert "JSON object" in system
    assert orjson.dumps(schema).decode() in system
    assert '"strict"' not in system


def test_build_call_json_mode_without_system_or_schema() -> None:
    system = payload(ChatRequest(messages=(user("hi"),), json_mode=True))["system"]
    assert "only one valid JSON object" in system
    assert "Schema" not in system


def test_build_call_translates_parts() -> None:
    request = ChatRequest(
        messages=(
            user(
                "look",
                ImagePart(media_type="image/png", data="AAAA"),
                ImagePart(url="https://img.example/a.jpg"),
                ImagePart(url="data:image/webp;base64,QUJD"),
            ),
            assistant("calling", ToolCall("call_1", "lookup", '{"q": "x"}')),
            user(ToolResult("call_1", "42"), ToolResult("call_2", "boom", is_error=True)),
        )
    )
    messages = payload(request)["messages"]
    assert messages[0] == {
        "role": "user",
        "content": [
            {"type": "text", "text": "look"},
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
            },
            {"type": "image", "source": {"type": "url", "url": "https://img.example/a.jpg"}},
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/webp", "data": "QUJD"},
            },
        ],
    }
    assert messages[1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "calling"},
            {"type": "tool_use", "id": "call_1", "name": "lookup", "input": {"q": "x"}},
        ],
    }
    assert messages[2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "42"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "boom", "is_error": True},
        ],
    }


def test_build_call_merges_same_role_turns_and_puts_tool_results_first() -> None:
    request = ChatRequest(
        messages=(
            user("a"),
            user("b"),
            assistant(ToolCall("c1", "f", "")),
            user("then"),
            user(ToolResult("c1", "")),
            assistant(""),  # empty content is dropped, Anthropic rejects it
            assistant("done"),
        )
    )
    assert payload(request)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "c1", "name": "f", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "c1"},
                {"type": "text", "text": "then"},
            ],
        },
        {"role": "assistant", "content": "done"},
    ]


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]", '"text"'])
def test_build_call_rejects_tool_call_arguments_that_are_not_an_object(arguments: str) -> None:
    request = ChatRequest(messages=(user("hi"), assistant(ToolCall("call_9", "calc", arguments))))
    with pytest.raises(RequestInvalid) as info:
        payload(request)
    assert "call_9" in info.value.message
    assert "calc" in info.value.message


def test_build_call_rejects_inline_image_without_media_type() -> None:
    with pytest.raises(RequestInvalid):
        payload(ChatRequest(messages=(user(ImagePart(data="AAAA")),)))


def test_build_call_tools() -> None:
    request = ChatRequest(
        messages=(user("hi"),),
        tools=(
            Tool("get_weather", "Weather now", {"type": "object", "properties": {"c": {}}}),
            Tool("ping"),
        ),
    )
    data = payload(request)
    assert data["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather now",
            "input_schema": {"type": "object", "properties": {"c": {}}},
        },
        {"name": "ping", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in data


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (ToolChoice("auto"), None, {"type": "auto"}),
        (ToolChoice("required"), None, {"type": "any"}),
        (ToolChoice("tool", "f"), None, {"type": "tool", "name": "f"}),
        (ToolChoice("none"), None, {"type": "none"}),
        (None, None, None),
        (None, True, None),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (ToolChoice("required"), False, {"type": "any", "disable_parallel_tool_use": True}),
        (
            ToolChoice("tool", "f"),
            False,
            {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
        ),
        (ToolChoice("none"), False, {"type": "none"}),
    ],
)
def test_build_call_tool_choice(
    choice: ToolChoice | None, parallel: bool | None, expected: dict[str, Any] | None
) -> None:
    request = ChatRequest(
        messages=(user("hi"),), tools=(Tool("f"),), tool_choice=choice, parallel_tool_calls=parallel
    )
    assert payload(request).get("tool_choice") == expected


def test_build_call_without_tools_sends_no_tool_choice() -> None:
    request = ChatRequest(messages=(user("hi"),), tool_choice=ToolChoice("none"))
    assert "tool_choice" not in payload(request)


# ---- reading a client's request: parse_request ---------------------------------------------------


def test_parse_request_minimal() -> None:
    assert parse_request(body()) == ChatRequest(
        messages=(user("hi"),), model="claude-x", max_tokens=100
    )


def test_parse_request_without_model_is_routed() -> None:
    assert parse_request(body(model=...)).model is None
    assert parse_request(body(model=None)).model is None


def test_parse_request_auto_model_and_options() -> None:
    request = parse_request(
        body(
            model="auto",
            system=[
                {"type": "text", "text": "one", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "two"},
            ],
            temperature=0.5,
            top_p=1,
            top_k=5,
            stop_sequences=["\n\nHuman:"],
            metadata={"user_id": "u-7"},
            stream=True,
            thinking={"type": "disabled"},
            service_tier="auto",  # does not change the answer: ignored
        )
    )
    assert request.model is None
    assert request.system == "one\n\ntwo"
    assert (request.temperature, request.top_p, request.top_k) == (0.5, 1.0, 5)
    assert request.stop == ("\n\nHuman:",)
    assert request.user == "u-7"
    assert request.stream is True


def test_parse_request_content_blocks() -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?", "cache_control": {"type": "ephemeral"}},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                },
                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "...", "signature": "s"},
                {"type": "redacted_thinking", "data": "d"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"q": [1, 2]}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "plain"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                    "is_error": True,
                },
                {"type": "tool_result", "tool_use_id": "toolu_3"},
            ],
        },
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "x", "signature": "s"}]},
        {"role": "user", "content": "go on"},
        {"role": "assistant", "content": ""},  # an empty final prefill
    ]
    assert parse_request(body(messages=messages)).messages == (
        user(
            TextPart("what is this?", cache_control='{"type":"ephemeral"}'),  # relayed as sent
            ImagePart(media_type="image/png", data="AAAA"),
            ImagePart(url="https://x/y.png"),
        ),
        assistant(  # thinking kept, to go back as given to an Anthropic upstream
            ThinkingPart("...", "s"), ThinkingPart("d", redacted=True),
            "Checking.", ToolCall("toolu_1", "look", '{"q":[1,2]}'),
        ),
        user(
            ToolResult("toolu_1", "plain"),
            ToolResult("toolu_2", "a\nb", is_error=True),
            ToolResult("toolu_3", ""),
        ),
        user("go on"),
    )


def test_parse_request_tools_and_choices() -> None:
    tools = [
        {"name": "f", "description": "does f", "input_schema": {"type": "object"}},
        {"type": "custom", "name": "g", "input_schema": {"type": "object", "properties": {}}},
    ]
    request = parse_request(
        body(
            tools=tools,
            tool_choice={"type": "tool", "name": "f", "disable_parallel_tool_use": True},
        )
    )
    assert request.tools == (
        Tool("f", "does f", {"type": "object"}),
        Tool("g", "", {"type": "object", "properties": {}}),
    )
    assert request.tool_choice == ToolChoice("tool", "f")
    assert request.parallel_tool_calls is False
    for wire, mode in [("auto", "auto"), ("any", "required"), ("none", "none")]:
        request = parse_request(body(tools=tools, tool_choice={"type": wire}))
        assert request.tool_choice == ToolChoice(mode)
        assert request.parallel_tool_calls is None


def one_block(role: str = "user", **block: Any) -> bytes:
    """A request whose one message holds one content block."""
    return body(messages=[{"role": role, "content": [block]}])


def image(**source: Any) -> bytes:
    return one_block(type="image", source=source)


def tool_use(**fields: Any) -> bytes:
    return one_block("assistant", type="tool_use", **fields)


def tool_result(**fields: Any) -> bytes:
    return one_block(type="tool_result", **fields)


B = "messages.0.content.0"  # the path of one_block's block


INVALID: list[tuple[bytes, str | None]] = [
    (b"{", None),
    (b"[]", None),
    (body(model=3), "model"),
    (body(model=""), "model"),
    (body(max_tokens=...), "max_tokens"),
    (body(max_tokens=0), "max_tokens"),
    (body(max_tokens=1.5), "max_tokens"),
    (body(max_tokens=True), "max_tokens"),
    (body(messages=...), "messages"),
    (body(messages=[]), "messages"),
    (body(messages="hi"), "messages"),
    (body(messages=["hi"]), "messages.0"),
    (body(messages=[{"role": "system", "content": "x"}]), "messages.0.role"),
    (body(messages=[{"role": "tool", "content": "x"}]), "messages.0.role"),
    (body(messages=[{"content": "x"}]), "messages.0.role"),
    (body(messages=[{"role": "user"}]), "messages.0.content"),
    (body(messages=[{"role": "user", "content": 5}]), "messages.0.content"),
    (body(messages=[{"role": "user", "content": ""}]), "messages.0.content"),
    (body(messages=[{"role": "user", "content": []}]), "messages.0.content"),
    (
        body(messages=[{"role": "assistant", "content": []}, {"role": "user", "content": "x"}]),
        "messages.0.content",
    ),
    (body(messages=[{"role": "user", "content": ["text"]}]), B),
    (one_block(text="x"), f"{B}.type"),
    (one_block(type=1), f"{B}.type"),
    (one_block(type="text"), f"{B}.text"),
    (one_block(type="text", text=1), f"{B}.text"),
    (one_block(type="document", source={}), f"{B}.source.type"),
    (one_block(type="document"), f"{B}.source"),
    (one_block(type="document", source={"type": "base64", "media_type": "image/png",
                                        "data": "A"}), f"{B}.source.media_type"),
    (one_block(type="document", source={"type": "base64", "media_type": "application/pdf"}),
     f"{B}.source.data"),
    (one_block(type="document", source={"type": "text", "media_type": "text/html",
                                        "data": "x"}), f"{B}.source.media_type"),
    (one_block(type="document", source={"type": "text"}), f"{B}.source.data"),
    (one_block(type="document", source={"type": "url", "url": ""}), f"{B}.source.url"),
    (one_block(type="document", source={"type": "file", "file_id": "f"}), f"{B}.source.type"),
    (one_block(type="document", source={"type": "text", "data": "x"}, title=3), f"{B}.title"),
    (one_block(type="document", source={"type": "text", "data": "x"}, citations=True),
     f"{B}.citations"),
    (one_block("assistant", type="document", source={"type": "text", "data": "x"}),
     f"{B}.type"),
    (one_block(type="mystery"), f"{B}.type"),
    (one_block(type="tool_use", id="a", name="f", input={}), f"{B}.type"),
    (one_block(type="thinking", thinking="x"), f"{B}.type"),
    (one_block("assistant", type="image", source={}), f"{B}.type"),
    (one_block("assistant", type="tool_result", tool_use_id="a"), f"{B}.type"),
    (one_block(type="image"), f"{B}.source"),
    (one_block(type="image", source="https://x"), f"{B}.source"),
    (image(type="file", file_id="f"), f"{B}.source.type"),
    (image(type="base64", media_type="image/tiff", data="A"), f"{B}.source.media_type"),
    (image(type="base64", media_type="image/png"), f"{B}.source.data"),
    (image(type="url"), f"{B}.source.url"),
    (tool_use(name="f", input={}), f"{B}.id"),
    (tool_use(id="a", input={}), f"{B}.name"),
    (tool_use(id="a", name="f"), f"{B}.input"),
    (tool_use(id="a", name="f", input="{}"), f"{B}.input"),
    (tool_result(), f"{B}.tool_use_id"),
    (tool_result(tool_use_id="a", content=3), f"{B}.content"),
    (tool_result(tool_use_id="a", content=[{"type": "document"}]), f"{B}.content.0"),
    (tool_result(tool_use_id="a", content=[{"type": "image"}]), f"{B}.content.0.source"),
    (tool_result(tool_use_id="a", is_error="yes"), f"{B}.is_error"),
    (body(system=3), "system"),
    (body(system=[{"type": "image"}]), "system.0"),
    (body(system=[{"type": "text"}]), "system.0.text"),
    (body(temperature=1.5), "temperature"),
    (body(temperature=-0.1), "temperature"),
    (body(temperature="hot"), "temperature"),
    (body(top_p=2), "top_p"),
    (body(top_k=-1), "top_k"),
    (body(top_k=2.5), "top_k"),
    (body(stop_sequences="END"), "stop_sequences"),
    (body(stop_sequences=[1]), "stop_sequences"),
    (body(metadata="u"), "metadata"),
    (body(metadata={"user_id": 5}), "metadata.user_id"),
    (body(stream="yes"), "stream"),
    (body(tools={"name": "f"}), "tools"),
    (body(tools=["f"]), "tools.0"),
    (body(tools=[{"input_schema": {}}]), "tools.0.name"),
    (body(tools=[{"name": "f"}]), "tools.0.input_schema"),
    (body(tools=[{"name": "f", "input_schema": {}, "description": 1}]), "tools.0.description"),
    (body(tools=[{"type": "web_search_20250305", "name": "web_search"}]), "tools.0.type"),
    (body(tool_choice="auto"), "tool_choice"),
    (body(tool_choice={"type": "required"}), "tool_choice.type"),
    (body(thinking={"type": "enabled"}), "thinking.budget_tokens"),
    (body(thinking={"type": "enabled", "budget_tokens": "many"}), "thinking.budget_tokens"),
    (body(thinking="on"), "thinking"),
    # Changes the answer and cannot be honoured: refused, never dropped.
    (body(mcp_servers=[{"type": "url", "url": "https://x", "name": "x"}]), "mcp_servers"),
    (body(container="c-1"), "container"),
    (body(tool_choice={"type": "tool"}), "tool_choice.name"),
    (
        body(tool_choice={"type": "auto", "disable_parallel_tool_use": 1}),
        "tool_choice.disable_parallel_tool_use",
    ),
]


@pytest.mark.parametrize(("raw", "param"), INVALID)
def test_parse_request_rejects(raw: bytes, param: str | None) -> None:
    with pytest.raises(RequestInvalid) as info:
        parse_request(raw)
    assert info.value.param == param
    assert info.value.status == 400


def test_parse_request_roundtrips_what_the_provider_sends() -> None:
    request = ChatRequest(
        messages=(
            user("hi", ImagePart(url="https://x/i.png")),
            assistant("ok", ToolCall("c1", "f", '{"a":1}')),
            user(ToolResult("c1", "done", is_error=True)),
        ),
        model="claude-x",
        system="sys",
        tools=(Tool("f", "F", {"type": "object"}),),
        tool_choice=ToolChoice("tool", "f"),
        parallel_tool_calls=False,
        temperature=0.2,
        top_p=0.5,
        top_k=3,
        max_tokens=50,
        stop=("X",),
        user="u",
        stream=True,
    )
    call = PROVIDER.build_call(request, model="claude-x", base_url="", api_key=None, stream=True)
    assert parse_request(call.body) == request
