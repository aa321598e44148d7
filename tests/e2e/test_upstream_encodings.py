"""An upstream's answer reads the same whatever its ``Content-Encoding``, end to end through
both SDKs: gzip and deflate bodies, JSON and streams, are decoded (a stream as it arrives, not
once it has ended), an encoding the router does not know leaves the body as sent, and a
compressed stream cut mid-body ends the client's stream with an error. The plain body (no
encoding) is the control: the router reads it without an ``httpx.Response``, an encoded one
through it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import openai
import pytest
import trio
from support_protocols import (
    AN_MID,
    OA_SMALL,
    SDK_STREAM_LEAKS,
    ProtocolEnv,
    open_protocol_env,
    user,
)

from engine.testing.fake_upstream import Behaviour, FakeUpstream

pytestmark = SDK_STREAM_LEAKS

BACKEND = {"gpt-small": OA_SMALL, "claude-mid": AN_MID}
UPSTREAMS = pytest.mark.parametrize("model", ["gpt-small", "claude-mid"])
ENCODINGS = pytest.mark.parametrize("encoding", [None, "gzip", "deflate"])


@pytest.fixture
async def env(fake_upstream: FakeUpstream) -> AsyncIterator[ProtocolEnv]:
    async with open_protocol_env(fake_upstream) as env:
        yield env


@ENCODINGS
@UPSTREAMS
async def test_a_json_answer_is_decoded(env: ProtocolEnv, model: str, encoding: str | None
                                        ) -> None:
    backend = BACKEND[model]
    env.fake.set_default(backend, Behaviour(content_encoding=encoding))
    answer = await env.openai.chat.completions.create(
        model=model, messages=user("what is compressed")
    )
    assert answer.choices[0].message.content == f"[{backend}] what is compressed"
    assert answer.usage is not None and answer.usage.prompt_tokens == 3
    message = await env.anthropic.messages.create(
        model=model, max_tokens=64, messages=user("and this")
    )
    assert [block.text for block in message.content  # type: ignore[union-attr]
            ] == [f"[{backend}] and this"]
    assert [r.behaviour.content_encoding for r in env.fake.requests(backend)
            if r.behaviour is not None] == [encoding, encoding]


@ENCODINGS
@UPSTREAMS
async def test_a_stream_is_decoded_as_it_arrives(env: ProtocolEnv, model: str,
                                                 encoding: str | None) -> None:
    # The upstream spaces its events; a reader that decoded the body only once it had ended
    # would see the first word after the upstream finished.
    backend = BACKEND[model]
    env.fake.set_default(backend, Behaviour(text="alpha beta gamma", chunk_delay=0.3,
                                            content_encoding=encoding))
    finished_at_first: list[bool] = []

    def seen() -> None:
        if not finished_at_first:
            [record] = [r for r in env.fake.requests(backend) if "openai" in str(r.body)]
            finished_at_first.append(record.completed)

    pieces: list[str] = []
    with trio.fail_after(10):
        stream = await env.openai.chat.completions.create(
            model=model, messages=user("openai please"), stream=True
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                seen()
                pieces.append(chunk.choices[0].delta.content)
    assert finished_at_first == [False]
    assert "".join(pieces) == "alpha beta gamma"

    env.fake.set_default(backend, Behaviour(text="delta epsilon", content_encoding=encoding))
    async with env.anthropic.messages.stream(
        model=model, max_tokens=64, messages=user("anthropic please")
    ) as events:
        text = "".join([piece async for piece in events.text_stream])
    assert text == "delta epsilon"


@UPSTREAMS
async def test_an_encoding_the_router_does_not_know_leaves_the_body_as_sent(
    env: ProtocolEnv, model: str
) -> None:
    backend = BACKEND[model]
    env.fake.set_default(backend, Behaviour(content_encoding="x-unknown"))  # a plain body
    answer = await env.openai.chat.completions.create(model=model, messages=user("as is"))
    assert answer.choices[0].message.content == f"[{backend}] as is"
    stream = await env.openai.chat.completions.create(
        model=model, messages=user("as is, streamed"), stream=True
    )
    pieces = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    assert "".join(pieces) == f"[{backend}] as is, streamed"


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@UPSTREAMS
async def test_a_compressed_stream_cut_mid_body_is_an_error_on_the_client_stream(
    env: ProtocolEnv, model: str, encoding: str
) -> None:
    env.fake.script(BACKEND[model], Behaviour(cut_after=2, content_encoding=encoding))
    pieces: list[str] = []
    with pytest.raises(anthropic.APIError) as caught:
        async with env.anthropic.messages.stream(
            model=model, max_tokens=64, messages=user("one two three four five")
        ) as stream:
            async for text in stream.text_stream:
                pieces.append(text)
    assert "".join(pieces).startswith("[")  # what came before the cut was relayed
    assert caught.value.message


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_compressed_json_answer_cut_mid_body_is_a_bad_gateway(
    env: ProtocolEnv, encoding: str
) -> None:
    env.fake.set_default(OA_SMALL, Behaviour(cut_after=0, content_encoding=encoding))
    with pytest.raises(openai.APIStatusError) as caught:
        await env.openai.chat.completions.create(model="gpt-small", messages=user("cut"))
    assert caught.value.status_code in (502, 503)
