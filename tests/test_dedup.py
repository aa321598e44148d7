"""In-flight dedup: ``engine.runtime.dedup`` on its own (trio's mock clock), then end to end over
real sockets with the official SDKs.

End to end the cache is off (``open_protocol_env``'s default), so every upstream call saved is
dedup's doing, and requests are pinned to ``gpt-small`` (the fake's ``oa-small``): one count of
``fake.requests(OA_SMALL)`` says how many upstream calls a burst of requests made. The fake's
``latency`` / ``chunk_delay`` keep the first call in flight while the others arrive.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anthropic
import httpx
import openai
import pytest
import trio
from support_protocols import (
    OA_SMALL,
    SDK_STREAM_LEAKS,
    ProtocolEnv,
    open_protocol_env,
    user,
    wait_until_cancelled,
)

from engine.errors import RouterError, UpstreamError
from engine.runtime.dedup import Flight, FlightRegistry
from engine.testing.fake_upstream import Behaviour, FakeUpstream, Usage

pytestmark = SDK_STREAM_LEAKS

Publish = Callable[[Any], None]


# == engine.runtime.dedup ========================================================================


async def read_all(flight: Flight, *, arrivals: list[tuple[float, Any]] | None = None
                   ) -> tuple[list[Any], Any]:
    """What a streaming listener reads: every item, past then live, then the result."""
    seen: list[Any] = []
    while True:
        await flight.wait_beyond(len(seen))
        for item in flight.items[len(seen):]:
            seen.append(item)
            if arrivals is not None:
                arrivals.append((trio.current_time(), item))
        if flight.done:
            return seen, await flight.wait()


async def listen(registry: FlightRegistry, run: Callable[[Publish], Awaitable[Any]],
                 out: list[Any], key: bytes = b"k") -> None:
    """Join ``key``'s flight as a non-streaming listener; append (leader?, result or error)."""
    flight, leader = registry.join(key, run)
    try:
        out.append((leader, await flight.wait()))
    except RouterError as exc:
        out.append((leader, exc))
    finally:
        flight.leave()


