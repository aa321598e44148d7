"""A failed backend returns to rotation: ejection, one probe at a time, recovery. End to end,
over real sockets: the router in front of the fake upstream.

Layout: ``a1`` and ``a2`` share tier 1 (``a1`` is cheaper, so it takes the traffic while both
are healthy and idle), ``b1`` is tier 2. The probe interval is a minute, far longer than any
test takes, and the tests end an ejection by moving trio's clock (``jumpable_clock``) past
it: whether a request falls inside or after an ejection is the test's choice, not a race
with the machine's speed. A probe the test needs to see under way is held at a relay
(``support_hold_relay``) until the test lets its answer through.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

import pytest
import trio
from router_harness import make_config
from support_hold_relay import open_hold_relay
from support_routing import RouterClient, model_entry, open_router_client, skip_ahead, wait_for
from trio.testing import MockClock

from engine.errors import ConfigInvalid
from engine.testing.fake_upstream import Behaviour, FakeUpstream

INTERVAL = 60.0
HEALTH = {"probe_interval_sec": INTERVAL, "max_probe_interval_sec": 4 * INTERVAL}

# A fault on one request, and the health it leaves: a 5xx and a timeout (a1's first-byte
# deadline is 0.3 s when the test is about timeouts) degrade, a connection dropped mid-answer
# (a reset) takes the backend down.
FAULTS = {
    "500": (Behaviour(status=500), "degraded"),
    "reset": (Behaviour(cut_after=0), "down"),
    "timeout": (Behaviour(latency=1.0), "degraded"),
}


def layout(fake: FakeUpstream, *, first_byte_sec: float = 10.0, a1_url: str | None = None
           ) -> list[dict[str, Any]]:
    a1 = model_entry(fake, "a1", tier=1, cost_per_1k_in=0.001, cost_per_1k_out=0.002,
                     timeouts={"first_byte_sec": first_byte_sec})
    if a1_url is not None:
        a1["base_url"] = a1_url
    return [
        a1,
        model_entry(fake, "a2", tier=1, cost_per_1k_in=0.002, cost_per_1k_out=0.004),
        model_entry(fake, "b1", tier=2, cost_per_1k_in=0.01, cost_per_1k_out=0.02),
    ]


def answered_by(response: Any, name: str) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["x-llm-router-model"] == name


def count(fake: FakeUpstream, backend: str) -> int:
    return len(fake.requests(backend))


async def fail_a1_once(fake: FakeUpstream, client: RouterClient, fault: str) -> None:
    """Make ``a1`` fail one request (answered by ``a2`` instead): ejected for ``INTERVAL``."""
    behaviour, status = FAULTS[fault]
    fake.script("a1", behaviour)
    answered_by(await client.chat("first"), "a2")
    a1 = (await client.backends())["a1"]
    assert a1["status"] == status
    assert a1["ejections"] == 1
    assert a1["probing"] is False
    assert 0 < a1["next_probe_in_sec"] <= INTERVAL
    assert a1["last_error"] == a1["detail"]
    assert a1["last_error"].startswith("a1 ")


async def still_ejected(client: RouterClient) -> dict[str, Any]:
    """``a1``'s entry, which must show an ejection not yet over and no probe under way."""
    a1 = (await client.backends())["a1"]
    assert a1["status"] != "healthy" and a1["probing"] is False, a1
    assert a1["next_probe_in_sec"] > 0, a1
    return a1


@pytest.mark.parametrize("fault", sorted(FAULTS))
async def test_a_backend_that_failed_once_is_probed_and_rejoins_rotation(
    fake_upstream: FakeUpstream, jumpable_clock: MockClock, fault: str
) -> None:
    models = layout(fake_upstream, first_byte_sec=0.3 if fault == "timeout" else 10.0)
    async with open_router_client(models, health=HEALTH) as client:
        await fail_a1_once(fake_upstream, client, fault)

        # Ejected: the healthy a2 takes the traffic, though a1 is cheaper.
        for _ in range(3):
            answered_by(await client.chat("during"), "a2")
        assert count(fake_upstream, "a1") == 1
        await still_ejected(client)

        # Its ejection over, the next request probes it; the fault has cleared.
        await skip_ahead(jumpable_clock, INTERVAL)
        assert (await client.backends())["a1"]["next_probe_in_sec"] == 0
        answered_by(await client.chat("probe"), "a1")
        a1 = (await client.backends())["a1"]
        assert a1["status"] == "healthy"
        assert (a1["probing"], a1["next_probe_in_sec"], a1["detail"]) == (False, None, None)
        assert a1["ejections"] == 1
        assert a1["last_error"].startswith("a1 ")  # what happened is kept

        # Back in normal rotation: concurrent requests are shared by load again.
        for name in ("a1", "a2"):
            fake_upstream.set_default(name, Behaviour(latency=0.2))
        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(partial(client.chat, f"after {i}"))
        assert count(fake_upstream, "a1") >= 2 + 3


