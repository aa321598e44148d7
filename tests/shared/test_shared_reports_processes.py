"""Feedback by request id with two real ``llm-router`` processes on one Redis: a client
cannot choose which process its ``POST /v1/feedback`` reaches, so a report on a request the
other process answered is filed there (it alone remembers how it routed the request) and
its answer returned; a request no live process remembers is a 404, as with one process, and
a process that does not answer in time leaves the outcome unknown (503). Inboxes expire, and
a process that stops takes its keys with it."""

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
from engine.runtime.shared_reports import ALIVE_SEC, ANSWER_SEC, INBOX_SEC, WAIT_SEC
from engine.stores.redis import open_redis
from engine.testing.fake_upstream import FakeUpstream


def write_config(folder: Path, fake: FakeUpstream, redis_url: str) -> Path:
    return write_router_config(folder, redis_url, [fake_model(fake, "cheap", price=0.001)])


async def answered_by(http: httpx.AsyncClient, url: str, text: str) -> str:
    """The request id of one chat answered by the router at ``url``."""
    answer = await http.post(f"{url}/v1/chat/completions", json={
        "model": "auto", "messages": [{"role": "user", "content": text}]})
    assert answer.status_code == 200, answer.text
    request_id: str = answer.headers["x-request-id"]
    assert answer.headers["x-llm-router-request-id"] == request_id
    assert answer.json()["id"].endswith(request_id)
    return request_id


async def feedback(http: httpx.AsyncClient, url: str, request_id: str,
                   quality: float = 0.2) -> httpx.Response:
    return await http.post(f"{url}/v1/feedback",
                           json={"request_id": request_id, "quality": quality})


async def redis_call(redis: RedisServer, *command: str) -> Any:
    async with open_redis(RedisAddress.from_url(redis.url), timeout=5.0) as client:
        return await client.call(*command, probe=True)


async def routing(http: httpx.AsyncClient, url: str) -> Any:
    answer = await http.get(f"{url}/v1/routing")
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_feedback_reaches_the_process_that_answered(
    fake_upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path,
) -> None:
    config_a = write_config(tmp_path / "a", fake_upstream, redis_server.url)
    config_b = write_config(tmp_path / "b", fake_upstream, redis_server.url)
    async with (httpx.AsyncClient(timeout=20) as http,
                router_process(config_a) as (process_a, a),
                router_process(config_b) as (_, b)):
        of_a = await answered_by(http, a, "Which prime number follows seventeen?")
        of_b = await answered_by(http, b, "Name the river that flows through Vienna.")
        assert of_a[4:12] != of_b[4:12]  # each process's ids carry its own tag

        # Each report goes to the process that did not answer it.
        for url, request_id in ((b, of_a), (a, of_b)):
            answer = await feedback(http, url, request_id)
            assert answer.status_code == 200, answer.text
            assert answer.json()["accepted"] is True
        inbox_a = f"llmr:reports:{{{of_a[4:12]}}}:inbox"
        assert 0 < await redis_call(redis_server, "TTL", inbox_a) <= INBOX_SEC
        state = await routing(http, a)
        assert state["feedback"]["by_tier"]["1"]["reports"] == 2

        # Unknown ids: one of A's tag that A never made, one of no process's tag,
        # one that no router made.
        for request_id in (of_a[:12] + "0" * 16, "req_ffffffff" + of_a[12:], "unknown"):
            answer = await feedback(http, b, request_id)
            assert answer.status_code == 404, answer.text
            error = answer.json()["error"]
            assert error["code"] == "not_found" and error["param"] == "request_id"
        # An invalid report is refused by B itself, in the OpenAI error shape.
        answer = await http.post(f"{b}/v1/feedback",
                                 json={"request_id": of_a, "quality": 7})
        assert answer.status_code == 400
        assert answer.json()["error"]["param"] == "quality"

        # A stalls: B cannot tell whether A will still file the report (503), and A
        # does once it goes on.
        stalled = await answered_by(http, a, "What is the boiling point of water?")
        process_a.send_signal(signal.SIGSTOP)
        try:
            answer = await feedback(http, b, stalled)
        finally:
            process_a.send_signal(signal.SIGCONT)
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "store_unavailable"

        async def filed() -> bool:
            return bool((await routing(http, a))["feedback"]["total"] == 3)

        await wait_for(filed, poll=0.1, timeout=20)

        # A stays silent past its alive key: B cannot tell a pause from a crash, so the
        # report is not filed and the answer is a 503 at once (a 404 would say A forgot the
        # request); a retry once A goes on is filed.
        alive_a = f"llmr:reports:{{{of_a[4:12]}}}:alive"
        unheard = await answered_by(http, a, "Which metal melts in a warm hand?")
        process_a.send_signal(signal.SIGSTOP)
        try:
            async def silent() -> bool:
                return await redis_call(redis_server, "EXISTS", alive_a) == 0

            await wait_for(silent, poll=0.1, timeout=ALIVE_SEC + 5)
            with trio.fail_after(WAIT_SEC / 2):
                answer = await feedback(http, b, unheard, quality=0.4)
        finally:
            process_a.send_signal(signal.SIGCONT)
        assert answer.status_code == 503, answer.text
        assert "not filed" in answer.json()["error"]["message"]
        assert await redis_call(redis_server, "PTTL", alive_a.replace(":alive", ":seen")) > 0

        async def alive() -> bool:
            return await redis_call(redis_server, "EXISTS", alive_a) == 1

        await wait_for(alive, poll=0.1, timeout=20)
        answer = await feedback(http, b, unheard, quality=0.4)
        assert answer.status_code == 200, answer.text
        assert (await routing(http, a))["feedback"]["total"] == 4

        # A stops: what it remembered is gone with it.
        process_a.terminate()
        with trio.fail_after(30):
            await process_a.wait()
        with trio.fail_after(WAIT_SEC / 2):  # at once: A said it was leaving
            answer = await feedback(http, b, of_a)
        assert answer.status_code == 404, answer.text
        # and it left no key behind but an answer no sender read (the stalled one's), which
        # expires. That answer is pushed after the report is filed and calibrated on (which
        # the totals show before then), at most once and only if Redis answers A then: A may
        # have been stopped before, or found Redis slow, and the sender is gone anyway.
        left = await redis_call(redis_server, "KEYS", f"llmr:reports:{{{of_a[4:12]}}}:*")
        assert [key.split(b":")[3] for key in left] in ([b"answer"], [])
        for key in left:
            assert 0 < await redis_call(redis_server, "TTL", key) <= ANSWER_SEC
        assert await redis_call(redis_server, "KEYS", f"llmr:reports:{{{of_b[4:12]}}}:*") != []
