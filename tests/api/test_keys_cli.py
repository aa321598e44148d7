"""``llm-router keys``: create, list, show, update and revoke client keys through a running
router's admin API, as a user types them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import trio
from support_routing import model_entry, open_router_client

from engine.testing.fake_upstream import FakeUpstream

LLM_ROUTER = str(Path(sys.executable).parent / "llm-router")
ADMIN = "admin-key-for-cli-tests-0123"


async def keys(*args: str, server: str, admin: str | None = ADMIN
               ) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ)
    env.pop("LLM_ROUTER_ADMIN_KEY", None)
    if admin is not None:
        env["LLM_ROUTER_ADMIN_KEY"] = admin
    with trio.fail_after(30):
        return await trio.run_process([LLM_ROUTER, "keys", *args, "--server", server],
                                      env=env, check=False, capture_stdout=True,
                                      capture_stderr=True)


async def test_keys_from_the_command_line(fake_upstream: FakeUpstream) -> None:
    models = [model_entry(fake_upstream, "m", tier=1)]
    async with open_router_client(models, server={"admin_key": ADMIN}) as client:
        made = await keys("create", "team-a", "--rpm", "60", "--budget", "25",
                          "--models", "auto,m", server=client.url)
        assert made.returncode == 0, made.stderr
        secret = made.stdout.decode().strip()
        assert secret.startswith("llmr-") and "shown only now" in made.stderr.decode()
        chat = await client.request(
            "POST", "/v1/chat/completions", headers={"authorization": f"Bearer {secret}"},
            json={"model": "m", "messages": [{"role": "user", "content": "Hi"}]})
        assert chat.status_code == 200

        listed = await keys("list", "--json", server=client.url)
        (key,) = json.loads(listed.stdout)["data"]
        assert key["name"] == "team-a" and key["rpm"] == 60 and secret not in listed.stdout.decode()
        table = (await keys("list", server=client.url)).stdout.decode()
        assert key["id"] in table and "$25/month" in table and "active" in table

        updated = await keys("update", key["id"], "--rpm", "5", server=client.url)
        assert updated.returncode == 0 and "rpm          5" in updated.stdout.decode()
        revoked = await keys("revoke", key["id"], server=client.url)
        assert revoked.returncode == 0 and "revoked at" in revoked.stdout.decode()

        unknown = await keys("show", "key_0000000000000000", server=client.url)
        assert unknown.returncode == 2 and b"no client key" in unknown.stderr
        wrong = await keys("list", server=client.url, admin="not-the-admin-key")
        assert wrong.returncode == 2 and b"admin key" in wrong.stderr
        missing = await keys("list", server=client.url, admin=None)
        assert missing.returncode == 2 and b"LLM_ROUTER_ADMIN_KEY" in missing.stderr
