"""The dashboard over HTTP: the page and its assets (no key, no other host), and the JSON it
reads besides /stats: recent requests with the window's rate and latency, and every tenant's
runs with their DAG's edges, behind the admin key when one is set."""

from __future__ import annotations

import httpx
import openai
import pytest
import trio
from router_harness import make_config, open_router
from support_protocols import SDK_STREAM_LEAKS
from support_routing import model_entry
from support_workflows import ROOT, three_tiers
from workflow_cases import TIERED_CHAIN

from engine.testing.fake_upstream import Behaviour, FakeUpstream

ADMIN = "admin-key-for-the-dashboard-tests"
CLIENT = "client-key-for-the-dashboard-tests"


def _config(fake: FakeUpstream, **server: object):
    return make_config({
        "models": three_tiers(fake, cost_per_1k_in=0.001, cost_per_1k_out=0.002),
        "cache": {"enabled": True, "deterministic_only": False},
        "server": server,
        "workflows": {"dir": str(ROOT / "workflows"), "templates_dir": str(ROOT / "templates")},
    })


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_the_page_and_its_assets_load_without_a_key_and_from_this_host_only(
        fake_upstream: FakeUpstream) -> None:
    fake = fake_upstream
    async with open_router(_config(fake, admin_key=ADMIN)) as router, httpx.AsyncClient() as http:
        page = await http.get(router.url + "/ui")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "http" not in page.text.replace("http-equiv", "")  # nothing from another host
        for asset, kind in [("dashboard.js", "text/javascript"), ("dashboard.css", "text/css"),
                            ("favicon.svg", "image/svg+xml")]:
            found = await http.get(f"{router.url}/ui/{asset}")
            assert found.status_code == 200 and found.headers["content-type"].startswith(kind)
        missing = await http.get(router.url + "/ui/nothing.js")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"
        assert '<body data-needs-key="true">' in page.text
    async with open_router(_config(fake)) as router, httpx.AsyncClient() as http:
        page = await http.get(router.url + "/ui/")
        assert '<body data-needs-key="false">' in page.text  # it will not ask for a key


@SDK_STREAM_LEAKS
async def test_recent_requests_carry_routing_facts_and_the_windows_figures(
        fake_upstream: FakeUpstream) -> None:
    fake = fake_upstream
    async with open_router(_config(fake, api_keys=[CLIENT])) as router, httpx.AsyncClient() as http:
        async with openai.AsyncOpenAI(base_url=router.v1, api_key=CLIENT, max_retries=0) as sdk:
            for _ in range(2):  # the second is a cache hit
                await sdk.chat.completions.create(
                    model="auto", messages=[{"role": "user", "content": "secret prompt words"}])
            with pytest.raises(openai.NotFoundError):
                await sdk.chat.completions.create(
                    model="nope", messages=[{"role": "user", "content": "x"}])
            stream = await sdk.chat.completions.create(
                model="auto", stream=True,
                messages=[{"role": "user", "content": "another secret prompt"}])
            async for _ in stream:
                pass
        recent = await http.get(router.url + "/stats/recent", headers=_bearer(CLIENT))
    assert recent.status_code == 200
    body = recent.json()
    newest_first = body["requests"]
    assert [r["status"] for r in newest_first] == ["ok", "model_not_found", "ok", "ok"]
    assert [r["stream"] for r in newest_first] == [True, False, False, False]
    assert [r["cache"] for r in newest_first] == ["MISS", None, "HIT", "MISS"]
    assert newest_first[3]["model"] == "t1" and newest_first[3]["cost_usd"] > 0
    assert newest_first[2]["cost_usd"] == 0  # a cache hit costs nothing
    assert newest_first[0]["output_tokens"] > 0
    assert "secret" not in recent.text  # no prompt text, ever
    window = body["window"]
    assert window["requests"] == 4 and window["errors"] == 1 and window["per_sec"] > 0
    assert window["latency_ms"]["p50"] is not None
    assert len(body["series"]) == window["seconds"]
    assert sum(s["requests"] for s in body["series"]) == 4
    assert body["scope"] == "process" and body["processes"] == 1  # no Redis: this one


