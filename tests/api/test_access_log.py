"""The access log: one line per request with what the router decided (``api.http.access``),
text by default and JSON with ``--log-format json``; the client key by its id, never the key;
the prompt only with ``--log-prompts``."""

from __future__ import annotations

import logging
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
import trio
import yaml
from support_processes import LLM_ROUTER
from support_routing import RouterClient, model_entry, open_router_client

from engine.testing.fake_upstream import Behaviour, FakeUpstream, Usage

ADMIN = "admin-key-for-access-log-tests"


def access_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "llm_router.access"
            and r.levelno == logging.INFO]


async def new_key(client: RouterClient) -> tuple[str, str]:
    made = await client.request("POST", "/v1/admin/keys", json={"name": "t"},
                                headers={"authorization": f"Bearer {ADMIN}"})
    return made.json()["id"], made.json()["key"]


async def test_one_line_per_request_with_the_routing_decision(
    fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="llm_router.access")
    fake_upstream.set_default("m", Behaviour(usage=Usage(input_tokens=7, output_tokens=3)))
    models = [model_entry(fake_upstream, "m", tier=1, cost_per_1k_in=1.0, cost_per_1k_out=1.0)]
    async with open_router_client(models, server={"admin_key": ADMIN},
                                  cache={"enabled": True}) as client:
        key_id, secret = await new_key(client)
        caplog.clear()
        async with openai.AsyncOpenAI(base_url=client.router.v1, api_key=secret) as oai:
            body = {"model": "auto", "temperature": 0,
                    "messages": [{"role": "user", "content": "a secret plan"}]}
            await oai.chat.completions.create(**body)  # type: ignore[call-overload]
            await oai.chat.completions.create(**body)  # type: ignore[call-overload]
        streamed = await client.http.post(
            client.router.v1 + "/chat/completions", headers={"authorization": f"Bearer {secret}"},
            json={"model": "m", "stream": True,
                  "messages": [{"role": "user", "content": "stream it"}]})
        assert streamed.status_code == 200
        await client.request("GET", "/health")
    lines = access_lines(caplog)
    assert [r.fields["path"] for r in lines] == [  # type: ignore[attr-defined]
        "/v1/chat/completions", "/v1/chat/completions", "/v1/chat/completions", "/health"]
    miss, hit, stream, health = (r.fields for r in lines)  # type: ignore[attr-defined]
    assert miss | {"request_id": None, "ms": None, "ttfb_ms": None} == {
        "method": "POST", "path": "/v1/chat/completions", "status": 200, "request_id": None,
        "ms": None, "key": key_id, "protocol": "openai", "model": "auto", "served": "m",
        "tier": 1, "router": "heuristic", "score": miss["score"], "cache": "MISS",
        "dedup": "LEADER", "attempts": 1, "ttfb_ms": None, "tokens_in": 7, "tokens_out": 3,
        "cost_usd": 0.01, "error": None, "prompt": None}
    assert hit["cache"] == "HIT" and hit["attempts"] == 0 and hit["cost_usd"] == 0.0
    assert stream["model"] == "m" and stream["tokens_out"] == 3 and stream["cost_usd"] == 0.01
    assert 0 < stream["ttfb_ms"] <= stream["ms"]
    assert health == {"method": "GET", "path": "/health", "status": 200,
                      "request_id": health["request_id"], "ms": health["ms"]}
    text = lines[0].getMessage()
    assert text.startswith("POST /v1/chat/completions 200 request_id=")
    assert f"key={key_id} protocol=openai model=auto served=m tier=1" in text
    for record in caplog.records:
        message = record.getMessage() + repr(getattr(record, "fields", ""))
        assert secret not in message and ADMIN not in message
        assert "secret plan" not in message  # no prompt without --log-prompts


async def test_prompts_only_when_asked(fake_upstream: FakeUpstream,
                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="llm_router.access")
    key = "sk-prov-configured-0123456789abcdef"
    models = [model_entry(fake_upstream, "m", tier=1, api_key=key)]
    async with open_router_client(models, server={"log_prompts": True}) as client:
        await client.chat("look: " + key + " " + "x" * 600)
    (line,) = [r.fields for r in access_lines(caplog)]  # type: ignore[attr-defined]
    assert line["prompt"].startswith("look: [redacted] xxx") and line["prompt"].endswith("...")
    assert len(line["prompt"]) < 520


async def test_access_logging_can_be_off(fake_upstream: FakeUpstream,
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="llm_router.access")
    async with open_router_client([model_entry(fake_upstream, "m", tier=1)],
                                  server={"access_log": False}) as client:
        await client.chat()
    assert access_lines(caplog) == []


async def test_json_lines_from_a_real_process(fake_upstream: FakeUpstream, tmp_path: Path
                                              ) -> None:
    """``llm-router --log-format json --log-prompts``: every stderr line is a JSON object;
    a chat request is one access line (no second line from the HTTP server)."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "models": [model_entry(fake_upstream, "m", tier=1)], "cache": {"enabled": False},
        "learned": {"model": None, "feedback_db": str(tmp_path / "f.db")},
        "state": {"path": str(tmp_path / "state.db")},
    }))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_ROUTER_")}
    process = await trio.lowlevel.open_process(
        [LLM_ROUTER, "--log-format", "json", "--log-prompts", "--config", str(config),
         "--addr", "127.0.0.1:0"], env=env, stderr=subprocess.PIPE)
    assert process.stderr is not None
    err = b""

    async def read_until(pattern: bytes) -> re.Match[bytes]:
        nonlocal err
        with trio.fail_after(30):
            while (found := re.search(pattern, err)) is None:
                chunk = await process.stderr.receive_some()  # type: ignore[union-attr]
                assert chunk, err.decode()
                err += chunk
        return found

    try:
        url = (await read_until(rb"listening on (http://127\.0\.0\.1:\d+)")).group(1).decode()
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.post(url + "/v1/chat/completions", json={
                "model": "auto", "messages": [{"role": "user", "content": "log me"}]})
        assert answer.status_code == 200
        await read_until(rb'"path":"/v1/chat/completions".*\n')
    finally:
        process.kill()
        with trio.move_on_after(5, shield=True):
            await process.wait()
        await process.stderr.aclose()
    records: list[dict[str, Any]] = [orjson.loads(line) for line in err.splitlines()]
    access = [r for r in records if r["logger"] == "llm_router.access"]
    assert len(access) == 1, records
    assert access[0]["status"] == 200 and access[0]["prompt"] == "log me"
    assert access[0]["served"] == "m" and access[0]["level"] == "INFO"
    assert access[0]["request_id"] == answer.headers["x-request-id"]
