"""Start-up problems outside the config's syntax: a clear message, or a router that degrades."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
from router_harness import make_config, open_router

from engine.testing.fake_upstream import FakeUpstream


def test_a_missing_trained_router_file_is_a_config_problem(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "models:\n  - {name: m, provider: openai, model: x, tier: 1}\n"
        "learned: {model: missing-router.json}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "check", str(config)],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert "learned.model: no such file" in done.stderr
    assert "Traceback" not in done.stderr


async def test_an_unusable_feedback_database_disables_feedback_only(
    fake_upstream: FakeUpstream,
) -> None:
    config = make_config({
        "models": [{"name": "m", "provider": "openai", "model": "x", "tier": 1,
                    "base_url": fake_upstream.base_url("b1", "openai")}],
        "cache": {"enabled": False},
        "learned": {"feedback_db": "/proc/no-such-dir/feedback.db"},
    })
    async with open_router(config) as router, httpx.AsyncClient() as client:
        answer = await client.post(router.v1 + "/chat/completions",
                                   json={"messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 200
        feedback = await client.post(router.v1 + "/feedback",
                                     json={"score": 0.2, "tier": 1, "quality": 0.9})
        assert feedback.status_code == 400
        assert "not enabled" in feedback.json()["error"]["message"]


def test_a_corrupt_trained_router_fails_start_up_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "router.json").write_text('{"not": "a router"}')
    config = tmp_path / "config.yaml"
    config.write_text(
        "models:\n  - {name: m, provider: openai, model: x, tier: 1}\n"
        "cache: {enabled: false}\n"
        "learned: {model: router.json, feedback_db: feedback.db}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "--config", str(config), "--addr", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1
    assert "start-up failed" in done.stderr
    assert "Traceback" not in done.stderr
