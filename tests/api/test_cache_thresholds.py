"""Per-tenant cache thresholds over real sockets: a cache hit rated bad (``POST /v1/feedback``
naming its request id) tightens that tenant's similarity threshold by one step, up to the
ceiling; other tenants keep the configured one; ``GET /v1/routing`` shows a client its own and
the admin every tenant's; the admin resets them.

Layout: one tier-1 model; ``server.api_keys`` ``alice`` and ``bob`` (two tenants) and an admin
key; ``cache.tenant_threshold`` with ``step`` 0.1 and ``ceiling`` 1.0, so two bad reports
leave only exact repeats for that tenant (a hit's similarity is at most 0.9999).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from support_routing import RouterClient, model_entry, open_router_client

from engine.testing.fake_upstream import FakeUpstream

QUESTION = "What is the capital of France?"
PARAPHRASE = "What's France's capital?"
ADMIN = "admin-key-0123456789abcdef"


@pytest.fixture
async def client(fake_upstream: FakeUpstream) -> AsyncIterator[RouterClient]:
    async with open_router_client(
            [model_entry(fake_upstream, "m", tier=1)],
            cache={"enabled": True, "tenant_threshold": {"step": 0.1, "ceiling": 1.0}},
            server={"api_keys": ["alice", "bob"], "admin_key": ADMIN}) as running:
        yield running


async def ask(client: RouterClient, key: str, text: str) -> tuple[str, str]:
    """Ask as ``key`` with the OpenAI SDK: the cache header and the request id."""
    async with openai.AsyncOpenAI(base_url=client.router.v1, api_key=key,
                                  max_retries=0) as sdk:
        raw = await sdk.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": text}])
    return raw.headers["x-llm-router-cache"], raw.headers["x-request-id"]


async def rate(client: RouterClient, key: str, request_id: str, quality: float) -> Any:
    response = await client.request("POST", "/v1/feedback", json={
        "request_id": request_id, "quality": quality}, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return response.json()


async def cache_state(client: RouterClient, key: str) -> Any:
    response = await client.request("GET", "/v1/routing",
                                    headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return response.json()["cache"]


async def test_bad_feedback_on_a_hit_tightens_that_tenant_only(client: RouterClient) -> None:
    for key in ("alice", "bob"):
        assert (await ask(client, key, QUESTION))[0] == "MISS"
    header, hit = await ask(client, "alice", PARAPHRASE)
    assert header == "HIT"

    answer = await rate(client, "alice", hit, 0.0)
    assert answer["cache_threshold"]["old"] == 0.85
    assert answer["cache_threshold"]["new"] == pytest.approx(0.95)
    assert "thresholds" not in answer  # a cached answer says nothing about the route

    mine = await cache_state(client, "alice")
    assert mine["yours"]["threshold"] == pytest.approx(0.95)
    assert mine["similarity_thresh"] == 0.85 and mine["tightened_tenants"] == 1
    assert "tenants" not in mine  # a client sees its own threshold only
    assert (await cache_state(client, "bob"))["yours"]["threshold"] == 0.85

    header, hit = await ask(client, "alice", PARAPHRASE)
    assert header == "HIT"  # 0.996: still above 0.95
    await rate(client, "alice", hit, 0.1)
    assert (await ask(client, "alice", PARAPHRASE))[0] == "MISS"  # 1.0: exact repeats only
    assert (await ask(client, "alice", QUESTION))[0] == "HIT"
    assert (await ask(client, "bob", PARAPHRASE))[0] == "HIT"


async def test_good_feedback_and_the_ceiling_hold_it(client: RouterClient) -> None:
    await ask(client, "alice", QUESTION)
    _, hit = await ask(client, "alice", PARAPHRASE)
    assert (await rate(client, "alice", hit, 0.9))["cache_threshold"]["new"] == 0.85
    news = [await rate(client, "alice", hit, 0.0) for _ in range(4)]
    assert [n["cache_threshold"]["new"] for n in news] == pytest.approx([0.95, 1.0, 1.0, 1.0])


async def test_admin_sees_every_tenant_and_resets(client: RouterClient) -> None:
    for key in ("alice", "bob"):
        await ask(client, key, QUESTION)
        _, hit = await ask(client, key, PARAPHRASE)
        await rate(client, key, hit, 0.0)
    everyone = await cache_state(client, ADMIN)
    assert sorted(everyone["tenants"].values()) == pytest.approx([0.95, 0.95])
    alice = (await cache_state(client, "alice"))["yours"]["tenant"]
    assert alice in everyone["tenants"]

    response = await client.request("DELETE", "/v1/admin/cache/thresholds",
                                    params={"tenant": alice},
                                    headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 200 and response.json() == {"reset": 1}
    assert (await cache_state(client, "alice"))["yours"]["threshold"] == 0.85
    assert (await cache_state(client, "bob"))["yours"]["threshold"] == pytest.approx(0.95)
    response = await client.request("DELETE", "/v1/admin/cache/thresholds",
                                    headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.json() == {"reset": 1}
    assert (await cache_state(client, ADMIN))["tenants"] == {}


async def test_reset_needs_the_admin_key_and_a_tenant_name(client: RouterClient) -> None:
    response = await client.request("DELETE", "/v1/admin/cache/thresholds",
                                    headers={"Authorization": "Bearer alice"})
    assert response.status_code == 401
    assert response.json()["error"]["type"]  # the OpenAI error object
    response = await client.request("DELETE", "/v1/admin/cache/thresholds",
                                    params={"tenant": ""},
                                    headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "tenant"


async def test_routing_needs_a_credential(client: RouterClient) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(client.url + "/v1/routing")
    assert response.status_code == 401