async def test_the_data_endpoints_need_a_key(fake_upstream: FakeUpstream) -> None:
    fake = fake_upstream
    async with open_router(_config(fake, admin_key=ADMIN, api_keys=[CLIENT])) as router, \
            httpx.AsyncClient() as http:
        for path in ("/stats/recent", "/stats/runs", "/stats/runs/run_x"):
            refused = await http.get(router.url + path)
            assert refused.status_code == 401, path
            assert refused.json()["error"]["type"] == "authentication_error"
        # Every tenant's runs are for the admin key alone; /stats/recent is /stats's guard.
        assert (await http.get(router.url + "/stats/runs", headers=_bearer(CLIENT))
                ).status_code == 401
        assert (await http.get(router.url + "/stats/recent", headers=_bearer(CLIENT))
                ).status_code == 200
        listed = await http.get(router.url + "/stats/runs", headers=_bearer(ADMIN))
        assert listed.status_code == 200 and listed.json() == {"object": "list", "data": []}
        for limit in ("0", "%C2%B9"):  # a superscript one is a digit, but not a number
            bad = await http.get(router.url + f"/stats/runs?limit={limit}",
                                 headers=_bearer(ADMIN))
            assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"
        bad = await http.get(router.url + "/stats/runs?status=runing", headers=_bearer(ADMIN))
        assert bad.status_code == 400 and "running" in bad.json()["error"]["message"]
        missing = await http.get(router.url + "/stats/runs/run_x", headers=_bearer(ADMIN))
        assert missing.status_code == 404


async def test_runs_show_every_tenants_dag_with_op_states_and_no_answers(
        fake_upstream: FakeUpstream) -> None:
    fake = fake_upstream
    async with open_router(_config(fake, admin_key=ADMIN, api_keys=[CLIENT])) as router, \
            httpx.AsyncClient(timeout=20) as http:
        done = await http.post(router.v1 + "/workflows", headers=_bearer(CLIENT),
                               json={"workflow": TIERED_CHAIN, "input": "private input"})
        assert done.status_code == 200
        run_id = done.headers["x-llm-router-run-id"]
        listed = (await http.get(router.url + "/stats/runs", headers=_bearer(ADMIN))).json()
        assert [r["run_id"] for r in listed["data"]] == [run_id]
        assert listed["data"][0]["ops"] == {"draft": "succeeded", "review": "succeeded",
                                            "polish": "succeeded"}
        shown = await http.get(f"{router.url}/stats/runs/{run_id}", headers=_bearer(ADMIN))
        run = shown.json()
        assert run["edges"] == [["draft", "review"], ["review", "polish"]]
        assert run["ops"]["review"]["model"] == "t2" and run["ops"]["review"]["cost_usd"] > 0
        assert "private" not in shown.text and "output" not in run["ops"]["draft"]
        # The tenant's own view carries the edges too.
        own = await http.get(f"{router.v1}/workflows/runs/{run_id}", headers=_bearer(CLIENT))
        assert own.json()["edges"] == run["edges"]


async def test_a_running_ops_state_shows_before_it_ends(fake_upstream: FakeUpstream) -> None:
    fake = fake_upstream
    models = [model_entry(fake, "t1", tier=1), model_entry(fake, "t2", tier=2)]
    fake.set_default("t2", Behaviour(hang=True))
    config = make_config({"models": models, "cache": {"enabled": False},
                          "server": {"admin_key": ADMIN, "api_keys": [CLIENT]}})
    async with open_router(config) as router, httpx.AsyncClient(timeout=20) as http:
        started = await http.post(router.v1 + "/workflows", headers=_bearer(CLIENT) | {
            "prefer": "respond-async"}, json={"workflow": TIERED_CHAIN, "input": "x"})
        run_id = started.json()["run_id"]
        while (run := (await http.get(f"{router.url}/stats/runs/{run_id}",
                                      headers=_bearer(ADMIN))).json()
               )["ops"]["review"]["status"] != "running":
            await trio.sleep(0.02)
        assert run["status"] == "running"
        assert run["ops"]["draft"]["status"] == "succeeded"
        assert run["ops"]["polish"]["status"] == "pending"
        cancelled = await http.post(f"{router.v1}/workflows/runs/{run_id}/cancel",
                                    headers=_bearer(CLIENT))
        assert cancelled.json()["status"] == "cancelled"
