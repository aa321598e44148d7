"""``engine.core.cache.key``: what must and must not collide.

A cache entry may only serve a request whose *exact* part (tenant, routing target, system
prompt, history, the final message's non-text parts, tools, tool choice, response format and
every generation parameter, ``n``, penalties, ``logit_bias``, ``logprobs`` and reasoning
effort included) is identical; only the final user message's text is compared by
meaning. Dedup (``full``) joins only requests identical in everything, the stream flag
included. The properties below draw whole requests and change one thing at a time.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from typing import Any

import orjson
from hypothesis import assume, given
from hypothesis import strategies as st

from engine.core.cache.key import RequestKey, request_key
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

# -- strategies -------------------------------------------------------------------------------

texts = st.text(max_size=12)
names = st.text("abcdefgh_", min_size=1, max_size=8)
# What a JSON body can carry: no NaN or infinity (neither the wire nor orjson has them).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=4,
)

images = st.builds(ImagePart, url=st.none() | texts, media_type=st.none() | texts,
                   data=st.none() | texts)
tool_calls = st.builds(ToolCall, id=names, name=names, arguments=texts)
tool_results = st.builds(ToolResult, tool_call_id=names, content=texts, is_error=st.booleans())
parts = st.one_of(texts.map(TextPart), images, tool_calls, tool_results)
messages = st.builds(
    Message, role=st.sampled_from(["user", "assistant"]),
    parts=st.lists(parts, max_size=2).map(tuple),
)
histories = st.lists(messages, max_size=2).map(tuple)
non_text_parts = st.lists(images | tool_results, max_size=2).map(tuple)
tools = st.builds(Tool, name=names, description=texts, parameters=st.none() | json_values)

# One strategy per field of the exact part; the final user message is drawn separately.
EXACT_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "model": st.none() | names,
    "system": st.none() | texts,
    "tools": st.lists(tools, max_size=1).map(tuple),
    "tool_choice": st.none() | st.builds(
        ToolChoice, mode=st.sampled_from(["auto", "none", "required", "tool"]),
        name=st.none() | names,
    ),
    "parallel_tool_calls": st.none() | st.booleans(),
    "json_mode": st.booleans(),
    "json_schema": st.none() | json_values,
    "temperature": st.none() | st.floats(0, 2),
    "top_p": st.none() | st.floats(0, 1),
    "top_k": st.none() | st.integers(0, 500),
    "max_tokens": st.none() | st.integers(1, 100_000),
    "stop": st.lists(texts, max_size=2).map(tuple),
    "seed": st.none() | st.integers(-(2**63), 2**63 - 1),
    "n": st.integers(1, 8),
    "user": st.none() | texts,
    "frequency_penalty": st.none() | st.floats(-2, 2),
    "presence_penalty": st.none() | st.floats(-2, 2),
    "logit_bias": st.lists(
        st.tuples(st.integers(0, 200_000).map(str), st.floats(-100, 100)),
        max_size=2, unique_by=lambda pair: pair[0],
    ).map(lambda pairs: tuple(sorted(pairs, key=lambda pair: int(pair[0])))),
    "logprobs": st.booleans(),
    "top_logprobs": st.none() | st.integers(0, 20),
    "reasoning_effort": st.none() | st.sampled_from(["none", "minimal", "low", "high"]),
    "verbosity": st.none() | st.sampled_from(["low", "medium", "high"]),
}


@st.composite
def requests(draw: st.DrawFn) -> ChatRequest:
    """A request that ends with a user message holding text and maybe images/tool results."""
    final = Message("user", (TextPart(draw(texts)), *draw(non_text_parts)))
    fields = {name: draw(strategy) for name, strategy in EXACT_FIELDS.items()}
    return ChatRequest(
        messages=(*draw(histories), final), stream=draw(st.booleans()),
        include_usage=draw(st.booleans()), **fields,
    )


def key(request: ChatRequest, tenant: str = "tenant-a", target: str = "tier:1") -> RequestKey:
    return request_key(request, tenant=tenant, target=target)


def with_final(request: ChatRequest, **changes: Any) -> ChatRequest:
    """``request`` with its final message's ``text`` or non-text ``rest`` replaced."""
    final = request.messages[-1]
    text = changes.get("text", final.text)
    rest = changes.get("rest", tuple(p for p in final.parts if not isinstance(p, TextPart)))
    return dataclasses.replace(
        request, messages=(*request.messages[:-1], Message("user", (TextPart(text), *rest)))
    )


# -- what must collide ------------------------------------------------------------------------


@given(requests())
def test_equal_requests_have_equal_keys(request: ChatRequest) -> None:
    # A deep copy shares no object with the original: only the values count.
    assert key(copy.deepcopy(request)) == key(request)


@given(requests(), texts)
def test_final_text_is_the_semantic_part(request: ChatRequest, text: str) -> None:
    other = with_final(request, text=text)
    a, b = key(request), key(other)
    assert b.text == text
    assert a.exact == b.exact
    assert (a.full == b.full) == (request.messages[-1].text == text)


@given(requests())
def test_stream_flag_only_changes_the_dedup_key(request: ChatRequest) -> None:
    flipped = key(dataclasses.replace(request, stream=not request.stream))
    original = key(request)
    assert (flipped.exact, flipped.text) == (original.exact, original.text)
    assert flipped.full != original.full


