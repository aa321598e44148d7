"""``llm-router --workers N``: N real router processes on one address, supervised by a parent.

Which worker answered a request is made certain, not sampled: every worker but one is paused
with SIGSTOP, so the one left is the only process that can accept the request's new
connection (the parent holds the listening socket but never accepts on it).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import trio
import yaml
from support_redis import RedisServer
from support_routing import wait_for

from engine.testing.fake_upstream import Behaviour, FakeUpstream

LLM_ROUTER = str(Path(sys.executable).parent / "llm-router")


def write_config(tmp_path: Path, fake: FakeUpstream, *, redis_url: str | None,
                 **extra: object) -> Path:
    state: dict[str, object] = {"path": str(tmp_path / "state.db")}
    if redis_url is not None:
        state["redis_url"] = redis_url
    config = {
        "models": [{"name": "m", "provider": "openai", "model": "m", "tier": 1,
                    "base_url": fake.base_url("m", "openai"), "api_key": "k",
                    "cost_per_1k_in": 0.001, "cost_per_1k_out": 0.002}],
        "cache": {"enabled": False},
        "learned": {"model": None, "feedback_db": str(tmp_path / "feedback.db")},
        "state": state,
        "workflows": {"dir": str(tmp_path / "none"), "templates_dir": str(tmp_path / "none")},
        **extra,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper has stopped running)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LLM_ROUTER_")}


@dataclass
class Router:
    process: trio.Process
    url: str = ""
    err: bytearray = field(default_factory=bytearray)

    @property
    def log(self) -> str:
        return self.err.decode(errors="replace")

    def workers(self) -> set[int]:
        """The PIDs of the parent's live children, from /proc."""
        found = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            state, ppid = stat.rpartition(")")[2].split()[:2]
            if int(ppid) == self.process.pid and state != "Z":
                found.add(int(entry.name))
        return found


