"""The README's "Try it with no account": ``llm-router fake-upstream`` and ``config.demo.yaml``,
run as the real commands (subprocesses, real sockets), the steps the README shows included.

The fake listens on a free port here (``--port 0``), so ``config.demo.yaml`` is rewritten to
it; everything else about the file is used as shipped.
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
from typing import Any

import anthropic
import httpx
import openai
import pytest
import trio
import yaml

from api.cli.fake import DEMO_BACKENDS

ROOT = Path(__file__).resolve().parents[2]
LLM_ROUTER = str(Path(sys.executable).parent / "llm-router")
DEMO_PORT_URL = "http://127.0.0.1:9100"
# The README's two routed questions: one tier 1 answers, one that needs tier 2.
EASY = "What is the capital of France?"
HARD = ("Write a python function to return the last element of a list, fixing the bug in def "
        "last(xs): return xs[len(xs)]. Prove the fix correct step by step and compare the "
        "trade-offs of two fixes.")

# As in test_fake_upstream.py: the openai SDK leaves its async generators to the collector.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:Async generator '(openai|httpx2|httpcore2)\.:ResourceWarning"
)


@dataclass
class Served:
    """A command serving in the background: the URL it printed, everything it wrote to the
    watched stream, and its exit status once stopped."""

    process: trio.Process
    url: str = ""
    output: bytearray = field(default_factory=bytearray)
    returncode: int | None = None


@asynccontextmanager
async def serving(*args: str, cwd: Path, listening: bytes, stream: str) -> AsyncIterator[Served]:
    """Run ``llm-router *args`` until the block ends, then SIGTERM it and wait for it.

    ``listening`` (a regex with the URL as its group) is looked for in ``stream``
    (``stdout`` or ``stderr``), which is read to its end meanwhile so the pipe never fills.
    """
    pipes = {stream: subprocess.PIPE}
    process = await trio.lowlevel.open_process([LLM_ROUTER, *args], cwd=cwd,
                                               env=dict(os.environ), **pipes)
    served = Served(process)
    pipe = process.stdout if stream == "stdout" else process.stderr
    assert pipe is not None
    ready = trio.Event()

    async def read() -> None:
        async with pipe:
            while chunk := await pipe.receive_some():
                served.output.extend(chunk)
                found = re.search(listening, served.output)
                if found and not ready.is_set():
                    served.url = found.group(1).decode()
                    ready.set()
        ready.set()  # ended without listening: the test fails on the empty URL

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            with trio.fail_after(60):
                await ready.wait()
            assert served.url, served.output.decode()
            try:
                yield served
            finally:
                process.send_signal(signal.SIGTERM)
                with trio.move_on_after(20, shield=True):
                    served.returncode = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.move_on_after(5, shield=True):
                await process.wait()


def serve_fake(cwd: Path, *extra: str) -> Any:
    return serving("fake-upstream", "--port", "0", *extra, cwd=cwd, stream="stdout",
                   listening=rb"listening on (http://127\.0\.0\.1:\d+)")


async def ask(http: httpx.AsyncClient, text: str) -> httpx.Response:
    """What the README's ``ask`` does: one routed chat completion."""
    response = await http.post("/v1/chat/completions",
                               json={"messages": [{"role": "user", "content": text}]})
    assert response.status_code == 200, response.text
    return response


def answer(response: httpx.Response) -> str:
    content: str = response.json()["choices"][0]["message"]["content"]
    return content


def route(response: httpx.Response) -> tuple[str, str, str]:
    return tuple(response.headers[f"x-llm-router-{h}"]  # type: ignore[return-value]
                 for h in ("tier", "model", "cache"))


def test_fake_module_examples() -> None:
    import doctest

    import api.cli.fake

    assert doctest.testmod(api.cli.fake).failed == 0


async def test_check_accepts_the_demo_config() -> None:
    with trio.fail_after(30):
        done = await trio.run_process([LLM_ROUTER, "check", "config.demo.yaml"], cwd=ROOT,
                                      capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode() == "config.demo.yaml: ok (3 models, tiers [1, 2, 3])\n"
    demo = yaml.safe_load((ROOT / "config.demo.yaml").read_text())
    served = [(m["name"], m["provider"], m["base_url"]) for m in demo["models"]]
    assert served == [(name, provider, f"{DEMO_PORT_URL}/{name}" + ("/v1" * (provider == "openai")))
                      for name, provider in DEMO_BACKENDS]
    assert [m["tier"] for m in demo["models"]] == [1, 2, 3]
    prices = [m["cost_per_1k_in"] + m["cost_per_1k_out"] for m in demo["models"]]
    assert prices == sorted(prices) and prices[0] > 0  # savings show against the top tier


async def test_fake_upstream_serves_both_sdks_fails_on_demand_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    async with serve_fake(tmp_path, "--latency", "0") as fake:
        banner = fake.output.decode()
        for name, provider in DEMO_BACKENDS:
            suffix = "/v1" if provider == "openai" else ""
            assert f"  {name:<7} {provider:<10} {fake.url}/{name}{suffix}\n" in banner
        assert f"curl -X POST {fake.url}/_fake/fail/NAME" in banner
        async with (
            openai.AsyncOpenAI(base_url=f"{fake.url}/small/v1", api_key="none",
                               max_retries=0) as oai,
            anthropic.AsyncAnthropic(base_url=f"{fake.url}/medium", api_key="none",
                                     max_retries=0) as claude,
            httpx.AsyncClient() as http,
        ):
            chat = await oai.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello there"}])
            message = await claude.messages.create(
                model="claude-sonnet-4-5", max_tokens=64,
                messages=[{"role": "user", "content": "Hello there"}])
            failing = await http.post(f"{fake.url}/_fake/fail/small")
            with pytest.raises(openai.InternalServerError) as refused:
                await oai.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "Again"}])
            other = await claude.messages.create(  # only the named backend fails
                model="claude-sonnet-4-5", max_tokens=64,
                messages=[{"role": "user", "content": "Still fine?"}])
            recovered = await http.post(f"{fake.url}/_fake/recover/small")
            again = await oai.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Again"}])

    assert chat.choices[0].message.content == "[small] Hello there"
    assert message.content[0].type == "text" and message.content[0].text == "[medium] Hello there"
    assert failing.json() == {"backend": "small", "failing": True}
    assert refused.value.status_code == 503
    assert "failing on purpose" in str(refused.value)
    assert other.content[0].text == "[medium] Still fine?"  # type: ignore[union-attr]
    assert recovered.json() == {"backend": "small", "failing": False}
    assert again.choices[0].message.content == "[small] Again"
    assert fake.returncode == 0, fake.output.decode()


