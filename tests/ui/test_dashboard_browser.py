"""The dashboard in a real browser (headless chromium, tests/support/support_browser.py): it
loads with no console errors, asks for the key once, its figures follow traffic through the
event stream (``GET /stats/events``), a running workflow's DAG shows its ops' states change,
the page polls when the stream is unavailable, and a closed page leaves no stream open.

The waits end as soon as the page shows what is expected; none asserts how long anything
took.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from router_harness import make_config, open_router
from support_browser import CSS, ID, connect, need_browser, open_browser, screenshots_dir
from support_routing import model_entry, wait_for
from support_workflows import three_tiers
from workflow_cases import TIERED_CHAIN

from engine.testing.fake_upstream import Behaviour, FakeUpstream

ADMIN = "admin-key-for-the-browser-tests"
CLIENT = "client-key-for-the-browser-tests"


async def _as_async(value: bool) -> bool:
    return value


@pytest.fixture(autouse=True)
def _browser_installed() -> None:
    """Checked before the trio fixtures start, so a skip keeps its message."""
    need_browser()


def _count(selector: str) -> Callable[[Any], int]:
    """A wait condition: how many elements match ``selector``."""
    return lambda d: len(d.find_elements(CSS, selector))


# What the page fetched and finished, by path (polling; the open stream is not over).
_FETCHED = ("return performance.getEntriesByType('resource')"
            ".map(e => new URL(e.name).pathname)")
_LIVE = '#updated[data-mode="stream"]'


def _streams(router: Any) -> int:
    return router.app.extensions["dashboard_feed"].streams


def _op(name: str, status: str) -> str:
    return f'#dag g.op[data-op="{name}"][data-status="{status}"]'


async def test_the_dashboard_loads_clean_and_its_figures_follow_traffic(
        fake_upstream: FakeUpstream) -> None:
    config = make_config({
        "models": three_tiers(fake_upstream, cost_per_1k_in=0.5, cost_per_1k_out=1.5),
        "cache": {"enabled": True, "deterministic_only": False},
        "server": {"admin_key": ADMIN, "api_keys": [CLIENT]},
    })
    async with open_router(config) as router, open_browser() as browser:
        await connect(browser, router.url, ADMIN)
        await browser.wait_for(lambda d: _count("#backends tbody tr")(d) == 3, "the backends")
        assert await browser.text("#spent") == "$0"
        assert await browser.text("#hit-rate") == "–"
        assert await browser.script("return sessionStorage.getItem('llm-router-key')") == ADMIN

        async with openai.AsyncOpenAI(base_url=router.v1, api_key=CLIENT,
                                      max_retries=0) as sdk:
            for prompt in ("What is a DAG?", "Name a prime.", "What is a DAG?"):
                await sdk.chat.completions.create(
                    model="auto", messages=[{"role": "user", "content": prompt}])

        await browser.wait_for(lambda d: _count("#recent tbody tr")(d) == 3,
                               "the three requests")
        assert await browser.text("#spent") != "$0"
        assert await browser.text("#hit-rate") == "33.3%"  # one hit in three lookups
        assert await browser.text("#hits") == "1 hit"
        assert await browser.text("#rps") != "0.00"
        assert "ms" in await browser.text("#p50")
        assert " cache " in await browser.text("#recent tbody tr:first-child")  # newest first
        # The routing panel: the thresholds in force, and the feedback behind them.
        assert await browser.text('#routing tr[data-row="thresholds"] td.num') == "30 / 70"
        async with httpx.AsyncClient(timeout=20) as http:
            reported = await http.post(router.v1 + "/feedback", json={
                "score": 0.2, "tier": 1, "quality": 0.9},
                headers={"authorization": f"Bearer {CLIENT}"})
            assert reported.status_code == 200, reported.text
        await browser.wait_for(
            lambda d: d.find_element(CSS, '#routing tr[data-row="feedback"] td.num').text == "1",
            "the feedback report")
        assert "t1" in await browser.text("#models")
        assert await browser.text("#health-text") == "healthy"
        assert _count(_LIVE)(browser.driver) == 1
        assert "/stats/recent" not in await browser.script(_FETCHED)  # pushed, not polled
        assert await browser.console_errors() == []
        if (folder := screenshots_dir()) is not None:
            await browser.screenshot(folder / "dashboard-traffic.png")

        assert _streams(router) == 1
        await browser.get("about:blank")  # the page closed: its stream ends with it
        await wait_for(lambda: _as_async(_streams(router) == 0), poll=0.05)


async def test_a_running_workflows_dag_shows_its_ops_states_change(
        fake_upstream: FakeUpstream) -> None:
    fake_upstream.set_default("t2", Behaviour(hang=True))  # `review` runs until cancelled
    config = make_config({
        "models": [model_entry(fake_upstream, "t1", tier=1, cost_per_1k_in=0.5),
                   model_entry(fake_upstream, "t2", tier=2)],
        "cache": {"enabled": False},
        "server": {"admin_key": ADMIN, "api_keys": [CLIENT]},
    })
    auth = {"authorization": f"Bearer {CLIENT}"}
    async with open_router(config) as router, open_browser() as browser, \
            httpx.AsyncClient(timeout=20) as http:
        await connect(browser, router.url, ADMIN)
        await browser.wait_for(lambda d: d.find_element(ID, "runs-empty").is_displayed(),
                               "that there are no runs")
        started = await http.post(router.v1 + "/workflows", headers=auth | {
            "prefer": "respond-async"}, json={"workflow": TIERED_CHAIN, "input": "a lamp"})
        run_id = started.json()["run_id"]

        await browser.wait_for(_count(_op("review", "running")), "review running")
        assert _count(_LIVE)(browser.driver) == 1
        assert await browser.text(f'#runs li[data-run="{run_id}"]') != ""
        assert _count(_op("draft", "succeeded"))(browser.driver) == 1
        assert _count(_op("polish", "pending"))(browser.driver) == 1
        assert "t1" in await browser.text('#dag g.op[data-op="draft"]')  # its model
        assert "$" in await browser.text('#dag g.op[data-op="draft"]')  # and its cost
        edges = await browser.script(
            "return [...document.querySelectorAll('#dag path.edge')]"
            ".map(p => p.dataset.edge)")
        assert sorted(edges) == ["draft->review", "review->polish"]
        if (folder := screenshots_dir()) is not None:
            await browser.screenshot(folder / "dashboard-workflow.png")

        await http.post(f"{router.v1}/workflows/runs/{run_id}/cancel", headers=auth)
        await browser.wait_for(_count(f'#runs li[data-run="{run_id}"][data-status="cancelled"]'),
                               "the run cancelled")
        await browser.wait_for(_count(_op("review", "cancelled")), "review cancelled")
        assert _count(_op("draft", "succeeded"))(browser.driver) == 1
        assert await browser.console_errors() == []


async def test_a_router_that_takes_no_key_is_shown_without_asking(
        fake_upstream: FakeUpstream) -> None:
    config = make_config({"models": three_tiers(fake_upstream)})
    async with open_router(config) as router, open_browser() as browser:
        await browser.get(router.url + "/ui")
        await browser.wait_for(lambda d: _count("#backends tbody tr")(d) == 3, "the backends")
        assert await browser.script("return document.getElementById('login').open") is False
        assert await browser.console_errors() == []


async def test_without_the_stream_the_page_polls(fake_upstream: FakeUpstream) -> None:
    config = make_config({"models": three_tiers(fake_upstream)})
    async with open_router(config) as router, open_browser() as browser:
        await browser.call(browser.driver.execute_cdp_cmd, "Network.enable", {})
        await browser.call(browser.driver.execute_cdp_cmd, "Network.setBlockedURLs",
                           {"urls": ["*/stats/events*"]})  # as a proxy that buffers it would
        await browser.get(router.url + "/ui")
        await browser.wait_for(_count('#updated[data-mode="poll"]'), "that it polls")
        async with httpx.AsyncClient(timeout=20) as http:
            answer = await http.post(router.v1 + "/chat/completions", json={
                "model": "auto", "messages": [{"role": "user", "content": "Name a prime."}]})
            assert answer.status_code == 200
        await browser.wait_for(lambda d: _count("#recent tbody tr")(d) == 1, "the request")
        assert "/stats/recent" in await browser.script(_FETCHED)
        assert await browser.text('#routing tr[data-row="thresholds"] td.num') == "30 / 70"
        # Only the blocked stream's own failure, if chromium reports it at all.
        assert all("/stats/events" in e["message"] for e in await browser.console_errors())