@asynccontextmanager
async def router_process(config: Path, *args: str) -> AsyncIterator[Router]:
    """``llm-router --config CONFIG --addr 127.0.0.1:0 ARGS`` until it says where it listens;
    its stderr is collected in ``Router.err`` meanwhile; killed at the end if still running."""
    process = await trio.lowlevel.open_process(
        [LLM_ROUTER, "--config", str(config), "--addr", "127.0.0.1:0", *args],
        cwd=config.parent, env=clean_env(), stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    router = Router(process)
    listening = trio.Event()

    async def collect() -> None:
        assert process.stderr is not None
        while chunk := await process.stderr.receive_some():
            router.err += chunk
            if (found := re.search(r"listening on (http://127\.0\.0\.1:\d+)", router.log)):
                router.url = found.group(1)
                listening.set()
        listening.set()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            with trio.fail_after(60):
                await listening.wait()
            assert router.url, router.log
            yield router
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            for pid in router.workers():
                os.kill(pid, signal.SIGKILL)
            process.kill()
            with trio.move_on_after(5, shield=True):
                await process.wait()
        await process.stderr.aclose()


async def chat_on_a_new_connection(url: str, text: str = "hello") -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(f"{url}/v1/chat/completions", json={
            "model": "m", "messages": [{"role": "user", "content": text}]})


async def answered_by_only(router: Router, pid: int, text: str) -> None:
    """A request on a new connection while every other worker is paused: ``pid`` serves it."""
    others = router.workers() - {pid}
    for other in others:
        os.kill(other, signal.SIGSTOP)
    try:
        answer = await chat_on_a_new_connection(router.url, text)
    finally:
        for other in others:
            os.kill(other, signal.SIGCONT)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == f"[m] {text}"


async def test_two_workers_serve_one_address(
    fake_upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path,
) -> None:
    config = write_config(tmp_path, fake_upstream, redis_url=redis_server.url)
    async with router_process(config, "--workers", "2") as router:
        workers = router.workers()
        assert len(workers) == 2
        for pid in workers:
            await answered_by_only(router, pid, f"to {pid}")
        for _ in range(4):  # and with both running
            assert (await chat_on_a_new_connection(router.url)).status_code == 200
        async with httpx.AsyncClient(timeout=10) as http:
            health = (await http.get(f"{router.url}/health")).json()
        assert health["redis"]["status"] == "ok"
        assert router.log.count("listening on") == 1
        assert len(fake_upstream.requests("m")) == 6


async def test_sigterm_stops_every_worker_after_its_requests(
    fake_upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path,
) -> None:
    config = write_config(tmp_path, fake_upstream, redis_url=redis_server.url)
    fake_upstream.set_default("m", Behaviour(latency=1.0))
    async with router_process(config, "--workers", "2") as router:
        workers = router.workers()
        answers: list[httpx.Response] = []

        async def ask(text: str) -> None:
            answers.append(await chat_on_a_new_connection(router.url, text))

        async with trio.open_nursery() as nursery:
            for n in range(4):  # distinct, or in-flight dedup would join them
                nursery.start_soon(ask, f"slow {n}")

            async def all_at_the_upstream() -> bool:
                return len(fake_upstream.requests("m")) == 4

            await wait_for(all_at_the_upstream)
            router.process.send_signal(signal.SIGTERM)
            with trio.fail_after(30):
                assert await router.process.wait() == 0
        assert [a.status_code for a in answers] == [200] * 4
        assert not any(alive(pid) for pid in workers)
        assert "received SIGTERM, stopping 2 workers" in router.log


async def test_a_killed_worker_is_replaced(
    fake_upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path,
) -> None:
    config = write_config(tmp_path, fake_upstream, redis_url=redis_server.url)
    async with router_process(config, "--workers", "2") as router:
        first = router.workers()
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        for _ in range(3):  # the survivor serves meanwhile
            assert (await chat_on_a_new_connection(router.url)).status_code == 200

        async def replaced() -> bool:
            return len(router.workers() - first) == 1 and "started again" in router.log

        await wait_for(replaced, poll=0.1)
        [new] = router.workers() - first
        await answered_by_only(router, new, "from the new one")
        assert f"(pid {victim}) exited (signal SIGKILL); starting another in" in router.log
        assert router.process.returncode is None


async def test_workers_stop_when_their_parent_is_killed(
    fake_upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path,
) -> None:
    config = write_config(tmp_path, fake_upstream, redis_url=redis_server.url)
    async with router_process(config, "--workers", "2") as router:
        workers = router.workers()
        router.process.kill()
        await router.process.wait()

        async def all_gone() -> bool:
            return not any(alive(pid) for pid in workers)

        await wait_for(all_gone, poll=0.1)
        assert "the parent process is gone, shutting down" in router.log


async def test_two_workers_without_redis_are_refused(
    fake_upstream: FakeUpstream, tmp_path: Path,
) -> None:
    config = write_config(tmp_path, fake_upstream, redis_url=None)
    done = await trio.run_process(
        [LLM_ROUTER, "--config", str(config), "--addr", "127.0.0.1:0", "--workers", "2"],
        env=clean_env(), capture_stderr=True, check=False,
    )
    assert done.returncode == 2
    message = done.stderr.decode()
    assert message.count("\n") == 1
    assert "--workers 2 needs state.redis_url" in message
    assert "its own response cache, in-flight dedup, backend health, totals" in message


@pytest.mark.parametrize("count", ["0", "65", "-1", "two"])
async def test_a_worker_count_outside_1_to_64_is_refused(
    fake_upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path, count: str,
) -> None:
    config = write_config(tmp_path, fake_upstream, redis_url=redis_server.url)
    done = await trio.run_process(
        [LLM_ROUTER, "--config", str(config), "--addr", "127.0.0.1:0", f"--workers={count}"],
        env=clean_env(), capture_stderr=True, check=False,
    )
    assert done.returncode == 2
    assert "argument --workers: must be " in done.stderr.decode()


async def test_workers_that_cannot_start_fail_the_command(
    fake_upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path,
) -> None:
    broken = tmp_path / "router-model.json"
    broken.write_text("not a router model")  # the config check sees a file; loading it fails
    config = write_config(tmp_path, fake_upstream, redis_url=redis_server.url,
                          learned={"model": str(broken),
                                   "feedback_db": str(tmp_path / "feedback.db")})
    with trio.fail_after(60):
        done = await trio.run_process(
            [LLM_ROUTER, "--config", str(config), "--addr", "127.0.0.1:0", "--workers", "2"],
            env=clean_env(), capture_stderr=True, check=False,
        )
    assert done.returncode == 1
    message = done.stderr.decode()
    assert "exited before it was ready" in message
    assert "listening on" not in message
