"""POST /v1/chat/completions over real sockets, with the official ``openai`` SDK as the client.

Requests are pinned to ``gpt-small`` (an OpenAI upstream) unless the test is about routing, so
what the fake recorded is the router's own translation of the same protocol.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
import trio
from support_protocols import (
    AN_BIG,
    AN_MID,
    OA_SMALL,
    OPENAI_TOOLS,
    SDK_STREAM_LEAKS,
    UPSTREAM_KEYS,
    WEATHER,
    ProtocolEnv,
    open_protocol_env,
    user,
)

from engine.testing.fake_upstream import Behaviour, FakeUpstream, Usage

pytestmark = SDK_STREAM_LEAKS


@pytest.fixture
async def env(fake_upstream: FakeUpstream) -> AsyncIterator[ProtocolEnv]:
    async with open_protocol_env(fake_upstream) as env:
        yield env


# -- routing ----------------------------------------------------------------------------------


async def test_auto_is_routed_and_answers_carry_routing_headers(
    fake_upstream: FakeUpstream,
) -> None:
    # The cache stays on here: the header must say MISS for a first request.
    async with open_protocol_env(fake_upstream, cache=True) as env:
        raw = await env.openai.chat.completions.with_raw_response.create(
            model="auto", messages=user("hello there")
        )
    completion = raw.parse()

    assert completion.choices[0].message.content == "[oa-small] hello there"
    assert 0 <= int(raw.headers["x-llm-router-score"]) <= 30
    assert raw.headers["x-llm-router-tier"] == "1"
    assert raw.headers["x-llm-router-model"] == "gpt-small"
    assert raw.headers["x-llm-router-cache"] == "MISS"
    assert len(raw.headers["x-llm-router-request-id"]) >= 8
    record = env.only_request(OA_SMALL)
    assert record.body["model"] == "gpt-small-id"
    assert record.headers["authorization"] == f"Bearer {UPSTREAM_KEYS[OA_SMALL]}"


async def test_model_omitted_is_routed(env: ProtocolEnv) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            env.router.v1 + "/chat/completions", json={"messages": user("hi without a model")}
        )

    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "[oa-small] hi without a model"
    assert response.headers["x-llm-router-model"] == "gpt-small"
    assert response.headers["x-llm-router-tier"] == "1"
    assert response.headers["x-llm-router-score"].isdigit()
    assert response.headers["x-llm-router-request-id"]


async def test_tools_route_auto_to_at_least_tier_2(env: ProtocolEnv) -> None:
    raw = await env.openai.chat.completions.with_raw_response.create(
        model="auto", messages=user("weather?"), tools=OPENAI_TOOLS
    )
    assert raw.headers["x-llm-router-tier"] == "2"
    assert raw.headers["x-llm-router-model"] == "claude-mid"
    assert env.sent(AN_MID)["model"] == "claude-mid-id"
    assert env.fake.requests(OA_SMALL) == []


async def test_configured_model_name_pins_it(env: ProtocolEnv) -> None:
    raw = await env.openai.chat.completions.with_raw_response.create(
        model="claude-big", messages=user("a trivial question")
    )
    completion = raw.parse()

    assert completion.choices[0].message.content == "[an-big] a trivial question"
    assert completion.model == "claude-big"
    assert raw.headers["x-llm-router-model"] == "claude-big"
    assert raw.headers["x-llm-router-tier"] == "3"
    assert env.sent(AN_BIG)["model"] == "claude-big-id"
    assert env.fake.requests(OA_SMALL) == [] and env.fake.requests(AN_MID) == []


async def test_unknown_model_is_a_404_in_openai_shape(env: ProtocolEnv) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await env.openai.chat.completions.create(model="no-such-model", messages=user("x"))
    assert caught.value.status_code == 404
    assert isinstance(caught.value.body, dict) and "no-such-model" in caught.value.body["message"]
    assert caught.value.response.headers["x-llm-router-request-id"]


# -- messages ---------------------------------------------------------------------------------


async def test_system_user_assistant_roles_reach_the_upstream_in_order(env: ProtocolEnv) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
    ]
    completion = await env.openai.chat.completions.create(model="gpt-small", messages=messages)

    assert completion.choices[0].message.content == "[oa-small] second question"
    assert env.sent(OA_SMALL)["messages"] == messages


async def test_content_as_parts(env: ProtocolEnv) -> None:
    image = "https://example.com/cat.png"
    messages: list[Any] = [
        {"role": "system", "content": [{"type": "text", "text": "Describe images."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is"},
                {"type": "image_url", "image_url": {"url": image}},
                {"type": "text", "text": "in this picture"},
            ],
        },
    ]
    completion = await env.openai.chat.completions.create(model="gpt-small", messages=messages)

    assert completion.choices[0].message.content == "[oa-small] what is in this picture"
    system, sent_user = env.sent(OA_SMALL)["messages"]
    assert system == {"role": "system", "content": "Describe images."}
    assert sent_user["role"] == "user"
    assert sent_user["content"] == [
        {"type": "text", "text": "what is"},
        {"type": "image_url", "image_url": {"url": image}},
        {"type": "text", "text": "in this picture"},
    ]


async def test_text_parts_reach_the_upstream(env: ProtocolEnv) -> None:
    parts = [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]
    await env.openai.chat.completions.create(
        model="gpt-small", messages=[{"role": "user", "content": parts}]
    )
    [sent] = env.sent(OA_SMALL)["messages"]
    content = sent["content"]
    texts = [content] if isinstance(content, str) else [p["text"] for p in content]
    assert "part one" in "\n".join(texts) and "part two" in "\n".join(texts)
    assert "\n".join(texts).index("part one") < "\n".join(texts).index("part two")


async def test_tool_call_answer_then_tool_result_turn(env: ProtocolEnv) -> None:
    env.fake.script(OA_SMALL, Behaviour(tool_call=WEATHER))
    question: list[Any] = [{"role": "user", "content": "What's the weather in Paris?"}]
    choice = {"type": "function", "function": {"name": "get_weather"}}
    completion = await env.openai.chat.completions.create(
        model="gpt-small", messages=question, tools=OPENAI_TOOLS, tool_choice=choice
    )

    answer = completion.choices[0]
    assert answer.finish_reason == "tool_calls"
    assert answer.message.content is None
    [call] = answer.message.tool_calls or []
    assert call.type == "function" and call.id
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == WEATHER.arguments
    first = env.sent(OA_SMALL)
    assert first["tools"] == OPENAI_TOOLS
    assert first["tool_choice"] == choice

    assistant_turn = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.function.name, "arguments": call.function.arguments},
            }
        ],
    }
    tool_turn = {"role": "tool", "tool_call_id": call.id, "content": "18 C and sunny"}
    env.fake.script(OA_SMALL, Behaviour(text="It is 18 C and sunny in Paris."))
    follow_up = await env.openai.chat.completions.create(
        model="gpt-small", messages=[*question, assistant_turn, tool_turn], tools=OPENAI_TOOLS
    )

    assert follow_up.choices[0].message.content == "It is 18 C and sunny in Paris."
    assert follow_up.choices[0].finish_reason == "stop"
    sent = env.sent(OA_SMALL)["messages"]
    assert sent[0] == question[0]
    assert sent[1]["role"] == "assistant" and not sent[1].get("content")
    [sent_call] = sent[1]["tool_calls"]
    assert sent_call["id"] == call.id and sent_call["function"]["name"] == "get_weather"
    assert json.loads(sent_call["function"]["arguments"]) == WEATHER.arguments
    assert sent[2] == tool_turn
    assert len(sent) == 3


@pytest.mark.parametrize(
    "tool_choice",
    ["auto", "none", "required", {"type": "function", "function": {"name": "get_weather"}}],
)
async def test_tool_choice_is_forwarded(env: ProtocolEnv, tool_choice: Any) -> None:
    await env.openai.chat.completions.create(
        model="gpt-small", messages=user("weather?"), tools=OPENAI_TOOLS, tool_choice=tool_choice
    )
    assert env.sent(OA_SMALL)["tool_choice"] == tool_choice


async def test_response_format_json_object_is_forwarded(env: ProtocolEnv) -> None:
    env.fake.script(OA_SMALL, Behaviour(text='{"answer": 42}'))
    completion = await env.openai.chat.completions.create(
        model="gpt-small",
        messages=user("Reply in JSON."),
        response_format={"type": "json_object"},
    )
    assert json.loads(completion.choices[0].message.content or "") == {"answer": 42}
    assert env.sent(OA_SMALL)["response_format"] == {"type": "json_object"}


async def test_response_format_json_schema_is_forwarded(env: ProtocolEnv) -> None:
    schema = {
        "name": "answer",
        "schema": {"type": "object", "properties": {"answer": {"type": "integer"}}},
    }
    await env.openai.chat.completions.create(
        model="gpt-small",
        messages=user("Reply in JSON."),
        response_format={"type": "json_schema", "json_schema": schema},
    )
    assert env.sent(OA_SMALL)["response_format"] == {"type": "json_schema", "json_schema": schema}


async def test_sampling_parameters_are_forwarded(env: ProtocolEnv) -> None:
    await env.openai.chat.completions.create(
        model="gpt-small",
        messages=user("numbers"),
        temperature=0.3,
        top_p=0.9,
        max_tokens=55,
        stop=["END", "STOP"],
        seed=7,
    )
    sent = env.sent(OA_SMALL)
    assert sent["temperature"] == 0.3
    assert sent["top_p"] == 0.9
    # by the name the client gave it
    assert sent["max_tokens"] == 55 and "max_completion_tokens" not in sent
    assert sent["stop"] == ["END", "STOP"]
    assert sent["seed"] == 7


async def test_max_completion_tokens_is_forwarded(env: ProtocolEnv) -> None:
    await env.openai.chat.completions.create(
        model="gpt-small", messages=user("numbers"), max_completion_tokens=66, stop="END"
    )
    sent = env.sent(OA_SMALL)
    assert sent["max_completion_tokens"] == 66 and "max_tokens" not in sent
    assert sent["stop"] in ("END", ["END"])


async def test_an_anthropic_clients_max_tokens_is_max_tokens(env: ProtocolEnv) -> None:
    # The name every OpenAI-compatible server reads.
    await env.anthropic.messages.create(model="gpt-small", max_tokens=77, messages=user("hi"))
    sent = env.sent(OA_SMALL)
    assert sent["max_tokens"] == 77 and "max_completion_tokens" not in sent


async def test_unset_parameters_are_not_invented(env: ProtocolEnv) -> None:
    await env.openai.chat.completions.create(model="gpt-small", messages=user("plain"))
    sent = env.sent(OA_SMALL)
    for key in ("temperature", "top_p", "stop", "seed", "tools", "tool_choice", "response_format"):
        assert key not in sent, key
    assert "stream" not in sent or sent["stream"] is False


# -- response shape ---------------------------------------------------------------------------


async def test_response_shape_is_exactly_openai(env: ProtocolEnv) -> None:
    env.fake.script(OA_SMALL, Behaviour(text="Bonjour.", usage=Usage(11, 7)))
    before = int(time.time())
    async with httpx.AsyncClient() as http:
        response = await http.post(
            env.router.v1 + "/chat/completions",
            json={"model": "gpt-small", "messages": user("say hello in French")},
            headers={"authorization": "Bearer client-key"},
        )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["id"].startswith("chatcmpl-") and len(body["id"]) > len("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert before - 1 <= body["created"] <= time.time() + 1
    assert body["model"] == "gpt-small"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Bonjour.", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    usage = body["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (
        11,
        7,
        18,
    )

    completion = openai.types.chat.ChatCompletion.model_validate(body)
    assert completion.usage is not None and completion.usage.total_tokens == 18


async def test_ids_are_unique_per_response(env: ProtocolEnv) -> None:
    first = await env.openai.chat.completions.create(model="gpt-small", messages=user("one"))
    second = await env.openai.chat.completions.create(model="gpt-small", messages=user("two"))
    assert first.id.startswith("chatcmpl-") and second.id.startswith("chatcmpl-")
    assert first.id != second.id


# -- streaming --------------------------------------------------------------------------------


async def test_stream_without_include_usage_has_no_usage_chunk(env: ProtocolEnv) -> None:
    env.fake.script(OA_SMALL, Behaviour(usage=Usage(9, 4)))
    stream = await env.openai.chat.completions.create(
        model="gpt-small", messages=user("one two three"), stream=True
    )
    chunks = [chunk async for chunk in stream]

    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert {chunk.model for chunk in chunks} == {"gpt-small"}
    assert all(chunk.usage is None for chunk in chunks)
    assert all(len(chunk.choices) == 1 for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text == "[oa-small] one two three"
    assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


async def test_stream_with_include_usage_ends_with_one_usage_chunk(env: ProtocolEnv) -> None:
    env.fake.script(OA_SMALL, Behaviour(usage=Usage(9, 4)))
    stream = await env.openai.chat.completions.create(
        model="gpt-small",
        messages=user("one two three"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]

    *content, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (9, 4)
    assert last.usage.total_tokens == 13
    assert all(chunk.usage is None for chunk in content)
    assert "".join(c.choices[0].delta.content or "" for c in content) == "[oa-small] one two three"
    assert content[-1].choices[0].finish_reason == "stop"


async def test_streamed_tool_call(env: ProtocolEnv) -> None:
    env.fake.script(OA_SMALL, Behaviour(text="Checking.", tool_call=WEATHER))
    stream = await env.openai.chat.completions.create(
        model="gpt-small", messages=user("weather?"), tools=OPENAI_TOOLS, stream=True
    )
    text, ids, names, arguments, finish = "", [], [], "", None
    async for chunk in stream:
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for call in delta.tool_calls or []:
            assert call.index == 0
            ids += [call.id] if call.id else []
            names += [call.function.name] if call.function and call.function.name else []
            arguments += (call.function.arguments or "") if call.function else ""
        finish = chunk.choices[0].finish_reason or finish

    assert text == "Checking."
    assert len(ids) == 1 and names == ["get_weather"]
    assert json.loads(arguments) == WEATHER.arguments
    assert finish == "tool_calls"
    assert env.sent(OA_SMALL)["stream"] is True


# -- sync client ------------------------------------------------------------------------------


async def test_sync_client_create(env: ProtocolEnv) -> None:
    def call() -> Any:
        with env.sync_openai() as client:
            return client.chat.completions.with_raw_response.create(
                model="gpt-small", messages=user("from a thread")
            )

    raw = await trio.to_thread.run_sync(call)
    assert raw.parse().choices[0].message.content == "[oa-small] from a thread"
    assert raw.headers["x-llm-router-model"] == "gpt-small"


async def test_sync_client_stream(env: ProtocolEnv) -> None:
    env.fake.script(OA_SMALL, Behaviour(usage=Usage(6, 5)))

    def call() -> list[Any]:
        with env.sync_openai() as client:
            stream = client.chat.completions.create(
                model="gpt-small",
                messages=user("streamed from a thread"),
                stream=True,
                stream_options={"include_usage": True},
            )
            return list(stream)

    chunks = await trio.to_thread.run_sync(call)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "[oa-small] streamed from a thread"
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (6, 5)
