"""In-flight dedup: ``engine.runtime.dedup`` on its own (trio's mock clock), then end to end over
real sockets with the official SDKs.

End to end the cache is off (``open_protocol_env``'s default), so every upstream call saved is
dedup's doing, and requests are pinned to ``gpt-small`` (the fake's ``oa-small``): one count of
``fake.requests(OA_SMALL)`` says how many upstream calls a burst of requests made. The router
reaches the fake through a relay that holds the answers (``support_hold_relay``) until every
request of a burst is in the router, so the first call is in flight while the others arrive.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import anthropic
import httpx
import openai
import pytest
import trio
import trio.testing
from support_hold_relay import HoldRelay, open_hold_relay, wait_all_in
from support_protocols import (
    OA_SMALL,
    SDK_STREAM_LEAKS,
    ProtocolEnv,
    RawStream,
    open_protocol_env,
    open_raw_stream,
    sse_events,
    user,
    wait_until_cancelled,
)

from engine.errors import ClientTooSlow, RouterError, UpstreamError
from engine.runtime.dedup import FlightRegistry, Listener, Publish
from engine.testing.fake_upstream import Behaviour, FakeUpstream, Usage

pytestmark = SDK_STREAM_LEAKS


# == engine.runtime.dedup ========================================================================


async def read_all(listener: Listener, *, arrivals: list[tuple[float, Any]] | None = None,
                   pace: float = 0) -> tuple[list[Any], Any]:
    """What a streaming listener reads: every item, past then live, then the result. ``pace``:
    seconds spent on each item (a slow client)."""
    seen: list[Any] = []
    while (item := await listener.take()) is not None:
        seen.append(item)
        if arrivals is not None:
            arrivals.append((trio.current_time(), item))
        await trio.sleep(pace)
    return seen, await listener.flight.wait()


async def listen(registry: FlightRegistry, run: Callable[[Publish], Awaitable[Any]],
                 out: list[Any], key: bytes = b"k") -> None:
    """Join ``key``'s flight as a non-streaming listener; append (leader?, result or error)."""
    listener = registry.join(key, run)
    try:
        out.append((listener.leader, await listener.flight.wait()))
    except RouterError as exc:
        out.append((listener.leader, exc))
    finally:
        listener.leave()


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

    listeners = [registry.join(b"k", run, share=False) for _ in range(3)]
    assert all(listener.leader for listener in listeners)
    assert sorted([await listener.flight.wait() for listener in listeners]) == [1, 2, 3]
    for listener in listeners:
        listener.leave()


