"""The admin API and client keys over HTTP, with the official SDKs as clients: keys created
(the secret shown once), listed, updated, revoked; who may call what."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest
from support_routing import RouterClient, model_entry, open_router_client

from engine.testing.fake_upstream import FakeUpstream

ADMIN = "admin-key-for-tests-0123456789"
AS_ADMIN = {"authorization": f"Bearer {ADMIN}"}


def models(fake: FakeUpstream) -> list[dict[str, Any]]:
    return [model_entry(fake, "small", tier=1, cost_per_1k_in=0.001, cost_per_1k_out=0.002),
            model_entry(fake, "big", tier=2, cost_per_1k_in=0.01, cost_per_1k_out=0.03)]


async def create(client: RouterClient, **settings: Any) -> dict[str, Any]:
    answer = await client.request("POST", "/v1/admin/keys", headers=AS_ADMIN,
                                  json={"name": "team-a", **settings})
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_a_key_is_created_shown_once_listed_updated_and_revoked(
    fake_upstream: FakeUpstream,
) -> None:
    async with open_router_client(models(fake_upstream),
                                  server={"admin_key": ADMIN}) as client:
        made = await create(client, models=["auto", "small"], rpm=60, budget_usd=25.0)
        secret = made.pop("key")
        assert secret.startswith("llmr-") and made["prefix"] == secret[:11]
        assert made["id"].startswith("key_") and made["revoked_at"] is None
        assert made["usage"] == {"period": made["usage"]["period"], "spent_usd": 0.0,
                                 "requests": 0, "tokens": 0, "remaining_usd": 25.0}
        listed = (await client.request("GET", "/v1/admin/keys", headers=AS_ADMIN)).json()
        assert [k["id"] for k in listed["data"]] == [made["id"]]
        assert secret not in str(listed)
        one = await client.request("GET", f"/v1/admin/keys/{made['id']}", headers=AS_ADMIN)
        assert one.json() == made

        async with openai.AsyncOpenAI(base_url=client.router.v1, api_key=secret,
                                      max_retries=0) as sdk:
            answer = await sdk.chat.completions.create(
                model="small", messages=[{"role": "user", "content": "Hi"}])
            assert answer.choices[0].message.content

            patched = await client.request("PATCH", f"/v1/admin/keys/{made['id']}",
                                           headers=AS_ADMIN, json={"rpm": None, "max_tier": 1})
            assert patched.status_code == 200
            assert patched.json()["rpm"] is None and patched.json()["max_tier"] == 1

            revoked = await client.request("DELETE", f"/v1/admin/keys/{made['id']}",
                                           headers=AS_ADMIN)
            assert revoked.json()["revoked_at"] is not None
            with pytest.raises(openai.AuthenticationError) as caught:
                await sdk.chat.completions.create(
                    model="small", messages=[{"role": "user", "content": "Hi"}])
            assert "revoked" in caught.value.message and secret not in caught.value.message
        async with anthropic.AsyncAnthropic(base_url=client.url, api_key=secret,
                                            max_retries=0) as claude:
            with pytest.raises(anthropic.AuthenticationError):
                await claude.messages.create(model="small", max_tokens=10,
                                             messages=[{"role": "user", "content": "Hi"}])


async def test_who_may_open_the_admin_api(fake_upstream: FakeUpstream) -> None:
    async with open_router_client(models(fake_upstream),
                                  server={"admin_key": ADMIN}) as client:
        secret = (await create(client))["key"]
        for headers in ({}, {"authorization": f"Bearer {secret}"},
                        {"authorization": "Bearer not-the-admin-key-at-all"}):
            answer = await client.request("GET", "/v1/admin/keys", headers=headers)
            assert answer.status_code == 401, headers
            assert answer.json()["error"]["code"] == "unauthorized"
        # A router that issues keys admits nobody without one.
        assert (await client.chat()).status_code == 401
        unknown = "llmr-" + "A" * 43
        answer = await client.request(
            "POST", "/v1/chat/completions", headers={"authorization": f"Bearer {unknown}"},
            json={"model": "auto", "messages": [{"role": "user", "content": "Hi"}]})
        assert answer.status_code == 401
    async with open_router_client(models(fake_upstream)) as client:
        off = await client.request("GET", "/v1/admin/keys", headers=AS_ADMIN)
        assert off.status_code == 404 and "server.admin_key" in off.json()["error"]["message"]


@pytest.mark.parametrize(("body", "param"), [
    ({"name": "x", "rpm": 0}, "rpm"),
    ({"name": "x", "budget_period": "year"}, "budget_period"),
    ({"name": "x", "max_teir": 2}, "max_teir"),
    ({}, "name"),
])
async def test_bad_settings_are_a_400_naming_the_field(
    fake_upstream: FakeUpstream, body: dict[str, Any], param: str,
) -> None:
    async with open_router_client(models(fake_upstream),
                                  server={"admin_key": ADMIN}) as client:
        answer = await client.request("POST", "/v1/admin/keys", headers=AS_ADMIN, json=body)
        assert answer.status_code == 400
        assert answer.json()["error"]["param"] == param
        made = await create(client)
        patch = await client.request("PATCH", f"/v1/admin/keys/{made['id']}",
                                     headers=AS_ADMIN, json={"max_teir": 2})
        assert patch.status_code == 400 and "max_tier" in patch.json()["error"]["message"]
        gone = await client.request("PATCH", "/v1/admin/keys/key_0000000000000000",
                                    headers=AS_ADMIN, json={"rpm": 5})
        assert gone.status_code == 404