@given(requests())
def test_include_usage_is_not_part_of_the_exact_key(request: ChatRequest) -> None:
    # Usage is in every cached result; whether a stream reports it is the encoder's business.
    flipped = dataclasses.replace(request, include_usage=not request.include_usage)
    assert key(flipped).exact == key(request).exact


@given(st.dictionaries(texts, json_values, min_size=2, max_size=5))
def test_json_key_order_does_not_matter(schema: dict[str, Any]) -> None:
    ask = ChatRequest(messages=(Message("user", (TextPart("hi"),)),), json_schema=schema)
    reordered = dict(reversed(list(schema.items())))
    assert key(dataclasses.replace(ask, json_schema=reordered)) == key(ask)


# -- what must not collide --------------------------------------------------------------------


@given(requests(), st.sampled_from(sorted(EXACT_FIELDS)), st.data())
def test_any_exact_field_separates(request: ChatRequest, field: str, data: st.DataObject) -> None:
    value = data.draw(EXACT_FIELDS[field], label=field)
    assume(value != getattr(request, field))
    other = dataclasses.replace(request, **{field: value})
    assert key(other).exact != key(request).exact
    assert key(other).full != key(request).full


@given(requests(), histories)
def test_history_separates(request: ChatRequest, history: tuple[Message, ...]) -> None:
    assume(history != request.messages[:-1])
    other = dataclasses.replace(request, messages=(*history, request.messages[-1]))
    assert key(other).exact != key(request).exact


@given(requests(), non_text_parts)
def test_final_message_non_text_parts_separate(
    request: ChatRequest, rest: tuple[ImagePart | ToolResult, ...]
) -> None:
    other = with_final(request, rest=rest)
    assume(other.messages[-1] != request.messages[-1])
    assert key(other).exact != key(request).exact


two_names = st.lists(names, min_size=2, max_size=2, unique=True)


@given(requests(), two_names)
def test_tenants_and_targets_never_share(request: ChatRequest, pair: list[str]) -> None:
    a, b = pair
    assert key(request, tenant=a).exact != key(request, tenant=b).exact
    assert key(request, tenant=a).full != key(request, tenant=b).full
    assert key(request, target=a).exact != key(request, target=b).exact
    # Not interchangeable either: tenant "a" asking target "b" is not tenant "b" asking "a".
    assert key(request, tenant=a, target=b).exact != key(request, tenant=b, target=a).exact


# -- named edge cases -------------------------------------------------------------------------


def ask(*turns: tuple[str, str], **fields: Any) -> ChatRequest:
    return ChatRequest(
        messages=tuple(Message(role, (TextPart(text),)) for role, text in turns),  # type: ignore[arg-type]
        **fields,
    )


def test_no_messages() -> None:
    k = key(ChatRequest(messages=()))
    assert k.text == ""
    assert k == key(ChatRequest(messages=()))


def test_final_assistant_message_is_all_exact() -> None:
    # A prefilled assistant turn: there is no final user text to compare by meaning.
    a = key(ask(("user", "hi"), ("assistant", "The answer is")))
    b = key(ask(("user", "hi"), ("assistant", "The answer was")))
    assert a.text == b.text == ""
    assert a.exact != b.exact


def test_tool_result_turn_keys_on_the_result() -> None:
    def answered(content: str) -> ChatRequest:
        call = Message("assistant", (ToolCall("call_1", "get_weather", "{}"),))
        result = Message("user", (ToolResult("call_1", content),))
        return ChatRequest(messages=(Message("user", (TextPart("weather?"),)), call, result))

    sunny, rainy = key(answered("sunny")), key(answered("rainy"))
    assert sunny.text == rainy.text == ""
    assert sunny.exact != rainy.exact


def test_same_text_different_image_does_not_collide() -> None:
    def look(url: str) -> ChatRequest:
        return ChatRequest(
            messages=(Message("user", (TextPart("What is in this picture?"), ImagePart(url))),)
        )

    assert key(look("https://a.example/1.png")).exact != key(look("https://a.example/2.png")).exact


def test_earlier_turn_text_is_exact_not_semantic() -> None:
    a = key(ask(("user", "Tell me about Paris"), ("assistant", "ok"), ("user", "more")))
    b = key(ask(("user", "Tell me about Rome"), ("assistant", "ok"), ("user", "more")))
    assert a.text == b.text == "more"
    assert a.exact != b.exact


def test_system_prompt_is_not_the_first_message() -> None:
    # The system prompt and a first user turn with the same text are different requests.
    a = key(ask(("user", "Be brief."), ("assistant", "ok"), ("user", "hi")))
    b = key(ask(("assistant", "ok"), ("user", "hi"), system="Be brief."))
    assert a.exact != b.exact


@given(requests(), names, names)
def test_exact_part_is_the_request_less_its_semantic_part(request: ChatRequest, tenant: str,
                                                          target: str) -> None:
    # The digest's input, built without ``dataclasses.replace``: the same bytes as the request
    # itself with the final text taken off and the transport flags reset.
    final = request.messages[-1]
    rest = tuple(p for p in final.parts if not isinstance(p, TextPart))
    exact = dataclasses.replace(request, messages=request.messages[:-1], stream=False,
                                include_usage=False)
    encoded = orjson.dumps((tenant, target, exact, rest), option=orjson.OPT_SORT_KEYS)
    assert key(request, tenant, target).exact == hashlib.blake2b(encoded, digest_size=20).digest()
