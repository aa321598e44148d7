"""The Redis client against a real ``redis-server``: commands and pipelines, scripts,
credentials, and what callers see when Redis dies, hangs and comes back."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import pytest
import trio
import trio.testing
from support_redis import RedisServer

from engine.core.redis_address import RedisAddress
from engine.errors import StoreUnavailable
from engine.stores.redis import Redis, ReplyError, Script, open_redis


def address(server: RedisServer) -> RedisAddress:
    return RedisAddress.from_url(server.url)


async def test_commands_pipelines_and_errors_in_place(redis_server: RedisServer) -> None:
    async with open_redis(address(redis_server)) as redis:
        assert await redis.call("SET", "k", b"\x00\xffv") == b"OK"
        assert await redis.call("GET", "k") == b"\x00\xffv"
        assert await redis.call("GET", "missing") is None
        replies = await redis.pipeline([["INCRBY", "n", 5], ["LPUSH", "n", "x"],
                                        ["HSET", "h", "a", 1.5], ["HGETALL", "h"]])
        assert replies[0] == 5 and isinstance(replies[1], ReplyError)
        assert replies[1].kind == "WRONGTYPE" and replies[2:] == [1, [b"a", b"1.5"]]
        with pytest.raises(ReplyError):
            await redis.call("NOSUCHCOMMAND")
        assert redis.up and redis.health() == {"status": "ok", "url": redis_server.url}


async def test_concurrent_callers_each_get_their_own_reply(redis_server: RedisServer) -> None:
    got: dict[int, object] = {}
    # What is tested is which reply reaches which caller, not how fast: on a loaded machine
    # 200 callers can wait longer than the 0.25 s default between them.
    async with open_redis(address(redis_server), timeout=10) as redis:
        await redis.call("PING", probe=True)

        async def one(i: int) -> None:
            await redis.call("SET", f"k{i}", i)
            got[i] = await redis.call("GET", f"k{i}")

        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(one, i)
    assert got == {i: str(i).encode() for i in range(200)}


async def test_a_script_is_loaded_once_then_run_by_its_digest(redis_server: RedisServer) -> None:
    script = Script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    async with open_redis(address(redis_server)) as redis:
        await redis.call("PING", probe=True)
        assert await redis.run(script, ["c"], [2]) == 2
        assert await redis.call("SCRIPT", "EXISTS", script.sha) == [1]
        assert await redis.run(script, ["c"], [3]) == 5


async def test_credentials_are_sent_and_never_shown(tmp_path: object) -> None:
    from support_redis import running_redis

    with running_redis(tmp_path, password="s3cret-pass") as server:  # type: ignore[arg-type]
        async with open_redis(RedisAddress.from_url(server.url)) as redis:
            assert await redis.call("PING", probe=True) == b"PONG"
            assert "s3cret" not in str(redis.health())
        wrong = server.url.replace("s3cret-pass", "wrong")
        async with open_redis(RedisAddress.from_url(wrong)) as redis:
            with pytest.raises(StoreUnavailable) as caught:
                await redis.call("PING", probe=True)
            assert "s3cret" not in caught.value.message and "wrong" not in caught.value.message
            assert redis.health()["status"] == "down"


def test_urls() -> None:
    parsed = RedisAddress.from_url("rediss://user:p%40ss@h.example:7000/3")
    assert (parsed.host, parsed.port, parsed.db, parsed.username, parsed.password,
            parsed.tls) == ("h.example", 7000, 3, "user", "p@ss", True)
    assert parsed.describe() == "rediss://h.example:7000/3"
    for bad in ("http://h:1", "redis://", "redis://h/x", "redis://h:port"):
        with pytest.raises(ValueError):
            RedisAddress.from_url(bad)


async def test_down_fails_fast_then_comes_back(redis_server: RedisServer) -> None:
    came_back = trio.Event()

    async def hook() -> None:
        came_back.set()

    async with open_redis(address(redis_server)) as redis:
        redis.on_up(hook)
        await redis.call("PING")
        redis_server.kill()
        with trio.fail_after(2):  # an idle connection's end is noticed without a command
            while redis.up:
                await trio.sleep(0.01)
        with pytest.raises(StoreUnavailable):
            await redis.call("PING")
        redis_server.start()
        with pytest.raises(StoreUnavailable):  # a request's command does not reconnect...
            await redis.call("PING")
        redis_server.kill()
        assert redis.health()["status"] == "down"
        # While the backoff lasts, a probe fails at once without knocking: something listens
        # on Redis's port meanwhile and counts the connections it is offered (none). How
        # fast the failures come is the machine's business, not this test's.
        assert await _knocks_during(redis_server.port, redis, probes=10) == 0
        redis_server.start()
        came_back = trio.Event()
        with trio.fail_after(10):
            while True:
                try:
                    assert await redis.call("PING", probe=True) == b"PONG"
                    break
                except StoreUnavailable:
                    await trio.sleep(0.1)
            await came_back.wait()
        assert redis.up


async def _knocks_during(port: int, redis: Redis, *, probes: int) -> int:
    """Connections offered to ``port`` while ``redis`` answers ``probes`` probing PINGs, each
    of which must fail as unavailable."""
    knocks = 0

    async def count(stream: trio.SocketStream) -> None:
        nonlocal knocks
        knocks += 1
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, count, listeners)
        for _ in range(probes):
            with pytest.raises(StoreUnavailable):
                await redis.call("PING", probe=True)
        await trio.testing.wait_all_tasks_blocked()  # a knock, had there been one, is in
        nursery.cancel_scope.cancel()
    return knocks


async def test_a_hung_redis_is_a_timeout_not_a_hang(redis_server: RedisServer) -> None:
    assert redis_server.process is not None
    async with open_redis(address(redis_server), timeout=0.2) as redis:
        await redis.call("PING", probe=True)
        os.kill(redis_server.process.pid, signal.SIGSTOP)
        try:
            with trio.fail_after(2):
                with pytest.raises(StoreUnavailable) as caught:
                    await redis.call("PING")
            assert "no answer within 0.2 s" in caught.value.message
        finally:
            os.kill(redis_server.process.pid, signal.SIGCONT)


async def test_a_process_that_stood_still_finds_the_answer_waiting(
    redis_server: RedisServer,
) -> None:
    """A process that stands still (a GC pause, a frozen VM, SIGSTOP) past a command's
    deadline finds Redis's answer in the socket when it goes on: that is the command's
    answer, and Redis is not taken for down (which would drop the connection, fail the other
    commands and resynchronise every shared store, a backoff later, for nothing)."""
    async with (open_redis(address(redis_server), timeout=0.2) as redis,
                open_redis(address(redis_server)) as watcher):
        answers: list[object] = []

        async def pop() -> None:  # Redis answers (nil) after 0.1 s, within the 0.2 s
            answers.append(await redis.call("BLPOP", "nothing", "0.1"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pop)
            with trio.fail_after(5):
                while b"blocked_clients:1" not in await watcher.call("INFO", "clients"):
                    await trio.sleep(0.001)
            time.sleep(0.5)  # the whole process stands still, past the deadline
        assert answers == [None]
        assert redis.up


@pytest.mark.parametrize("callers", [1, 8])
async def test_a_busy_event_loop_is_not_taken_for_a_slow_redis(redis_server: RedisServer,
                                                              callers: int) -> None:
    """A process whose event loop is saturated (each scheduling round takes ~0.12 s, as with
    64 requests at once on one core) reads Redis's answers rounds after they arrived: a
    command's round trip then takes several rounds, longer than its 0.2 s timeout, though
    Redis answered at once. That is the process's lateness, not Redis's: Redis stays up."""
    async with open_redis(address(redis_server), timeout=0.2) as redis:
        await redis.call("PING", probe=True)

        async def busy() -> None:
            while True:
                time.sleep(0.03)  # a request's work, holding the loop
                await trio.lowlevel.checkpoint()

        async def calls(n: int) -> None:
            for i in range(5):
                assert await redis.call("ECHO", f"{n}-{i}") == f"{n}-{i}".encode()

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(busy)
            async with trio.open_nursery() as callers_:
                for n in range(callers):
                    callers_.start_soon(calls, n)
            nursery.cancel_scope.cancel()
        assert redis.up


async def test_a_machine_that_stood_still_gives_redis_its_time_again(
    redis_server: RedisServer,
) -> None:
    """The whole machine stood still (a frozen VM, Redis on it): Redis had no time to answer
    either, and is given its timeout again from when the process goes on."""
    assert redis_server.process is not None
    async with open_redis(address(redis_server), timeout=0.2) as redis:
        await redis.call("PING")
        answers: list[object] = []

        async def ping() -> None:
            answers.append(await redis.call("PING"))

        os.kill(redis_server.process.pid, signal.SIGSTOP)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ping)
                await trio.testing.wait_all_tasks_blocked()  # the PING is written, waiting
                time.sleep(0.5)  # this process stands still past its deadline...
                os.kill(redis_server.process.pid, signal.SIGCONT)  # ...and goes on with Redis
        finally:
            os.kill(redis_server.process.pid, signal.SIGCONT)
        assert answers == [b"PONG"]
        assert redis.up


async def test_redis_is_marked_up_on_a_connection_the_stores_can_use(
    redis_server: RedisServer,
) -> None:
    """A command answered on a connection that another command's timeout has just dropped
    does not mark Redis up: the ``on_up`` hooks (each shared store resynchronising, a
    feedback report queued while Redis was down sent) would run with no connection, fail,
    and not run again once there is one."""
    assert redis_server.process is not None
    pid = redis_server.process.pid
    async with open_redis(address(redis_server), timeout=0.2) as redis:
        resyncs: list[bool] = []

        async def resync() -> None:
            try:
                await redis.call("PING")
                resyncs.append(True)
            except StoreUnavailable:
                resyncs.append(False)

        redis.on_up(resync)

        async def ping() -> None:
            try:
                assert await redis.call("PING", timeout=5) == b"PONG"
            except StoreUnavailable:
                pass  # failed with the connection, if that was dropped first

        async def pop() -> None:
            with pytest.raises(StoreUnavailable):
                await redis.call("BLPOP", "nothing", "10")

        for round_ in range(1, 6):  # which of the two goes on first is the scheduler's draw
            os.kill(pid, signal.SIGSTOP)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(ping)
                    await trio.testing.wait_all_tasks_blocked()  # written, unanswered
                    nursery.start_soon(pop)
                    await trio.testing.wait_all_tasks_blocked()
                    time.sleep(0.17)  # just past the BLPOP's deadline (not by half its
                    # timeout, so that the process is not taken to have stood still)...
                    os.kill(pid, signal.SIGCONT)
                    time.sleep(0.05)  # ...while Redis answers the PING
            finally:
                os.kill(pid, signal.SIGCONT)
            with trio.fail_after(10):  # down, then found again by a probe
                while True:
                    try:
                        await redis.call("PING", probe=True)
                        break
                    except StoreUnavailable:
                        await trio.sleep(0.05)
            with trio.fail_after(5):
                while len(resyncs) < round_:
                    await trio.sleep(0.01)
        assert resyncs == [True] * 5


async def test_a_caller_cancelled_at_any_point_never_shifts_the_replies(
    redis_server: RedisServer,
) -> None:
    """A caller's call can be cancelled at any moment (its client left, its request ended).
    Whatever it had written by then, every later caller on the connection gets its own
    reply: a reply slot queued for a command that was never written would hand each later
    caller the reply meant for the caller before it (a cached answer for another key, another
    tenant's). The cancel lands before, during and after the write, as the scheduler draws."""
    async with open_redis(address(redis_server), timeout=2) as redis:
        await redis.call("PING", probe=True)
        got: list[tuple[bytes, object]] = []

        async def cancelled_after(turns: int, scope: trio.CancelScope) -> None:
            for _ in range(turns):
                await trio.lowlevel.checkpoint()
            scope.cancel()

        async def echo(text: bytes) -> None:
            try:
                got.append((text, await redis.call("ECHO", text)))
            except StoreUnavailable as exc:
                got.append((text, exc.message))

        for round_ in range(100):
            for turns in range(3):
                with trio.CancelScope() as scope:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(cancelled_after, turns, scope)
                        with contextlib.suppress(StoreUnavailable):  # the check is below
                            await redis.call("ECHO", f"cancelled {round_} {turns}")
                async with trio.open_nursery() as nursery:  # two callers after it
                    nursery.start_soon(echo, f"first {round_} {turns}".encode())
                    nursery.start_soon(echo, f"second {round_} {turns}".encode())
        assert [(sent, reply) for sent, reply in got if reply != sent] == []
        assert len(got) == 600