async def test_the_fake_upstream_refuses_a_port_in_use(tmp_path: Path) -> None:
    async with serve_fake(tmp_path) as fake:
        port = fake.url.rsplit(":", 1)[1]
        with trio.fail_after(30):
            done = await trio.run_process([LLM_ROUTER, "fake-upstream", "--port", port],
                                          cwd=tmp_path, capture_stdout=True,
                                          capture_stderr=True, check=False)
    assert done.returncode == 1
    err = done.stderr.decode()
    assert f"fake-upstream cannot listen on 127.0.0.1:{port}: " in err
    assert "Traceback" not in err


async def test_the_quick_start_demo_end_to_end(tmp_path: Path) -> None:
    async with serve_fake(tmp_path, "--latency", "0.3") as fake:
        demo = yaml.safe_load((ROOT / "config.demo.yaml").read_text())
        for model in demo["models"]:
            assert model["base_url"].startswith(DEMO_PORT_URL)
            model["base_url"] = model["base_url"].replace(DEMO_PORT_URL, fake.url)
        demo["learned"]["feedback_db"] = str(tmp_path / "feedback.db")
        demo["workflows"] = {"dir": str(ROOT / "workflows"),
                             "templates_dir": str(ROOT / "templates")}
        (tmp_path / "demo.yaml").write_text(yaml.safe_dump(demo))
        async with (
            serving("--config", "demo.yaml", "--addr", "127.0.0.1:0", cwd=tmp_path,
                    stream="stderr", listening=rb"listening on (http://127\.0\.0\.1:\d+)"
                    ) as router,
            httpx.AsyncClient(base_url=router.url, timeout=30) as http,
        ):
            # Routing: an easy question on tier 1, a harder one on tier 2.
            easy = await ask(http, EASY)
            hard = await ask(http, HARD)
            # The cache: the same question again costs nothing.
            cached = await ask(http, EASY)
            # Dedup: two identical questions at once make one upstream call.
            together: list[httpx.Response] = []
            async with trio.open_nursery() as nursery:
                for _ in range(2):
                    nursery.start_soon(lambda: _append(together, ask(http, "Name three primes.")))
            # Failover: tier 1's backend fails; tier 2 answers.
            assert (await http.post(f"{fake.url}/_fake/fail/small")).status_code == 200
            failed_over = await ask(http, "What is 2 + 2?")
            backends = {b["name"]: b for b in (await http.get("/v1/backends")).json()}
            assert (await http.post(f"{fake.url}/_fake/recover/small")).status_code == 200
            # Either SDK's protocol, the same router.
            message = await http.post("/v1/messages", json={
                "model": "auto", "max_tokens": 64,
                "messages": [{"role": "user", "content": "Hi from Anthropic's SDK"}]})
            # A workflow, with live progress.
            with trio.fail_after(60):
                run = await trio.run_process(
                    [LLM_ROUTER, "workflow", "run", "debate", "--input", "Tabs or spaces?",
                     "--server", router.url], cwd=tmp_path, capture_stdout=True,
                    capture_stderr=True, check=False)
            stats = (await http.get("/stats")).json()

    assert route(easy) == ("1", "small", "MISS")
    assert answer(easy) == f"[small] {EASY}"
    assert route(hard)[:2] == ("2", "medium")
    assert route(cached) == ("1", "small", "HIT") and answer(cached) == answer(easy)
    assert sorted(r.headers["x-llm-router-dedup"] for r in together) == ["FOLLOWER", "LEADER"]
    assert {answer(r) for r in together} == {"[small] Name three primes."}
    assert failed_over.headers["x-llm-router-model"] == "medium"
    assert answer(failed_over) == "[medium] What is 2 + 2?"
    assert backends["small"]["status"] != "healthy" and backends["medium"]["status"] == "healthy"
    assert message.status_code == 200 and message.json()["content"][0]["text"].endswith(
        "] Hi from Anthropic's SDK")
    assert run.returncode == 0, run.stderr.decode()
    assert run.stdout.decode().startswith("[large] ")  # the judge, on tier 3
    progress = run.stderr.decode()
    assert re.search(r"done +judge +large \(tier 3\)", progress), progress
    assert "completed: 3 of 3 ops" in progress
    assert stats["failovers"] >= 1
    assert stats["cache"]["hits"] == 1 and stats["dedup"]["joined"] == 1
    assert stats["total_saved_usd"] > 0
    assert fake.returncode == 0 and router.returncode == 0, router.output.decode()
    assert "Traceback" not in router.output.decode()


async def _append(into: list[httpx.Response], call: Any) -> None:
    into.append(await call)