async def test_identical_requests_share_one_run(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    registry = FlightRegistry(nursery)
    runs = 0

    async def run(publish: Publish) -> str:
        nonlocal runs
        runs += 1
        await trio.sleep(1)
        return "answer"

    out: list[Any] = []
    async with trio.open_nursery() as listeners:
        for _ in range(5):
            listeners.start_soon(listen, registry, run, out)
    assert runs == 1
    assert sorted(out) == [(False, "answer")] * 4 + [(True, "answer")]
    assert registry.joined == 4
    assert len(registry) == 0  # forgotten at once


async def test_different_keys_do_not_share(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    registry = FlightRegistry(nursery)

    async def run(publish: Publish) -> str:
        await trio.sleep(1)
        return "answer"

    out: list[Any] = []
    async with trio.open_nursery() as listeners:
        listeners.start_soon(listen, registry, run, out, b"a")
        listeners.start_soon(listen, registry, run, out, b"b")
    assert out == [(True, "answer")] * 2 and registry.joined == 0


async def test_unshared_flights_never_join(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    registry = FlightRegistry(nursery)
    runs = 0

    async def run(publish: Publish) -> int:
        nonlocal runs
        runs += 1
        mine = runs
        await trio.sleep(1)
        return mine

    flights = [registry.join(b"k", run, share=False) for _ in range(3)]
    assert all(leader for _, leader in flights)
    assert sorted([await flight.wait() for flight, _ in flights]) == [1, 2, 3]
    for flight, _ in flights:
        flight.leave()


async def test_late_follower_gets_the_past_then_the_rest_live(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    registry = FlightRegistry(nursery)

    async def run(publish: Publish) -> str:
        for item in ("head", "one", "two", "three"):
            publish(item)
            await trio.sleep(1)
        return "done"

    leader_flight, leader = registry.join(b"k", run)
    leader_read = await read_all_in_background(nursery, leader_flight)
    await trio.sleep(2.5)  # "head", "one" and "two" are out
    follower_flight, follower = registry.join(b"k", run)
    assert follower_flight is leader_flight and leader and not follower
    joined_at = trio.current_time()
    arrivals: list[tuple[float, Any]] = []
    items, result = await read_all(follower_flight, arrivals=arrivals)
    follower_flight.leave()

    assert (items, result) == (["head", "one", "two", "three"], "done")
    assert [t for t, _ in arrivals[:3]] == [joined_at] * 3  # the past, at once
    assert arrivals[3][0] == joined_at + 0.5  # the rest as it is published
    assert await leader_read.receive() == (items, result)


async def read_all_in_background(
    nursery: trio.Nursery, flight: Flight
) -> trio.MemoryReceiveChannel[Any]:
    send, receive = trio.open_memory_channel[Any](1)

    async def read() -> None:
        try:
            await send.send(await read_all(flight))
        finally:
            flight.leave()

    nursery.start_soon(read)
    return receive


async def test_error_reaches_every_listener_and_the_next_request_starts_fresh(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    registry = FlightRegistry(nursery)
    runs = 0

    async def run(publish: Publish) -> str:
        nonlocal runs
        runs += 1
        await trio.sleep(1)
        if runs == 1:
            raise UpstreamError("gpt-small returned 500", backend="gpt-small")
        return "answer"

    out: list[Any] = []
    async with trio.open_nursery() as listeners:
        for _ in range(3):
            listeners.start_soon(listen, registry, run, out)
    errors = [result for _, result in out]
    assert all(isinstance(e, UpstreamError) for e in errors)
    assert {(type(e), e.status, e.message) for e in errors} == {
        (UpstreamError, 502, "gpt-small returned 500")
    }
    assert len(registry) == 0

    out.clear()
    await listen(registry, run, out)
    assert out == [(True, "answer")] and runs == 2


async def test_a_bug_in_the_run_is_an_internal_error_not_a_crash(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    registry = FlightRegistry(nursery)

    async def run(publish: Publish) -> str:
        raise ValueError("boom")

    out: list[Any] = []
    await listen(registry, run, out)
    [(_, error)] = out
    assert type(error) is RouterError and error.status == 500 and "boom" not in error.message
    assert "internal error in a shared upstream call" in caplog.text


async def test_leader_leaving_does_not_cancel_while_followers_listen(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    registry = FlightRegistry(nursery)

    async def run(publish: Publish) -> str:
        await trio.sleep(2)
        return "answer"

    leader_flight, _ = registry.join(b"k", run)
    follower_flight, _ = registry.join(b"k", run)
    await trio.sleep(1)
    leader_flight.leave()
    assert await follower_flight.wait() == "answer"
    follower_flight.leave()


async def test_last_listener_leaving_cancels_the_run(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    registry = FlightRegistry(nursery)
    started, cancelled = trio.Event(), trio.Event()

    async def run(publish: Publish) -> str:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()
        raise AssertionError("unreachable")

    first, _ = registry.join(b"k", run)
    second, _ = registry.join(b"k", run)
    await started.wait()
    first.leave()
    await trio.sleep(1)
    assert not cancelled.is_set()
    second.leave()
    with trio.fail_after(1):
        await cancelled.wait()
    assert len(registry) == 0


async def test_request_after_the_last_listener_left_starts_fresh(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    # The abandoned flight is cancelled, but its task only sees that at its next checkpoint:
    # a request arriving in between must not join a flight that is about to fail.
    registry = FlightRegistry(nursery)
    runs = 0

    async def run(publish: Publish) -> str:
        nonlocal runs
        runs += 1
        await trio.sleep(1)
        return f"answer {runs}"

    abandoned, _ = registry.join(b"k", run)
    await trio.sleep(0.5)
    abandoned.leave()
    fresh, leader = registry.join(b"k", run)  # no checkpoint since the leave
    try:
        assert leader and fresh is not abandoned
        assert await fresh.wait() == "answer 2"
    finally:
        fresh.leave()
    assert abandoned.done and isinstance(abandoned.error, RouterError)


# == end to end ==================================================================================


PROMPT = "Summarise the plot of Hamlet"
ANSWER = f"[oa-small] {PROMPT}"
USAGE = Usage(input_tokens=1000, output_tokens=500)
ANSWER_COST = 0.002  # gpt-small: 1000 in at 0.001 / 1k, 500 out at 0.002 / 1k
N = 5


@pytest.fixture
async def env(fake_upstream: FakeUpstream) -> Any:
    async with open_protocol_env(fake_upstream) as env:
        yield env


def calls(env: ProtocolEnv) -> int:
    return len(env.fake.requests(OA_SMALL))


async def ask(env: ProtocolEnv, text: str = PROMPT, *, client: openai.AsyncOpenAI | None = None,
              **params: Any) -> tuple[str, str | None]:
    """A chat completion pinned to gpt-small: (answer, X-LLM-Router-Dedup)."""
    params = {"model": "gpt-small", "messages": user(text)} | params
    raw = await (client or env.openai).chat.completions.with_raw_response.create(**params)
    return raw.parse().choices[0].message.content or "", raw.headers.get("x-llm-router-dedup")


async def ask_anthropic(env: ProtocolEnv, text: str = PROMPT) -> tuple[str, str | None]:
    raw = await env.anthropic.messages.with_raw_response.create(
        model="gpt-small", max_tokens=64, messages=user(text)
    )
    message = await raw.parse()
    return message.content[0].text, raw.headers.get("x-llm-router-dedup")  # type: ignore[union-attr]


class Streamer:
    """One streaming client of the OpenAI SDK, reading at its own pace."""

    def __init__(self, env: ProtocolEnv, text: str = PROMPT) -> None:
        self.env, self.prompt = env, text
        self.text = ""
        self.role: str | None = None
        self.first = trio.Event()  # some content has arrived

    async def read(self, *, leave: trio.Event | None = None) -> None:
        """Read to the end; with ``leave``, stop (and close) once it is set, after the first
        content."""
        raw = await self.env.openai.chat.completions.with_raw_response.create(
            model="gpt-small", messages=user(self.prompt), max_tokens=64, stream=True
        )
        self.role = raw.headers.get("x-llm-router-dedup")
        stream = raw.parse()
        try:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    self.text += chunk.choices[0].delta.content
                    self.first.set()
                    if leave is not None:
                        await leave.wait()
                        break
        finally:
            await stream.close()


async def gather(*calls_: Callable[[], Awaitable[Any]]) -> list[Any]:
    """Run every call concurrently; their results in order."""
    results: list[Any] = [None] * len(calls_)

    async def one(i: int) -> None:
        try:
            results[i] = await calls_[i]()
        except (openai.APIError, anthropic.APIError) as exc:
            results[i] = exc

    async with trio.open_nursery() as nursery:
        for i in range(len(calls_)):
            nursery.start_soon(one, i)
    return results


async def stats(env: ProtocolEnv) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        data: dict[str, Any] = (await http.get(env.router.url + "/stats")).json()
    return data


# -- one upstream call ---------------------------------------------------------------------------


async def test_identical_concurrent_requests_make_one_call(env: ProtocolEnv) -> None:
    env.fake.set_default(OA_SMALL, Behaviour(latency=0.2, usage=USAGE))
    results = await gather(*[lambda: ask(env)] * N)

    assert [text for text, _ in results] == [ANSWER] * N
    assert sorted(role or "" for _, role in results) == ["FOLLOWER"] * (N - 1) + ["LEADER"]
    assert calls(env) == 1
    snapshot = await stats(env)
    dedup = snapshot["dedup"]
    assert dedup["joined"] == N - 1
    assert dedup["saved_usd"] == pytest.approx((N - 1) * ANSWER_COST)
    # The total counts every request against the reference model (claude-big, three times
    # gpt-small's prices): the leader saved 3x - 1x, each follower, which cost nothing, 3x.
    assert snapshot["total_spent_usd"] == pytest.approx(ANSWER_COST)
    assert snapshot["total_saved_usd"] == pytest.approx(2 * ANSWER_COST + (N - 1) * 3 * ANSWER_COST)


async def test_both_protocols_share_one_call(env: ProtocolEnv) -> None:
    # The same canonical request from both SDKs: one call, each answer in its own protocol.
    env.fake.set_default(OA_SMALL, Behaviour(latency=0.2))
    results = await gather(lambda: ask(env, max_tokens=64), lambda: ask_anthropic(env),
                           lambda: ask(env, max_tokens=64), lambda: ask_anthropic(env))
    assert [text for text, _ in results] == [ANSWER] * 4
    assert calls(env) == 1


async def test_requests_that_differ_do_not_join(env: ProtocolEnv) -> None:
    env.fake.set_default(OA_SMALL, Behaviour(latency=0.2))
    async with openai.AsyncOpenAI(
        base_url=env.router.v1, api_key="another-tenant", max_retries=0,
        http_client=openai.DefaultAsyncHttpxClient(verify=False),
    ) as other_tenant:
        results = await gather(
            lambda: ask(env),
            lambda: ask(env, client=other_tenant),
            lambda: ask(env, "Summarise the plot of Macbeth"),
            lambda: ask(env, temperature=0.5),
            lambda: ask(env, model="claude-mid"),
        )
    assert [role for _, role in results] == ["LEADER"] * 5
    assert calls(env) == 4 and len(env.fake.requests("an-mid")) == 1


async def test_requests_differing_in_an_optional_parameter_do_not_join(
    env: ProtocolEnv,
) -> None:
    # Each changes the answer: none may receive the plain request's (or another's) answer.
    env.fake.set_default(OA_SMALL, Behaviour(latency=0.2))
    variants: list[dict[str, Any]] = [
        {}, {"n": 2}, {"frequency_penalty": 0.5}, {"presence_penalty": 0.5},
        {"logit_bias": {"50256": -100}}, {"logprobs": True},
        {"logprobs": True, "top_logprobs": 2}, {"reasoning_effort": "low"},
        {"verbosity": "low"},
    ]
    results = await gather(*[lambda v=v: ask(env, **v) for v in variants])
    assert [role for _, role in results] == ["LEADER"] * len(variants)
    assert calls(env) == len(variants)


async def test_sequential_requests_do_not_join(env: ProtocolEnv) -> None:
    # A finished flight is forgotten: repeats are the cache's business, not dedup's.
    for _ in range(2):
        assert await ask(env) == (ANSWER, "LEADER")
    assert calls(env) == 2


async def test_identical_concurrent_streams_make_one_call(env: ProtocolEnv) -> None:
    env.fake.set_default(OA_SMALL, Behaviour(chunk_delay=0.03))
    streamers = [Streamer(env) for _ in range(N)]
    anthropic_texts: list[str] = []

    async def anthropic_stream() -> None:
        async with env.anthropic.messages.stream(
            model="gpt-small", max_tokens=64, messages=user(PROMPT)
        ) as stream:
            anthropic_texts.append((await stream.get_final_message()).content[0].text)  # type: ignore[union-attr]

    await gather(*[s.read for s in streamers], anthropic_stream)
    assert [s.text for s in streamers] == [ANSWER] * N
    assert anthropic_texts == [ANSWER]
    assert sorted(s.role or "" for s in streamers).count("FOLLOWER") >= N - 1
    assert calls(env) == 1
    assert (await stats(env))["dedup"]["joined"] == N


async def test_late_follower_receives_the_whole_stream(env: ProtocolEnv) -> None:
    words = " ".join(f"w{i}" for i in range(8))
    env.fake.set_default(OA_SMALL, Behaviour(text=words, chunk_delay=0.03))
    leader, follower = Streamer(env), Streamer(env)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(leader.read)
        await leader.first.wait()
        await trio.sleep(0.12)  # a few words are already out
        nursery.start_soon(follower.read)
    assert leader.text == follower.text == words
    assert (leader.role, follower.role) == ("LEADER", "FOLLOWER")
    assert calls(env) == 1


# -- clients leaving -----------------------------------------------------------------------------


async def test_leader_leaving_a_stream_does_not_stop_its_followers(env: ProtocolEnv) -> None:
    words = " ".join(f"w{i}" for i in range(8))
    env.fake.set_default(OA_SMALL, Behaviour(text=words, chunk_delay=0.03))
    leader, follower = Streamer(env), Streamer(env)
    leader_leaves = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: leader.read(leave=leader_leaves))
        await leader.first.wait()
        nursery.start_soon(follower.read)
        await follower.first.wait()
        leader_leaves.set()
    assert leader.text == "w0 "
    assert follower.text == words and follower.role == "FOLLOWER"
    [record] = env.fake.requests(OA_SMALL)
    assert record.completed and not record.cancelled


async def test_leader_leaving_a_json_request_does_not_stop_its_followers(
    env: ProtocolEnv,
) -> None:
    env.fake.set_default(OA_SMALL, Behaviour(latency=0.4))

    async def impatient() -> None:
        with trio.move_on_after(0.15) as scope:
            await ask(env)
        assert scope.cancelled_caught

    async def patient() -> tuple[str, str | None]:
        await trio.sleep(0.05)  # join after the leader
        return await ask(env)

    _, (text, role) = await gather(impatient, patient)
    assert (text, role) == (ANSWER, "FOLLOWER")
    [record] = env.fake.requests(OA_SMALL)
    assert record.completed and not record.cancelled


async def test_last_listener_leaving_a_stream_cancels_the_upstream(env: ProtocolEnv) -> None:
    env.fake.set_default(OA_SMALL, Behaviour(text="word " * 60, chunk_delay=0.03))
    leader, follower = Streamer(env), Streamer(env)
    leader_leaves, follower_leaves = trio.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: leader.read(leave=leader_leaves))
        await leader.first.wait()
        nursery.start_soon(lambda: follower.read(leave=follower_leaves))
        await follower.first.wait()
        leader_leaves.set()
        await trio.sleep(0.1)
        assert not env.fake.requests(OA_SMALL)[0].cancelled  # the follower still listens
        follower_leaves.set()
    assert follower.role == "FOLLOWER"
    # 60 words at 0.03 s would take 1.8 s; the upstream call must end long before that.
    with trio.fail_after(1):
        await wait_until_cancelled(env.fake, OA_SMALL)
    assert calls(env) == 1


async def test_last_listener_leaving_a_json_request_cancels_the_upstream(
    env: ProtocolEnv,
) -> None:
    env.fake.set_default(OA_SMALL, Behaviour(hang=True))

    async def impatient(delay: float) -> None:
        await trio.sleep(delay)
        with trio.move_on_after(0.2):
            await ask(env)

    await gather(lambda: impatient(0), lambda: impatient(0.05))
    with trio.fail_after(1):
        await wait_until_cancelled(env.fake, OA_SMALL)
    assert calls(env) == 1
    # Nothing is left behind: the next identical request leads a call of its own.
    env.fake.set_default(OA_SMALL, Behaviour())
    assert await ask(env) == (ANSWER, "LEADER")


# -- errors --------------------------------------------------------------------------------------


async def test_an_upstream_error_reaches_every_caller_then_the_next_starts_fresh(
    env: ProtocolEnv,
) -> None:
    env.fake.script(OA_SMALL, Behaviour(status=500, latency=0.2))
    # max_tokens as the anthropic SDK must send it: one canonical request for all.
    errors = await gather(*[lambda: ask(env, max_tokens=64)] * N, lambda: ask_anthropic(env))

    openai_errors, [anthropic_error] = errors[:N], errors[N:]
    assert all(isinstance(e, openai.InternalServerError) for e in openai_errors)
    assert {(e.status_code, str(e.body)) for e in openai_errors} == {
        (502, str(openai_errors[0].body))
    }
    assert isinstance(anthropic_error, anthropic.InternalServerError)
    assert anthropic_error.status_code == 502
    assert anthropic_error.body["error"]["message"] == openai_errors[0].body["message"]  # type: ignore[index]
    assert calls(env) == 1

    assert await ask(env) == (ANSWER, "LEADER")
    assert calls(env) == 2


async def test_a_stream_error_reaches_every_listener_then_the_next_starts_fresh(
    env: ProtocolEnv,
) -> None:
    env.fake.script(OA_SMALL, Behaviour(text="one two three four", chunk_delay=0.03,
                                        error_event_after=2))
    streamers = [Streamer(env, "one two three four") for _ in range(3)]
    results = await gather(*[s.read for s in streamers])

    assert all(isinstance(r, openai.APIError) for r in results)
    assert len({r.message for r in results}) == 1
    assert [s.text for s in streamers] == ["one two "] * 3  # what came before, then the error
    assert calls(env) == 1

    fresh = Streamer(env, "one two three four")
    await fresh.read()
    assert (fresh.text, fresh.role) == ("[oa-small] one two three four", "LEADER")
    assert calls(env) == 2


async def test_concurrent_misses_are_deduplicated_and_then_cached(
    fake_upstream: FakeUpstream,
) -> None:
    async with open_protocol_env(fake_upstream, cache=True) as env:
        env.fake.set_default(OA_SMALL, Behaviour(latency=0.2))
        results = await gather(*[lambda: ask(env)] * 3)
        assert [text for text, _ in results] == [ANSWER] * 3
        raw = await env.openai.chat.completions.with_raw_response.create(
            model="gpt-small", messages=user(PROMPT)
        )
        assert raw.headers["x-llm-router-cache"] == "HIT"
        assert "x-llm-router-dedup" not in raw.headers
        assert calls(env) == 1
