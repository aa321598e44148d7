"""The fake upstream is only worth trusting if the official SDKs accept it as the real thing.

Every test here points the ``openai`` or ``anthropic`` SDK (or raw httpx, where the wire itself
is the point) straight at the fake, with no router in between, and checks both what the SDK
made of the answer and what the fake recorded.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from functools import partial

import anthropic
import httpx
import httpx2
import openai
import pytest
import trio

from engine.testing.fake_upstream import Behaviour, FakeUpstream, ToolCall, Usage, refused_url
from engine.wire.sse import decode_events

# The openai SDK stops reading at `data: [DONE]` and abandons its chain of async generators
# (its own SSE decoder, httpx2's and httpcore2's body iterators) without closing them; trio
# reports each as a ResourceWarning when it is collected. That is the SDK's doing, whatever
# the server sends, so it is ignored for those packages only (the router uses httpx, whose
# generators stay covered by filterwarnings=error).
pytestmark = pytest.mark.filterwarnings(
    r"ignore:Async generator '(openai|httpx2|httpcore2)\.:ResourceWarning"
)

OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-3-5-haiku-latest"
WEATHER = ToolCall(name="get_weather", arguments={"city": "Paris", "unit": "celsius", "days": 3})
OPENAI_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
ANTHROPIC_TOOLS = [
    {
        "name": "get_weather",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


@pytest.fixture
async def oai(fake_upstream: FakeUpstream) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=fake_upstream.base_url("b1", "openai"), api_key="k", max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def claude(fake_upstream: FakeUpstream) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=fake_upstream.base_url("b1", "anthropic"), api_key="k", max_retries=0
    ) as client:
        yield client


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def wait_for_active(fake: FakeUpstream, count: int) -> None:
    with trio.fail_after(2):
        while fake.active != count:
            await trio.sleep(0.005)


# -- OpenAI Chat Completions ------------------------------------------------------------------


async def test_openai_create_default_reply_and_usage(
    fake_upstream: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hello there"}]},
    ]
    completion = await oai.chat.completions.create(model=OPENAI_MODEL, messages=messages)

    assert completion.object == "chat.completion"
    assert completion.model == OPENAI_MODEL
    choice = completion.choices[0]
    assert choice.message.content == "[b1] hello there"
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (4, 3)
    assert completion.usage.total_tokens == 7

    [recorded] = fake_upstream.requests("b1")
    assert recorded.path == "/b1/v1/chat/completions"
    assert recorded.headers["authorization"] == "Bearer k"
    assert recorded.body["messages"] == messages
    assert recorded.completed and not recorded.cancelled and recorded.status == 200


async def test_openai_n_choices_and_logprobs(oai: openai.AsyncOpenAI) -> None:
    completion = await oai.chat.completions.create(
        model=OPENAI_MODEL, messages=user("hi you"), n=2, logprobs=True, top_logprobs=2
    )
    assert [(c.index, c.message.content) for c in completion.choices] == [
        (0, "[b1] hi you"), (1, "[b1] hi you #1")
    ]
    assert completion.usage is not None and completion.usage.completion_tokens == 3 + 4
    for choice in completion.choices:
        assert choice.logprobs is not None and choice.logprobs.content is not None
        tokens = choice.logprobs.content
        assert "".join(t.token for t in tokens) == choice.message.content
        assert all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in tokens)


async def test_openai_stream_logprobs(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(
        model=OPENAI_MODEL, messages=user("hi you"), logprobs=True, stream=True
    )
    tokens = [t.token async for chunk in stream for c in chunk.choices
              for t in ((c.logprobs.content if c.logprobs else None) or ())]
    assert "".join(tokens) == "[b1] hi you"


async def test_anthropic_refuses_fields_it_does_not_have(
    fake_upstream: FakeUpstream, claude: anthropic.AsyncAnthropic
) -> None:
    with pytest.raises(anthropic.BadRequestError, match="frequency_penalty: Extra inputs"):
        await claude.messages.create(
            model=ANTHROPIC_MODEL, max_tokens=10, messages=user("hi"),
            extra_body={"frequency_penalty": 0.5},
        )
    [recorded] = fake_upstream.requests("b1")
    assert recorded.behaviour is None  # refused before any behaviour applied


async def test_openai_stream_with_usage_chunk(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(
        model=OPENAI_MODEL,
        messages=user("one two three"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]

    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [c.choices[0].delta.content for c in chunks if c.choices]
    assert "".join(filter(None, contents)) == "[b1] one two three"
    assert len([c for c in contents if c]) == 4  # word-sized chunks
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    assert all(c.usage is None for c in chunks[:-1])


async def test_openai_stream_without_include_usage_has_no_usage_chunk(
    oai: openai.AsyncOpenAI,
) -> None:
    stream = await oai.chat.completions.create(model=OPENAI_MODEL, messages=user("x"), stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)


async def test_openai_tool_call(fake_upstream: FakeUpstream, oai: openai.AsyncOpenAI) -> None:
    fake_upstream.script("b1", Behaviour(tool_call=WEATHER))
    completion = await oai.chat.completions.create(
        model=OPENAI_MODEL, messages=user("weather?"), tools=OPENAI_TOOLS
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == WEATHER.arguments


async def test_openai_streamed_tool_call_after_text(
    fake_upstream: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    fake_upstream.script("b1", Behaviour(text="Let me check.", tool_call=WEATHER))
    stream = await oai.chat.completions.create(
        model=OPENAI_MODEL, messages=user("weather?"), tools=OPENAI_TOOLS, stream=True
    )
    text, names, ids, arguments, finish = "", [], [], "", None
    fragments = 0
    async for chunk in stream:
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for call in delta.tool_calls or []:
            assert call.index == 0
            ids += [call.id] if call.id else []
            names += [call.function.name] if call.function and call.function.name else []
            if call.function and call.function.arguments:
                arguments += call.function.arguments
                fragments += 1
        finish = chunk.choices[0].finish_reason or finish

    assert text == "Let me check."
    assert names == ["get_weather"] and len(ids) == 1
    assert json.loads(arguments) == WEATHER.arguments
    assert fragments > 1  # the arguments really arrive in pieces
    assert finish == "tool_calls"


# -- Anthropic Messages -----------------------------------------------------------------------


async def test_anthropic_create_default_reply_and_usage(
    fake_upstream: FakeUpstream, claude: anthropic.AsyncAnthropic
) -> None:
    message = await claude.messages.create(
        model=ANTHROPIC_MODEL, max_tokens=64, system="be brief", messages=user("hello there")
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.model == ANTHROPIC_MODEL
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "[b1] hello there"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (4, 3)

    [recorded] = fake_upstream.requests("b1")
    assert recorded.path == "/b1/v1/messages"
    # This anthropic SDK release sends the API key as a bearer token, not as x-api-key.
    assert recorded.headers["authorization"] == "Bearer k"
    assert recorded.headers["anthropic-version"]
    assert recorded.body["system"] == "be brief"


async def test_anthropic_stream_final_message(claude: anthropic.AsyncAnthropic) -> None:
    async with claude.messages.stream(
        model=ANTHROPIC_MODEL, max_tokens=64, messages=user("one two three")
    ) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()

    assert "".join(pieces) == "[b1] one two three"
    assert len(pieces) == 4
    assert final.content[0].type == "text"
    assert final.content[0].text == "[b1] one two three"
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (3, 4)


async def test_anthropic_stream_event_order(claude: anthropic.AsyncAnthropic) -> None:
    """The raw event sequence, since routers parse it themselves rather than via the SDK."""
    response = await claude.messages.with_raw_response.create(
        model=ANTHROPIC_MODEL, max_tokens=64, messages=user("hi"), stream=True
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    names = [name for name, _ in decode_events(await response.http_response.aread())]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


async def test_anthropic_tool_call(
    fake_upstream: FakeUpstream, claude: anthropic.AsyncAnthropic
) -> None:
    fake_upstream.script("b1", Behaviour(tool_call=WEATHER))
    message = await claude.messages.create(
        model=ANTHROPIC_MODEL, max_tokens=64, messages=user("weather?"), tools=ANTHROPIC_TOOLS
    )
    assert message.stop_reason == "tool_use"
    [block] = message.content
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.input == WEATHER.arguments
    assert block.id.startswith("toolu_")


async def test_anthropic_streamed_tool_call_after_text(
    fake_upstream: FakeUpstream, claude: anthropic.AsyncAnthropic
) -> None:
    fake_upstream.script("b1", Behaviour(text="Let me check.", tool_call=WEATHER))
    async with claude.messages.stream(
        model=ANTHROPIC_MODEL, max_tokens=64, messages=user("weather?"), tools=ANTHROPIC_TOOLS
    ) as stream:
        json_deltas = [
            event async for event in stream if event.type == "input_json"
        ]  # the SDK's accumulating view of input_json_delta
        final = await stream.get_final_message()

    assert len(json_deltas) > 1
    assert [block.type for block in final.content] == ["text", "tool_use"]
    assert final.content[0].text == "Let me check."
    assert final.content[1].input == WEATHER.arguments
    assert final.stop_reason == "tool_use"


# -- overrides ----------------------------------------------------------------------------------


async def test_usage_and_stop_reason_overrides(
    fake_upstream: FakeUpstream, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    fake_upstream.set_default(
        "b1", Behaviour(text="cut short", usage=Usage(100, 7), stop_reason="length")
    )
    completion = await oai.chat.completions.create(model=OPENAI_MODEL, messages=user("x"))
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (100, 7)

    fake_upstream.set_default("b1", Behaviour(usage=Usage(50, 2), stop_reason="max_tokens"))
    async with claude.messages.stream(
        model=ANTHROPIC_MODEL, max_tokens=2, messages=user("x")
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "max_tokens"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (50, 2)


async def test_script_is_consumed_then_default_applies(
    fake_upstream: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    fake_upstream.set_default("b1", Behaviour(text="default"))
    fake_upstream.script("b1", Behaviour(text="first"), Behaviour(text="second"))
    replies = [
        (await oai.chat.completions.create(model=OPENAI_MODEL, messages=user("x")))
        .choices[0]
        .message.content
        for _ in range(3)
    ]
    assert replies == ["first", "second", "default"]

    fake_upstream.reset()
    assert fake_upstream.requests("b1") == []
    completion = await oai.chat.completions.create(model=OPENAI_MODEL, messages=user("x"))
    assert completion.choices[0].message.content == "[b1] x"


async def test_backends_are_independent(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script("b2", Behaviour(status=500))
    async with (
        openai.AsyncOpenAI(
            base_url=fake_upstream.base_url("b2", "openai"), api_key="k", max_retries=0
        ) as b2,
        openai.AsyncOpenAI(
            base_url=fake_upstream.base_url("b3", "openai"), api_key="k", max_retries=0
        ) as b3,
    ):
        completion = await b3.chat.completions.create(model=OPENAI_MODEL, messages=user("x"))
        assert completion.choices[0].message.content == "[b3] x"
        with pytest.raises(openai.InternalServerError):
            await b2.chat.completions.create(model=OPENAI_MODEL, messages=user("x"))
    assert len(fake_upstream.requests("b2")) == len(fake_upstream.requests("b3")) == 1


# -- error statuses -------------------------------------------------------------------------


async def test_openai_500(fake_upstream: FakeUpstream, oai: openai.AsyncOpenAI) -> None:
    fake_upstream.script("b1", Behaviour(status=500))
    with pytest.raises(openai.InternalServerError) as caught:
        await oai.chat.completions.create(model=OPENAI_MODEL, messages=user("x"))
    assert caught.value.status_code == 500
    assert caught.value.type == "server_error"
    assert caught.value.body == {
        "message": "The server had an error while processing your request.",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    [recorded] = fake_upstream.requests("b1")
    assert recorded.status == 500 and recorded.completed


async def test_openai_429_retry_after_even_for_stream(
    fake_upstream: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    fake_upstream.script("b1", Behaviour(status=429, retry_after=3))
    with pytest.raises(openai.RateLimitError) as caught:
        await oai.chat.completions.create(model=OPENAI_MODEL, messages=user("x"), stream=True)
    assert caught.value.response.headers["retry-after"] == "3"
    assert caught.value.code == "rate_limit_exceeded"


async def test_anthropic_500_and_429(
    fake_upstream: FakeUpstream, claude: anthropic.AsyncAnthropic
) -> None:
    fake_upstream.script("b1", Behaviour(status=500), Behaviour(status=429, retry_after=1.5))
    with pytest.raises(anthropic.InternalServerError) as server_error:
        await claude.messages.create(model=ANTHROPIC_MODEL, max_tokens=8, messages=user("x"))
    assert server_error.value.body == {
        "type": "error",
        "error": {"type": "api_error", "message": "Internal server error"},
    }
    with pytest.raises(anthropic.RateLimitError) as rate_limited:
        async with claude.messages.stream(
            model=ANTHROPIC_MODEL, max_tokens=8, messages=user("x")
        ) as stream:
            await stream.get_final_message()
    assert rate_limited.value.response.headers["retry-after"] == "1.5"
    assert rate_limited.value.body["error"]["type"] == "rate_limit_error"


async def test_unknown_route_and_invalid_body(fake_upstream: FakeUpstream) -> None:
    async with httpx.AsyncClient(base_url=fake_upstream.url) as client:
        response = await client.get("/b1/v1/models")
        assert response.status_code == 404
        assert response.json()["error"]["message"] == "Invalid URL (GET /b1/v1/models)"
        response = await client.post("/b1/v1/messages", json={"model": "m", "messages": []})
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"
    assert [r.status for r in fake_upstream.requests("b1")] == [404, 400]


async def test_sent_bytes_counts_what_the_client_took(fake_upstream: FakeUpstream) -> None:
    body = {"model": "m", "stream": True, "messages": user("one two three four")}
    async with (
        httpx.AsyncClient(base_url=fake_upstream.url) as client,
        client.stream("POST", "/b1/v1/chat/completions", json=body) as response,
    ):
        received = b"".join([chunk async for chunk in response.aiter_bytes()])
    [recorded] = fake_upstream.requests("b1")
    assert recorded.sent_bytes == len(received) > 0


# -- stream faults ------------------------------------------------------------------------------


async def test_cut_after_breaks_the_chunked_body(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script("b1", Behaviour(cut_after=2))
    body = {"model": "m", "stream": True, "messages": user("one two three four")}
    received = b""
    async with httpx.AsyncClient(base_url=fake_upstream.url) as client:
        with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
            async with client.stream("POST", "/b1/v1/chat/completions", json=body) as response:
                async for chunk in response.aiter_raw():
                    received += chunk
    assert received.count(b'"content":"') == 3  # the role chunk's "" plus two words
    assert b"[DONE]" not in received


async def test_stall_after_holds_the_stream_open_until_the_client_leaves(
    fake_upstream: FakeUpstream,
) -> None:
    fake_upstream.script("b1", Behaviour(stall_after=1))
    body = {"model": "m", "stream": True, "messages": user("one two three")}
    received = b""
    async with httpx.AsyncClient(base_url=fake_upstream.url) as client, client.stream(
        "POST", "/b1/v1/chat/completions", json=body
    ) as response:
        chunks = response.aiter_raw()
        with trio.move_on_after(0.3) as waiting:
            async for chunk in chunks:
                received += chunk
        assert waiting.cancelled_caught  # still open, sending nothing
        await chunks.aclose()
    assert received.count(b'"content":"') == 2  # the role chunk's "" plus one word
    with trio.fail_after(2):
        await fake_upstream.wait_until_idle()
    (record,) = fake_upstream.requests("b1")
    assert record.cancelled and not record.completed


async def test_cut_after_in_openai_sdk_stream(
    fake_upstream: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    fake_upstream.script("b1", Behaviour(cut_after=1))
    stream = await oai.chat.completions.create(
        model=OPENAI_MODEL, messages=user("one two three"), stream=True
    )
    contents: list[str | None] = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            contents.append(chunk.choices[0].delta.content)
    assert contents == ["", "[b1] "]


async def test_cut_after_in_anthropic_sdk_stream(
    fake_upstream: FakeUpstream, claude: anthropic.AsyncAnthropic
) -> None:
    fake_upstream.script("b1", Behaviour(cut_after=1))
    pieces: list[str] = []
    # What matters is that the client sees the cut as an error, after exactly the text sent
    # before it. How the SDK dresses the transport error is its own business: some releases let
    # the bare transport error through, newer ones wrap it in APIConnectionError.
    with pytest.raises((httpx2.TransportError, anthropic.APIConnectionError)) as raised:
        async with claude.messages.stream(
            model=ANTHROPIC_MODEL, max_tokens=8, messages=user("one two three")
        ) as stream:
            async for text in stream.text_stream:
                pieces.append(text)
    assert pieces == ["[b1] "]
    assert "incomplete chunked read" in str(raised.value)


async def test_cut_after_non_stream_sends_half_a_body(
    fake_upstream: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    fake_upstream.script("b1", Behaviour(cut_after=0))
    with pytest.raises(openai.APIConnectionError):
        await oai.chat.completions.create(model=OPENAI_MODEL, messages=user("x"))


async def test_error_event_after(
    fake_upstream: FakeUpstream, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    fake_upstream.set_default("b1", Behaviour(error_event_after=1))
    stream = await oai.chat.completions.create(
        model=OPENAI_MODEL, messages=user("one two"), stream=True
    )
    with pytest.raises(openai.APIError) as openai_error:
        async for _ in stream:
            pass
    assert openai_error.value.type == "server_error"

    with pytest.raises(anthropic.APIStatusError) as anthropic_error:
        async with claude.messages.stream(
            model=ANTHROPIC_MODEL, max_tokens=8, messages=user("one two")
        ) as anthropic_stream:
            await anthropic_stream.get_final_message()
    assert anthropic_error.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    assert all(r.completed for r in fake_upstream.requests("b1"))


async def test_error_message_goes_where_the_provider_puts_it(
    fake_upstream: FakeUpstream, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    said = "look: secret-1234"
    fake_upstream.script("b1", Behaviour(status=400, error_message=said),
                         Behaviour(error_event_after=1, error_message=said))
    with pytest.raises(openai.BadRequestError) as rejected:
        await oai.chat.completions.create(model=OPENAI_MODEL, messages=user("x"))
    assert rejected.value.body["message"] == said  # type: ignore[index]
    stream = await oai.chat.completions.create(
        model=OPENAI_MODEL, messages=user("one two"), stream=True
    )
    with pytest.raises(openai.APIError) as in_stream:
        async for _ in stream:
            pass
    assert in_stream.value.message == said

    fake_upstream.script("b1", Behaviour(error_with_200=True, error_message=said))
    response = await claude.messages.with_raw_response.create(
        model=ANTHROPIC_MODEL, max_tokens=8, messages=user("x")
    )
    assert response.status_code == 200
    assert json.loads(await response.text()) == {
        "type": "error", "error": {"type": "overloaded_error", "message": said},
    }


async def test_text_delta_chars_cuts_through_words(claude: anthropic.AsyncAnthropic,
                                                   fake_upstream: FakeUpstream) -> None:
    fake_upstream.set_default("b1", Behaviour(text="alphabet soup", text_delta_chars=3))
    pieces: list[str] = []
    async with claude.messages.stream(
        model=ANTHROPIC_MODEL, max_tokens=8, messages=user("x")
    ) as stream:
        async for text in stream.text_stream:
            pieces.append(text)
    assert pieces == ["alp", "hab", "et ", "sou", "p"]


async def test_chunk_delay_streams_incrementally(
    fake_upstream: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    """Each event is its own write: the first word arrives long before the last."""
    fake_upstream.script("b1", Behaviour(chunk_delay=0.05))
    stream = await oai.chat.completions.create(
        model=OPENAI_MODEL, messages=user("one two three"), stream=True
    )
    arrivals = [trio.current_time() async for _ in stream]
    assert len(arrivals) == 6  # role, 4 words, finish
    assert arrivals[-1] - arrivals[1] >= 0.2


async def test_latency_delays_the_headers(
    fake_upstream: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    fake_upstream.script("b1", Behaviour(latency=0.2))
    started = trio.current_time()
    await oai.chat.completions.create(model=OPENAI_MODEL, messages=user("x"))
    assert trio.current_time() - started >= 0.2


# -- cancellation and connection faults ------------------------------------------------------


async def test_hang_is_cancelled_by_client_timeout(
    fake_upstream: FakeUpstream, claude: anthropic.AsyncAnthropic
) -> None:
    fake_upstream.script("b1", Behaviour(hang=True))
    with trio.move_on_after(10) as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(claude.messages.create, model=ANTHROPIC_MODEL,
                                       max_tokens=8, messages=user("x")))
            while not fake_upstream.requests("b1"):  # hanging there, not still on its way
                await trio.sleep(0.01)
            scope.cancel()
    assert scope.cancelled_caught
    with trio.fail_after(2):
        await fake_upstream.wait_until_idle()
    [recorded] = fake_upstream.requests("b1")
    assert recorded.cancelled and not recorded.completed and recorded.status is None


async def test_hang_is_active_until_the_sdk_times_out(
    fake_upstream: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    fake_upstream.script("b1", Behaviour(hang=True))
    async with trio.open_nursery() as nursery:

        async def call() -> None:
            with pytest.raises(openai.APITimeoutError):
                await oai.chat.completions.create(
                    model=OPENAI_MODEL, messages=user("x"), timeout=0.3
                )

        nursery.start_soon(call)
        await wait_for_active(fake_upstream, 1)
    await wait_for_active(fake_upstream, 0)
    assert fake_upstream.requests("b1")[0].cancelled


async def test_client_leaving_mid_stream_cancels_the_upstream_response(
    fake_upstream: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    fake_upstream.script("b1", Behaviour(chunk_delay=0.05, text="a b c d e f g h i j"))
    stream = await oai.chat.completions.create(model=OPENAI_MODEL, messages=user("x"), stream=True)
    async for _ in stream:
        break
    await stream.close()
    await wait_for_active(fake_upstream, 0)
    [recorded] = fake_upstream.requests("b1")
    assert recorded.cancelled and not recorded.completed


async def test_refused_url_raises_connection_errors() -> None:
    url = refused_url()
    async with (
        openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0) as oai,
        anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0) as claude,
    ):
        with pytest.raises(openai.APIConnectionError):
            await oai.chat.completions.create(model=OPENAI_MODEL, messages=user("x"))
        with pytest.raises(anthropic.APIConnectionError):
            await claude.messages.create(model=ANTHROPIC_MODEL, max_tokens=8, messages=user("x"))


def test_base_url_shapes() -> None:
    fake = FakeUpstream()
    fake.url = "http://127.0.0.1:1"
    assert fake.base_url("b1", "openai") == "http://127.0.0.1:1/b1/v1"
    assert fake.base_url("b1", "anthropic") == "http://127.0.0.1:1/b1"
    with pytest.raises(ValueError, match="unknown provider"):
        fake.base_url("b1", "gemini")


# -- citations ---------------------------------------------------------------------------------


async def test_anthropic_citations_in_json_and_stream(
    fake_upstream: FakeUpstream, claude: anthropic.AsyncAnthropic
) -> None:
    fake_upstream.set_default("b1", Behaviour(text="Grass is green.", citations=True))
    message = await claude.messages.create(model=ANTHROPIC_MODEL, max_tokens=5,
                                           messages=user("colour?"))
    async with claude.messages.stream(model=ANTHROPIC_MODEL, max_tokens=5,
                                      messages=user("colour?")) as stream:
        streamed = await stream.get_final_message()
    for answer in (message, streamed):
        [block] = answer.content
        assert block.type == "text" and block.text == "Grass is green."
        assert [c.type for c in block.citations or ()] == ["char_location"]


async def test_openai_annotations_in_json_and_stream(
    fake_upstream: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    fake_upstream.set_default("b1", Behaviour(text="Paris.", citations=True))
    completion = await oai.chat.completions.create(model=OPENAI_MODEL, messages=user("?"))
    assert [a.type for a in completion.choices[0].message.annotations or ()] == ["url_citation"]
    stream = await oai.chat.completions.create(model=OPENAI_MODEL, messages=user("?"),
                                               stream=True)
    deltas = [c.choices[0].delta async for c in stream if c.choices]
    assert "".join(d.content or "" for d in deltas) == "Paris."
    assert any(getattr(d, "annotations", None) for d in deltas)
