"""What a deployment that runs for months leaves in Redis: processes come and go (restarts,
rolling deploys, ``--workers``), periods end, and the keys named after them must go with
them, with real ``llm-router`` processes (or the real stores) on a real ``redis-server``."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import trio
from support_processes import fake_model, router_process, write_router_config
from support_redis import RedisServer
from support_routing import wait_for

from engine.core.redis_address import RedisAddress
from engine.stores.redis import open_redis
from engine.testing.fake_upstream import FakeUpstream


def write_config(folder: Path, fake: FakeUpstream, redis_url: str) -> Path:
    return write_router_config(folder, redis_url, [fake_model(fake, "cheap", price=0.001)],
                               health={"probe_interval_sec": 300, "max_probe_interval_sec": 600})


async def redis_call(redis: RedisServer, *command: str) -> Any:
    async with open_redis(RedisAddress.from_url(redis.url), timeout=5.0) as client:
        return await client.call(*command, probe=True)


async def chat(http: httpx.AsyncClient, url: str) -> None:
    answer = await http.post(f"{url}/v1/chat/completions", json={
        "model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200, answer.text


async def stats(http: httpx.AsyncClient, url: str) -> Any:
    answer = await http.get(f"{url}/stats")
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_restarts_keep_the_totals_but_leave_no_hash_behind(
    fake_upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path,
) -> None:
    config_a = write_config(tmp_path / "a", fake_upstream, redis_server.url)
    config_b = write_config(tmp_path / "b", fake_upstream, redis_server.url)
    async with router_process(config_b) as (_, b), httpx.AsyncClient(timeout=10) as http:
        await chat(http, b)
        for restart in range(3):
            async with router_process(config_a) as (process, a):
                for _ in range(2):
                    await chat(http, a)
                process.send_signal(signal.SIGTERM)
                with trio.fail_after(15):
                    await process.wait()
            want = 1 + 2 * (restart + 1)

            async def counted(want: int = want) -> bool:
                return bool((await stats(http, b))["total_requests"] == want)

            await wait_for(counted, poll=0.05)
        # three processes came and went: their totals stay, their hashes do not
        shown = await stats(http, b)
        assert shown["scope"] == "shared"
        assert shown["by_model"] == {"cheap": 7}
        hashes = await redis_call(redis_server, "KEYS", "llmr:stats:{totals}:proc:*")
        assert len(hashes) == 1, hashes
        assert len(await redis_call(redis_server, "SMEMBERS", "llmr:stats:{totals}:procs")) == 1
        assert await redis_call(redis_server, "KEYS", "llmr:stats:{totals}:gauges:*") != []
