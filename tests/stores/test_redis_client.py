"""The Redis client against a real ``redis-server``: commands and pipelines, scripts,
credentials, and what callers see when Redis dies, hangs and comes back."""

from __future__ import annotations

import os
import signal

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