async def test_late_follower_gets_the_past_then_the_rest_live(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    registry = FlightRegistry(nursery)

    async def run(publish: Publish) -> str:
        for item in ("head", "one", "two", "three"):
            await publish(item, 10)
            await trio.sleep(1)
        return "done"

    leader = registry.join(b"k", run)
    leader_read = await read_all_in_background(nursery, leader)
    await trio.sleep(2.5)  # "head", "one" and "two" are out
    follower = registry.join(b"k", run)
    assert follower.flight is leader.flight and leader.leader and not follower.leader
    joined_at = trio.current_time()
    arrivals: list[tuple[float, Any]] = []
    items, result = await read_all(follower, arrivals=arrivals)
    follower.leave()

    assert (items, result) == (["head", "one", "two", "three"], "done")
    assert [t for t, _ in arrivals[:3]] == [joined_at] * 3  # the past, at once
    assert arrivals[3][0] == joined_at + 0.5  # the rest as it is published
    assert await leader_read.receive() == (items, result)


async def read_all_in_background(
    nursery: trio.Nursery, listener: Listener, *, pace: float = 0
) -> trio.MemoryReceiveChannel[Any]:
    send, receive = trio.open_memory_channel[Any](1)

    async def read() -> None:
        try:
            await send.send(await read_all(listener, pace=pace))
        except ClientTooSlow as exc:
            await send.send(exc)
        finally:
            listener.leave()

    nursery.start_soon(read)
    return receive


# -- bounded buffering ---------------------------------------------------------------------------

BUFFER = 1000  # bytes a flight holds; its items below are 100 bytes each


async def test_the_upstream_is_read_at_the_pace_of_its_only_listener(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    registry = FlightRegistry(nursery, buffer_bytes=BUFFER)
    published: list[float] = []
    waited = 0.0

    async def run(publish: Publish) -> str:
        nonlocal waited
        for i in range(100):  # an upstream with everything at once: 10 times the buffer
            waited += await publish(i, 100)
            published.append(trio.current_time())
        return "done"

    listener = registry.join(b"k", run)
    started = trio.current_time()
    items, result = await read_all(listener, pace=1)  # one item a second
    listener.leave()
    assert (items, result) == (list(range(100)), "done")
    # The first buffer's worth at once, then one item for each one taken: never more than
    # half the buffer ahead of the listener once past the first buffer.
    assert published[9] == started
    assert all(published[i] >= started + i - 15 for i in range(15, 100))
    assert waited > 80


async def test_a_listener_that_falls_behind_is_cut_off_and_the_others_go_on(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    registry = FlightRegistry(nursery, buffer_bytes=BUFFER)
    held: list[int] = []

    async def run(publish: Publish) -> str:
        for i in range(100):
            await publish(i, 100)
            held.append(len(fast.flight.items))
            await trio.sleep(0.1)
        return "done"

    fast = registry.join(b"k", run)
    slow = registry.join(b"k", run)
    slow_read = await read_all_in_background(nursery, slow, pace=1)  # a tenth of the pace
    items, result = await read_all(fast)
    fast.leave()

    assert (items, result) == (list(range(100)), "done")  # not held back
    error = await slow_read.receive()
    assert isinstance(error, ClientTooSlow) and "1000 bytes behind" in error.message
    assert max(held) <= BUFFER // 100 + 1  # nothing piles up for the slow one


async def test_when_the_furthest_listener_leaves_the_next_sets_the_pace(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    registry = FlightRegistry(nursery, buffer_bytes=BUFFER)

    async def run(publish: Publish) -> str:
        for i in range(30):
            await publish(i, 100)
        return "done"

    first = registry.join(b"k", run)
    second = registry.join(b"k", run)

    async def read_then_leave() -> None:
        with trio.move_on_after(3):
            await read_all(first, pace=0.5)
        first.leave()  # the faster one's client leaves mid-stream...

    nursery.start_soon(read_then_leave)
    # ...and the slower one, no longer behind anyone, is read for, not cut off.
    assert await read_all(second, pace=0.6) == (list(range(30)), "done")
    second.leave()


async def test_a_flight_past_its_buffer_takes_no_new_followers(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    registry = FlightRegistry(nursery, buffer_bytes=BUFFER)

    async def run(publish: Publish) -> str:
        for i in range(20):
            await publish(i, 100)
            await trio.sleep(1)
        return "done"

    leader = registry.join(b"k", run)
    leader_read = await read_all_in_background(nursery, leader)
    await trio.sleep(5.5)  # 600 bytes out: all of it still held
    follower = registry.join(b"k", run)
    assert follower.flight is leader.flight
    follower_read = await read_all_in_background(nursery, follower)
    await trio.sleep(5)  # 1100 bytes out: the start is gone
    newcomer = registry.join(b"k", run)
    assert newcomer.leader and newcomer.flight is not leader.flight
    newcomer_read = await read_all_in_background(nursery, newcomer)
    expected = (list(range(20)), "done")
    assert await leader_read.receive() == await follower_read.receive() == expected
    assert await newcomer_read.receive() == expected


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


async def test_a_call_run_alone_runs_in_its_callers_task_and_ends_with_it(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    registry = FlightRegistry(nursery)
    tasks: list[trio.lowlevel.Task] = []
    cancelled = trio.Event()

    async def run(publish: Publish) -> str:
        tasks.append(trio.lowlevel.current_task())
        try:
            await trio.sleep(10)
        except trio.Cancelled:
            cancelled.set()
            raise
        return "answer"

    async def quick(publish: Publish) -> str:
        return "answer"

    assert await registry.run_alone(quick) == "answer"
    with trio.move_on_after(1):
        await registry.run_alone(run)
    assert tasks == [trio.lowlevel.current_task()] and cancelled.is_set()
    assert len(registry) == 0 and registry.joined == 0


async def test_a_bug_in_a_call_run_alone_is_an_internal_error_not_a_crash(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    registry = FlightRegistry(nursery)

    async def run(publish: Publish) -> str:
        raise ValueError("boom")

    with pytest.raises(RouterError) as caught:
        await registry.run_alone(run)
    error = caught.value
    assert type(error) is RouterError and error.status == 500 and "boom" not in error.message
    assert "internal error in a shared upstream call" in caplog.text

    async def fails(publish: Publish) -> str:
        raise UpstreamError("gpt-small returned 500", backend="gpt-small")

    with pytest.raises(UpstreamError):  # the router's own errors as they are
        await registry.run_alone(fails)


async def test_leader_leaving_does_not_cancel_while_followers_listen(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    registry = FlightRegistry(nursery)

    async def run(publish: Publish) -> str:
        await trio.sleep(2)
        return "answer"

    leader = registry.join(b"k", run)
    follower = registry.join(b"k", run)
    await trio.sleep(1)
    leader.leave()
    assert await follower.flight.wait() == "answer"
    follower.leave()


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

    first = registry.join(b"k", run)
    second = registry.join(b"k", run)
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

    abandoned = registry.join(b"k", run)
    await trio.sleep(0.5)
    abandoned.leave()
    fresh = registry.join(b"k", run)  # no checkpoint since the leave
    try:
        assert fresh.leader and fresh.flight is not abandoned.flight
        assert await fresh.flight.wait() == "answer 2"
    finally:
        fresh.leave()
    assert abandoned.flight.done and isinstance(abandoned.flight.error, RouterError)


# == end to end ==================================================================================


PROMPT = "Summarise the plot of Hamlet"
ANSWER = f"[oa-small] {PROMPT}"
USAGE = Usage(input_tokens=1000, output_tokens=500)
ANSWER_COST = 0.002  # gpt-small: 1000 in at 0.001 / 1k, 500 out at 0.002 / 1k
N = 5


@pytest.fixture
async def relay(fake_upstream: FakeUpstream) -> Any:
    async with open_hold_relay(fake_upstream) as relay:
        yield relay


@pytest.fixture
async def env(fake_upstream: FakeUpstream, relay: HoldRelay) -> Any:
    async with open_protocol_env(fake_upstream, via=relay) as env:
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


async def together(env: ProtocolEnv, relay: HoldRelay,
                   *calls_: Callable[[], Awaitable[Any]]) -> list[Any]:
    """As :func:`gather`, with the upstream's answers held until the router has every request
    in hand (joined a flight, or waiting for its own call); then they go through."""
    relay.hold()
    out: list[Any] = []

    async def run() -> None:
        out.extend(await gather(*calls_))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            await wait_all_in(env.router.url, len(calls_))
            relay.release()
    return out


async def in_flight(env: ProtocolEnv) -> float:
    """The router's chat requests in flight (``llm_router_in_flight_requests``)."""
    async with httpx.AsyncClient() as http:
        found = re.search(rb"^llm_router_in_flight_requests (\S+)$",
                          (await http.get(env.router.url + "/metrics")).content, re.MULTILINE)
    assert found is not None
    return float(found.group(1))


async def stats(env: ProtocolEnv) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        data: dict[str, Any] = (await http.get(env.router.url + "/stats")).json()
    return data


# -- one upstream call ---------------------------------------------------------------------------


async def test_identical_concurrent_requests_make_one_call(
    env: ProtocolEnv, relay: HoldRelay,
) -> None:
    env.fake.set_default(OA_SMALL, Behaviour(usage=USAGE))
    results = await together(env, relay, *[lambda: ask(env)] * N)

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


async def test_both_protocols_share_one_call(env: ProtocolEnv, relay: HoldRelay) -> None:
    # The same canonical request from both SDKs: one call, each answer in its own protocol.
    results = await together(env, relay,
                             lambda: ask(env, max_tokens=64), lambda: ask_anthropic(env),
                             lambda: ask(env, max_tokens=64), lambda: ask_anthropic(env))
    assert [text for text, _ in results] == [ANSWER] * 4
    assert calls(env) == 1


async def test_requests_that_differ_do_not_join(env: ProtocolEnv, relay: HoldRelay) -> None:
    async with openai.AsyncOpenAI(
        base_url=env.router.v1, api_key="another-tenant", max_retries=0,
        http_client=openai.DefaultAsyncHttpxClient(verify=False),
    ) as other_tenant:
        results = await together(
            env, relay,
            lambda: ask(env),
            lambda: ask(env, client=other_tenant),
            lambda: ask(env, "Summarise the plot of Macbeth"),
            lambda: ask(env, temperature=0.5),
            lambda: ask(env, model="claude-mid"),
        )
    assert [role for _, role in results] == ["LEADER"] * 5
    assert calls(env) == 4 and len(env.fake.requests("an-mid")) == 1


async def test_requests_differing_in_an_optional_parameter_do_not_join(
    env: ProtocolEnv, relay: HoldRelay,
) -> None:
    # Each changes the answer: none may receive the plain request's (or another's) answer.
    variants: list[dict[str, Any]] = [
        {}, {"n": 2}, {"frequency_penalty": 0.5}, {"presence_penalty": 0.5},
        {"logit_bias": {"50256": -100}}, {"logprobs": True},
        {"logprobs": True, "top_logprobs": 2}, {"reasoning_effort": "low"},
        {"verbosity": "low"},
    ]
    results = await together(env, relay, *[lambda v=v: ask(env, **v) for v in variants])
    assert [role for _, role in results] == ["LEADER"] * len(variants)
    assert calls(env) == len(variants)


async def test_sequential_requests_do_not_join(env: ProtocolEnv) -> None:
    # A finished flight is forgotten: repeats are the cache's business, not dedup's.
    for _ in range(2):
        assert await ask(env) == (ANSWER, "LEADER")
    assert calls(env) == 2


async def test_identical_concurrent_streams_make_one_call(
    env: ProtocolEnv, relay: HoldRelay,
) -> None:
    streamers = [Streamer(env) for _ in range(N)]
    anthropic_texts: list[str] = []

    async def anthropic_stream() -> None:
        async with env.anthropic.messages.stream(
            model="gpt-small", max_tokens=64, messages=user(PROMPT)
        ) as stream:
            anthropic_texts.append((await stream.get_final_message()).content[0].text)  # type: ignore[union-attr]

    await together(env, relay, *[s.read for s in streamers], anthropic_stream)
    assert [s.text for s in streamers] == [ANSWER] * N
    assert anthropic_texts == [ANSWER]
    assert sorted(s.role or "" for s in streamers).count("FOLLOWER") >= N - 1
    assert calls(env) == 1
    assert (await stats(env))["dedup"]["joined"] == N


async def test_late_follower_receives_the_whole_stream(
    env: ProtocolEnv, relay: HoldRelay,
) -> None:
    """The stream is held after its third word: the follower joins a flight with words
    already out, and still receives every word from the first."""
    words = " ".join(f"w{i}" for i in range(8))
    env.fake.set_default(OA_SMALL, Behaviour(text=words))
    leader, follower = Streamer(env), Streamer(env)
    relay.hold_after(b"w2")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(leader.read)
            await relay.wait_held(1)
            await leader.first.wait()
            nursery.start_soon(follower.read)
            await wait_all_in(env.router.url, 2)
            assert leader.text and not leader.text.startswith(words)  # a few words are out
            relay.release()
    assert leader.text == follower.text == words
    assert (leader.role, follower.role) == ("LEADER", "FOLLOWER")
    assert calls(env) == 1


# -- a client that stops reading --------------------------------------------------------------

BIG = ("y" * 8191 + " ") * 512  # 4 MiB: far more than a stalled client's buffers hold


async def read_stream(env: ProtocolEnv, body: dict[str, Any]) -> tuple[list[Any], str | None]:
    """Read a whole stream over httpx: its SSE events and its X-LLM-Router-Dedup."""
    async with httpx.AsyncClient() as http, http.stream(
        "POST", env.router.v1 + "/chat/completions", json=body
    ) as response:
        raw = b"".join([piece async for piece in response.aiter_bytes()])
    return sse_events(raw), response.headers.get("x-llm-router-dedup")


def streamed_text(events: list[tuple[str, Any]]) -> str:
    return "".join(
        data["choices"][0]["delta"].get("content") or ""
        for _, data in events if isinstance(data, dict) and data.get("choices")
    )


@pytest.mark.parametrize("stalled", ["LEADER", "FOLLOWER"])
async def test_a_stalled_listener_is_cut_off_without_holding_back_the_others(
    fake_upstream: FakeUpstream, relay: HoldRelay, stalled: str
) -> None:
    # The write timeout stays long: the stalled client is cut off for falling behind. The
    # answer is held until both requests are in the router, the second joined to the first.
    async with open_protocol_env(fake_upstream, server={"stream_buffer_bytes": 65536},
                                 via=relay) as env:
        env.fake.set_default(OA_SMALL, Behaviour(text=BIG))
        body = {"model": "gpt-small", "messages": user(PROMPT), "max_tokens": 64,
                "stream": True}
        fast: list[Any] = []
        slow: list[RawStream] = []
        fast_done = trio.Event()

        async def read_fast() -> None:
            fast.extend(await read_stream(env, body))
            fast_done.set()

        async def stall() -> None:
            async with open_raw_stream(env.router.url, "/v1/chat/completions", body) as client:
                slow.append(client)
                # Reads nothing while the fast one reads the whole answer, then the rest.
                with trio.fail_after(10):
                    await fast_done.wait()
                with trio.fail_after(5):
                    await client.read_to_end()

        first, second = (stall, read_fast) if stalled == "LEADER" else (read_fast, stall)
        relay.hold()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(first)
            with trio.fail_after(60):  # the second joins while the first waits for its answer
                await relay.wait_held(1)
                nursery.start_soon(second)
                await wait_all_in(env.router.url, 2)
            relay.release()

        events, role = fast
        assert role != stalled and streamed_text(events) == BIG and events[-1][1] == "[DONE]"
        assert calls(env) == 1
        # The slow client got the start, then an error event in its protocol, never the end.
        [client] = slow
        assert f"x-llm-router-dedup: {stalled}".encode() in client.head
        _, last = client.events()[-1]
        assert last["error"]["code"] == "client_too_slow", last
        slow_text = streamed_text(client.events())
        assert BIG.startswith(slow_text) and len(slow_text) < len(BIG) / 2


# -- clients leaving -----------------------------------------------------------------------------


async def test_leader_leaving_a_stream_does_not_stop_its_followers(
    env: ProtocolEnv, relay: HoldRelay,
) -> None:
    """The stream is held after its third word while the follower joins and the leader
    leaves; then the rest goes through, to the follower."""
    words = " ".join(f"w{i}" for i in range(8))
    env.fake.set_default(OA_SMALL, Behaviour(text=words))
    leader, follower = Streamer(env), Streamer(env)
    leader_leaves = trio.Event()
    relay.hold_after(b"w2")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: leader.read(leave=leader_leaves))
            await leader.first.wait()
            nursery.start_soon(follower.read)
            await follower.first.wait()
            leader_leaves.set()
            while await in_flight(env) > 1:
                await trio.sleep(0.005)
            relay.release()
    assert leader.text == "w0 "
    assert follower.text == words and follower.role == "FOLLOWER"
    [record] = env.fake.requests(OA_SMALL)
    assert record.completed and not record.cancelled


async def test_leader_leaving_a_json_request_does_not_stop_its_followers(
    env: ProtocolEnv, relay: HoldRelay,
) -> None:
    """The answer is held while the follower joins (both requests in the router) and the
    leader leaves (only the follower's left); then it goes through, to the follower alone.
    Had the leader's leaving ended the call, the relay would have dropped the held answer and
    the follower would get an error or a call of its own."""
    relay.hold()
    answers: list[tuple[str, str | None]] = []

    async def patient() -> None:
        answers.append(await ask(env))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            async with trio.open_nursery() as impatient:
                impatient.start_soon(ask, env)
                await relay.wait_held(1)
                nursery.start_soon(patient)
                await wait_all_in(env.router.url, 2)
                impatient.cancel_scope.cancel()
            while await in_flight(env) > 1:
                await trio.sleep(0.005)
            await trio.testing.wait_all_tasks_blocked()
            assert relay.held == 1  # the call is still there for the follower
            relay.release()
    assert answers == [(ANSWER, "FOLLOWER")]
    [record] = env.fake.requests(OA_SMALL)
    assert record.completed and not record.cancelled


async def test_last_listener_leaving_a_stream_cancels_the_upstream(env: ProtocolEnv) -> None:
    """The stream stalls after two words and would never end by itself: the call is still
    open once the leader's request is over, and closed once the follower leaves too."""
    env.fake.set_default(OA_SMALL, Behaviour(text="word " * 60, stall_after=2))
    leader, follower = Streamer(env), Streamer(env)
    leader_leaves, follower_leaves = trio.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: leader.read(leave=leader_leaves))
        await leader.first.wait()
        nursery.start_soon(lambda: follower.read(leave=follower_leaves))
        await follower.first.wait()
        leader_leaves.set()
        with trio.fail_after(60):
            while await in_flight(env) > 1:
                await trio.sleep(0.005)
        await trio.testing.wait_all_tasks_blocked()
        assert not env.fake.requests(OA_SMALL)[0].cancelled  # the follower still listens
        follower_leaves.set()
    assert follower.role == "FOLLOWER"
    with trio.fail_after(60):
        await wait_until_cancelled(env.fake, OA_SMALL)
    assert calls(env) == 1


async def test_last_listener_leaving_a_json_request_cancels_the_upstream(
    env: ProtocolEnv,
) -> None:
    """Both ask a call that never answers, and both leave once both are in the router."""
    env.fake.set_default(OA_SMALL, Behaviour(hang=True))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, env)
            nursery.start_soon(ask, env)
            await wait_all_in(env.router.url, 2)
            nursery.cancel_scope.cancel()
        await wait_until_cancelled(env.fake, OA_SMALL)
    assert calls(env) == 1
    # Nothing is left behind: the next identical request leads a call of its own.
    env.fake.set_default(OA_SMALL, Behaviour())
    assert await ask(env) == (ANSWER, "LEADER")


# -- errors --------------------------------------------------------------------------------------


async def test_an_upstream_error_reaches_every_caller_then_the_next_starts_fresh(
    env: ProtocolEnv, relay: HoldRelay,
) -> None:
    env.fake.script(OA_SMALL, Behaviour(status=500))
    # max_tokens as the anthropic SDK must send it: one canonical request for all.
    errors = await together(env, relay, *[lambda: ask(env, max_tokens=64)] * N,
                            lambda: ask_anthropic(env))

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
    fake_upstream: FakeUpstream, relay: HoldRelay,
) -> None:
    async with open_protocol_env(fake_upstream, cache=True, via=relay) as env:
        results = await together(env, relay, *[lambda: ask(env)] * 3)
        assert [text for text, _ in results] == [ANSWER] * 3
        raw = await env.openai.chat.completions.with_raw_response.create(
            model="gpt-small", messages=user(PROMPT)
        )
        assert raw.headers["x-llm-router-cache"] == "HIT"
        assert "x-llm-router-dedup" not in raw.headers
        assert calls(env) == 1


# -- dedup off: every request its own call, a JSON one in its handler's task -----------------------


@pytest.fixture
async def solo(fake_upstream: FakeUpstream, relay: HoldRelay) -> Any:
    async with open_protocol_env(fake_upstream, dedup=False, via=relay) as env:
        yield env


async def test_with_dedup_off_identical_concurrent_requests_each_make_a_call(
    solo: ProtocolEnv, relay: HoldRelay,
) -> None:
    streamer = Streamer(solo)
    results = await together(solo, relay, *[lambda: ask(solo, max_tokens=64)] * N,
                             lambda: ask_anthropic(solo), streamer.read)
    assert results[:N + 1] == [(ANSWER, "LEADER")] * (N + 1)
    assert (streamer.text, streamer.role) == (ANSWER, "LEADER")
    assert calls(solo) == N + 2
    assert (await stats(solo))["dedup"]["joined"] == 0


async def test_with_dedup_off_a_client_leaving_a_json_request_cancels_the_upstream(
    solo: ProtocolEnv,
) -> None:
    solo.fake.set_default(OA_SMALL, Behaviour(hang=True))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, solo)
            await wait_all_in(solo.router.url, 1)
            nursery.cancel_scope.cancel()
        await wait_until_cancelled(solo.fake, OA_SMALL)
    assert calls(solo) == 1
    solo.fake.set_default(OA_SMALL, Behaviour())
    assert await ask(solo) == (ANSWER, "LEADER")


async def test_with_dedup_off_an_upstream_error_reaches_its_caller(solo: ProtocolEnv) -> None:
    solo.fake.script(OA_SMALL, Behaviour(status=500))
    [error] = await gather(lambda: ask(solo))
    assert isinstance(error, openai.InternalServerError) and error.status_code == 502
    assert await ask(solo) == (ANSWER, "LEADER")
    assert calls(solo) == 2