@pytest.mark.parametrize("fault", ["500", "reset"])
async def test_one_probe_at_a_time_while_the_rest_avoid_the_backend(
    fake_upstream: FakeUpstream, jumpable_clock: MockClock, fault: str
) -> None:
    """The probe's answer is held at a relay while eight more requests come: a1 sees none of
    them, whatever the time they take."""
    async with open_hold_relay(fake_upstream) as relay, open_router_client(
        layout(fake_upstream, a1_url=relay.base_url("a1", "openai")), health=HEALTH
    ) as client:
        await fail_a1_once(fake_upstream, client, fault)
        await skip_ahead(jumpable_clock, INTERVAL)
        relay.hold()  # the probe is under way until the test lets its answer through
        probe: dict[str, Any] = {}

        async def send_probe() -> None:
            probe["response"] = await client.chat("probe")

        async def a1_probing() -> bool:
            return bool((await client.backends())["a1"]["probing"])

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_probe)
                await wait_for(a1_probing)
                async with trio.open_nursery() as burst:
                    for i in range(8):
                        burst.start_soon(partial(client.chat, f"meanwhile {i}"))
                assert count(fake_upstream, "a1") == 2  # the failure and the probe, nothing else
                assert (relay.held, "response" in probe) == (1, False)  # still under way
                a1 = (await client.backends())["a1"]
                assert (a1["probing"], a1["in_flight"]) == (True, 1)
                relay.release()
        answered_by(probe["response"], "a1")
        assert [seen.headers["x-llm-router-model"] for seen in client.seen
                if "x-llm-router-model" in seen.headers].count("a2") == 9
        assert (await client.backends())["a1"]["status"] == "healthy"


async def test_a_failed_probe_doubles_the_ejection(fake_upstream: FakeUpstream,
                                                   jumpable_clock: MockClock) -> None:
    async with open_router_client(layout(fake_upstream), health=HEALTH) as client:
        await fail_a1_once(fake_upstream, client, "500")
        await skip_ahead(jumpable_clock, INTERVAL)

        fake_upstream.script("a1", Behaviour(status=503))  # the fault has not cleared
        answered_by(await client.chat("probe"), "a2")  # the failed probe fails over
        a1 = (await client.backends())["a1"]
        assert (a1["status"], a1["ejections"], a1["probing"]) == ("degraded", 2, False)
        assert INTERVAL < a1["next_probe_in_sec"] <= 2 * INTERVAL
        assert "503" in a1["last_error"]

        await skip_ahead(jumpable_clock, INTERVAL)  # the first interval is not enough
        await still_ejected(client)
        answered_by(await client.chat("too early"), "a2")
        assert count(fake_upstream, "a1") == 2

        await skip_ahead(jumpable_clock, INTERVAL)
        answered_by(await client.chat("second probe"), "a1")
        assert (await client.backends())["a1"]["status"] == "healthy"


async def test_a_pinned_model_is_probed_too(fake_upstream: FakeUpstream,
                                            jumpable_clock: MockClock) -> None:
    async with open_router_client(layout(fake_upstream), health=HEALTH) as client:
        fake_upstream.script("a1", Behaviour(cut_after=0))
        first = await client.chat(model="a1")
        assert first.status_code == 502
        second = await client.chat(model="a1")  # down and ejected: refused without a call
        assert second.status_code == 503
        message = second.json()["error"]["message"]
        assert "a1: down (a1 broke off its answer" in message
        wait = re.search(r"next probe in (\d+\.\d) s", message)
        assert wait is not None and 0 < float(wait[1]) <= INTERVAL, message
        assert count(fake_upstream, "a1") == 1

        await skip_ahead(jumpable_clock, INTERVAL)
        answered_by(await client.chat(model="a1"), "a1")
        assert (await client.backends())["a1"]["status"] == "healthy"


async def test_health_settings_are_validated(fake_upstream: FakeUpstream) -> None:
    with pytest.raises(ConfigInvalid) as caught:
        make_config({"models": layout(fake_upstream),
                     "health": {"probe_interval_sec": 10, "max_probe_interval_sec": 5}})
    assert caught.value.problems == [
        "health: probe_interval_sec must not exceed max_probe_interval_sec"]
