"""The backend pool (``engine.core.pool``), sans-IO: health transitions, ejections and probes, rate
limits and the order backends are tried in. Time is a plain number passed in, so no clock is
involved.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.config import HealthConfig, ModelConfig
from engine.core.pool import BackendPool, BackendState

SPEC_FIELDS = {"name", "status", "in_flight", "latency_ms", "total_requests"}


def model(name: str, tier: int = 1, *, price: float = 0.0, **extra: Any) -> ModelConfig:
    return ModelConfig(
        name=name,
        provider="openai",
        model=f"up-{name}",
        tier=tier,
        cost_per_1k_in=price,
        cost_per_1k_out=price,
        **extra,
    )


def pool_of(*models: ModelConfig, base: float = 5.0, cap: float = 60.0) -> BackendPool:
    health = HealthConfig(probe_interval_sec=base, max_probe_interval_sec=cap)
    return BackendPool(models, health=health)


def order(pool: BackendPool, tier: int = 1, now: float = 0.0) -> list[str]:
    return [b.name for b in pool.candidates(tier, now)[0]]


def fail(backend: BackendState, kind: str, now: float = 0.0, **kwargs: Any) -> None:
    backend.failed(kind, now, message=f"{backend.name} failed: {kind}", **kwargs)  # type: ignore[arg-type]


# ---- health transitions -----------------------------------------------------------------------


def test_a_new_backend_is_healthy_and_usable() -> None:
    backend = pool_of(model("a"))["a"]
    assert backend.status == "healthy"
    assert backend.usable(0.0)
    assert (backend.in_flight, backend.total_requests, backend.latency_ms) == (0, 0, None)


@pytest.mark.parametrize("kind", ["server_error", "timeout"])
def test_a_5xx_or_timeout_degrades_and_three_in_a_row_take_it_down(kind: str) -> None:
    backend = pool_of(model("a"))["a"]

    fail(backend, kind)
    assert backend.status == "degraded"
    assert backend.usable(0.0)  # degraded is still used
    fail(backend, kind)
    assert backend.status == "degraded"
    fail(backend, kind, now=10.0)
    assert backend.status == "down"
    assert not backend.usable(10.0)


def test_unreachable_is_down_at_once() -> None:
    backend = pool_of(model("a"))["a"]
    fail(backend, "unreachable", now=5.0)
    assert backend.status == "down"
    assert not backend.usable(5.0)
    assert backend.last_error == "a failed: unreachable"


def test_ejection_starts_at_the_probe_interval_doubles_per_failed_probe_and_is_capped() -> None:
    backend = pool_of(model("a"), base=1.0, cap=30.0)["a"]
    fail(backend, "unreachable", now=100.0)
    ejections = [backend.probe_at - 100.0]
    for _ in range(7):
        now = backend.probe_at
        assert not backend.usable(now - 0.01)
        assert backend.usable(now)
        probe = backend.begin(now)
        assert probe
        fail(backend, "unreachable", now=now + 0.5, probe=True)
        backend.end(probe=True)
        ejections.append(backend.probe_at - (now + 0.5))
    assert ejections == [1, 2, 4, 8, 16, 30, 30, 30]
    assert backend.ejections == 8


def test_a_down_backend_is_probed_first_after_its_ejection_and_recovers() -> None:
    pool = pool_of(model("a", price=0.001), model("b", price=0.002), base=5.0)
    fail(pool["a"], "unreachable", now=0.0)

    assert order(pool, now=4.9) == ["b"]
    assert pool.candidates(1, 4.9)[1] == [pool["a"]]  # skipped, so callers can say why
    assert order(pool, now=5.0) == ["a", "b"]  # due its probe: it leads, ahead of healthy b

    assert pool["a"].begin(5.0)  # this request is the probe
    assert order(pool, now=5.0) == ["b"]  # one probe at a time: the rest still avoid it
    pool["a"].succeeded(0.05)
    pool["a"].end(probe=True)
    assert pool["a"].status == "healthy"
    assert (pool["a"].failures, pool["a"].backoff, pool["a"].probing) == (0, 0, False)
    pool["b"].succeeded(0.10)
    assert order(pool, now=5.0) == ["a", "b"]  # healthy again, and faster


def test_a_degraded_backend_is_fallback_only_until_its_probe_is_due() -> None:
    pool = pool_of(model("a", price=0.001), model("b", price=0.002), base=5.0)
    fail(pool["a"], "server_error", now=0.0)

    assert order(pool, now=4.9) == ["b", "a"]  # deprioritised, still a fallback
    assert order(pool, now=5.0) == ["a", "b"]  # due: the next request probes it
    assert pool["a"].begin(5.0)
    assert not pool["a"].begin(5.0)  # a second request at once is no probe
    assert order(pool, now=5.0) == ["b", "a"]  # while probing, back behind the healthy
    fail(pool["a"], "server_error", now=6.0, probe=True)
    pool["a"].end(probe=True)
    assert pool["a"].probe_at == 6.0 + 10.0  # a failed probe doubles the ejection
    assert order(pool, now=15.9) == ["b", "a"]
    assert order(pool, now=16.0) == ["a", "b"]


def test_the_failures_of_one_burst_are_one_ejection() -> None:
    backend = pool_of(model("a"), base=5.0)["a"]
    for _ in range(5):
        assert not backend.begin(0.0)
    for i in range(5):
        fail(backend, "server_error", now=1.0 + i * 0.1)
        backend.end()
    assert backend.status == "down"  # three in a row
    assert backend.ejections == 1
    assert backend.probe_at == pytest.approx(1.4 + 5.0)  # restarted, not lengthened


def test_a_probe_that_ends_without_a_verdict_lets_the_next_request_probe() -> None:
    pool = pool_of(model("a"), model("b"), base=5.0)
    fail(pool["a"], "unreachable", now=0.0)
    assert pool["a"].begin(5.0)
    pool["a"].end(probe=True)  # cancelled: the client went away
    assert pool["a"].probe_due(5.0)
    assert order(pool, now=5.0)[0] == "a"
    assert pool["a"].begin(5.0)
    fail(pool["a"], "rejected", now=5.5, probe=True)  # the request's fault, not a verdict
    pool["a"].end(probe=True)
    assert pool["a"].status == "down"
    assert pool["a"].probe_due(5.5)
    assert pool["a"].backoff == 1


def test_a_success_clears_a_degraded_streak() -> None:
    backend = pool_of(model("a"))["a"]
    fail(backend, "server_error")
    fail(backend, "server_error")
    backend.succeeded(0.1)
    assert backend.status == "healthy"
    fail(backend, "server_error")
    fail(backend, "server_error")
    assert backend.status == "degraded"  # the streak restarted: two, not four


def test_a_rejected_request_does_not_blame_the_backend() -> None:
    backend = pool_of(model("a"))["a"]
    for _ in range(5):
        fail(backend, "rejected")
    assert backend.status == "healthy"
    assert backend.failures == 0
    assert backend.usable(0.0)


# ---- every transition ----------------------------------------------------------------------
#
# Each starting state is built at its own time (base 2 s, cap 16 s; one ejection so far, so the
# current ejection lasts 2 s and a failed probe makes the next 4 s), then one event happens at
# NOW. "probe" events are the outcome of the request that is the probe; the others of a
# request that was not (sent before the ejection, or a fallback to a degraded backend).

NOW = 100.0
START = ["healthy", "degraded", "degraded-due", "degraded-probing", "down", "down-due",
         "down-probing"]


def in_state(state: str) -> BackendState:
    backend = pool_of(model("a"), base=2.0, cap=16.0)["a"]
    if state == "healthy":
        return backend
    health, _, phase = state.partition("-")
    # Ejected just before NOW (still out), or long enough before that its probe is due.
    failed_at = NOW - 1.0 if phase == "" else NOW - 10.0
    fail(backend, "unreachable" if health == "down" else "server_error", now=failed_at)
    if phase == "probing":
        assert backend.begin(NOW - 5.0)
    return backend


# (start, event) -> (status, ejections, seconds until due or None, probing)
TRANSITIONS: dict[tuple[str, str], tuple[str, int, float | None, bool]] = {}
for start in START:
    ejected = 0 if start == "healthy" else 1
    probing = start.endswith("probing")
    health = "healthy" if start == "healthy" else start.split("-")[0]
    for kind in ("server_error", "timeout", "unreachable"):
        worse = "down" if kind == "unreachable" or health == "down" else "degraded"
        # A non-probe failure: a new ejection from healthy, else the current one restarts.
        TRANSITIONS[start, kind] = (worse, 1, 2.0, probing)
        if probing:  # the probe failed: ejected again, twice as long
            TRANSITIONS[start, f"probe-{kind}"] = (
                "down" if kind == "unreachable" else "degraded", 2, 4.0, False)
    TRANSITIONS[start, "success"] = ("healthy", ejected, None, False)
    for kind in ("rate_limited", "rejected"):
        if start == "healthy":
            TRANSITIONS[start, kind] = ("healthy", 0, None, False)
        elif start in ("degraded", "down"):
            TRANSITIONS[start, kind] = (health, 1, 1.0, False)  # still ejected until NOW + 1
        else:
            TRANSITIONS[start, kind] = (health, 1, 0.0, probing)
        if probing:  # no verdict: the probe is released, the next request probes
            TRANSITIONS[start, f"probe-{kind}"] = (health, 1, 0.0, False)
    if probing:
        TRANSITIONS[start, "probe-success"] = ("healthy", 1, None, False)
        TRANSITIONS[start, "probe-cancelled"] = (health, 1, 0.0, False)


@pytest.mark.parametrize(("start", "event"), sorted(TRANSITIONS),
                         ids=[f"{s}+{e}" for s, e in sorted(TRANSITIONS)])
def test_transition(start: str, event: str) -> None:
    backend = in_state(start)
    status, ejections, due_in, probing = TRANSITIONS[start, event]
    probe = event.startswith("probe-")
    what = event.removeprefix("probe-")
    if what == "success":
        backend.succeeded(0.1)
        if probe:
            backend.end(probe=True)
    elif what == "cancelled":
        backend.end(probe=True)
    else:
        fail(backend, what, now=NOW, probe=probe)  # type: ignore[arg-type]
        if probe:
            backend.end(probe=True)

    assert backend.status == status
    assert backend.ejections == ejections
    assert backend.probing == probing
    entry = backend.snapshot(NOW)
    assert entry["status"] == status
    assert entry["ejections"] == ejections
    assert entry["probing"] is probing
    assert entry["next_probe_in_sec"] == due_in
    if status == "healthy":
        assert backend.probe_at == 0.0 and not backend.probe_due(NOW + 1e6)
        assert backend.failures == 0
    else:
        assert due_in is not None
        due = NOW + due_in
        rate_limited = what == "rate_limited"
        # Due exactly when its ejection ends and no probe is under way.
        assert backend.probe_due(due) is not probing
        assert not backend.probe_due(due - 0.01) or due_in == 0.0
        # Down is skipped until its probe is due; degraded is always a fallback.
        usable_at = NOW + 1.0 if rate_limited else due
        if status == "down":
            assert backend.usable(usable_at) is not probing
            if due_in > 0.0:
                assert not backend.usable(due - 0.01)
        else:
            assert backend.usable(usable_at)


def test_every_state_and_event_is_covered() -> None:
    events = {e.removeprefix("probe-") for _, e in TRANSITIONS}
    assert events == {"server_error", "timeout", "unreachable", "rate_limited", "rejected",
                      "success", "cancelled"}
    assert {s for s, _ in TRANSITIONS} == set(START)
    for start in START:
        if start.endswith("probing"):
            assert {e for s, e in TRANSITIONS if s == start and e.startswith("probe-")} == {
                f"probe-{e}" for e in events}


def test_a_failure_never_lifts_down_to_degraded_unless_it_is_the_probe() -> None:
    backend = in_state("down")
    fail(backend, "server_error", now=NOW)
    assert backend.status == "down"
    backend = in_state("down-probing")
    fail(backend, "server_error", now=NOW, probe=True)
    assert backend.status == "degraded"  # reachable again, but failing


def test_snapshot_keeps_the_last_error_after_recovery() -> None:
    backend = pool_of(model("a"), base=2.0)["a"]
    entry = backend.snapshot(0.0)
    assert (entry["ejections"], entry["probing"], entry["next_probe_in_sec"],
            entry["last_error"]) == (0, False, None, None)
    fail(backend, "server_error", now=0.0)
    entry = backend.snapshot(0.5)
    assert entry["next_probe_in_sec"] == 1.5
    assert entry["last_error"] == entry["detail"] == "a failed: server_error"
    backend.succeeded(0.1)
    entry = backend.snapshot(3.0)
    assert entry["status"] == "healthy"
    assert entry["detail"] is None  # no current problem
    assert entry["last_error"] == "a failed: server_error"  # but what happened is kept
    assert entry["ejections"] == 1


def test_an_unconfigured_backend_is_never_probed() -> None:
    backend = pool_of(model("keyless", missing_env="SOME_KEY"))["keyless"]
    for now in (0.0, 1e6):
        assert not backend.usable(now)
    assert backend.snapshot(1e6)["next_probe_in_sec"] is None


# ---- rate limits ------------------------------------------------------------------------------


def test_retry_after_keeps_a_backend_out_for_exactly_that_long() -> None:
    pool = pool_of(model("a"), model("b", price=1.0))
    fail(pool["a"], "rate_limited", now=10.0, retry_after=7.5)

    assert pool["a"].status == "healthy"  # the provider is fine; it asked us to wait
    assert not pool["a"].usable(17.49)
    assert order(pool, now=17.49) == ["b"]
    assert pool["a"].usable(17.5)
    assert order(pool, now=17.5) == ["a", "b"]


def test_rate_limit_without_retry_after_waits_one_second() -> None:
    backend = pool_of(model("a"))["a"]
    fail(backend, "rate_limited", now=3.0)
    assert not backend.usable(3.99)
    assert backend.usable(4.0)


def test_a_shorter_retry_after_does_not_shorten_a_longer_one() -> None:
    backend = pool_of(model("a"))["a"]
    fail(backend, "rate_limited", now=0.0, retry_after=10.0)
    fail(backend, "rate_limited", now=1.0, retry_after=1.0)
    assert not backend.usable(9.0)


# ---- order -------------------------------------------------------------------------------------


def test_fewer_requests_in_flight_wins() -> None:
    pool = pool_of(model("a"), model("b"), model("c"))
    pool["a"].begin(0.0)
    pool["a"].begin(0.0)
    pool["b"].begin(0.0)
    assert order(pool) == ["c", "b", "a"]

    pool["a"].end()
    pool["a"].end()
    assert pool["a"].in_flight == 0
    assert pool["a"].total_requests == 2
    assert order(pool)[0] in {"a", "c"}
    assert order(pool)[-1] == "b"


def test_degraded_is_deprioritised_even_when_idle() -> None:
    pool = pool_of(model("a"), model("b"))
    fail(pool["a"], "server_error")
    for _ in range(5):
        pool["b"].begin(0.0)
    assert order(pool) == ["b", "a"]


def test_lower_latency_then_lower_price_break_ties() -> None:
    pool = pool_of(model("slow", price=0.001), model("fast", price=0.5))
    pool["slow"].succeeded(0.9)
    pool["fast"].succeeded(0.1)
    assert order(pool) == ["fast", "slow"]

    cheap = pool_of(model("pricey", price=0.5), model("cheap", price=0.001))
    assert order(cheap) == ["cheap", "pricey"]


def test_latency_is_an_exponential_moving_average() -> None:
    backend = pool_of(model("a"))["a"]
    backend.succeeded(0.100)
    assert backend.latency_ms == pytest.approx(100.0)
    backend.succeeded(0.200)
    assert backend.latency_ms == pytest.approx(120.0)  # 100 + 0.2 * (200 - 100)


def test_higher_tiers_follow_as_failover_lower_tiers_never() -> None:
    pool = pool_of(
        model("t1"), model("t2a", 2, price=0.2), model("t2b", 2, price=0.1), model("t3", 3)
    )
    assert order(pool, tier=1) == ["t1", "t2b", "t2a", "t3"]
    assert order(pool, tier=2) == ["t2b", "t2a", "t3"]
    assert order(pool, tier=3) == ["t3"]


def test_a_tier_without_models_is_served_by_the_next_one_up() -> None:
    pool = pool_of(model("t1"), model("t3", 3))
    assert pool.serving_tier(2) == 3
    assert order(pool, tier=2) == ["t3"]
    assert pool.serving_tier(7) == 3  # above every tier: the highest
    assert order(pool, tier=7) == ["t3"]


def test_accepts_restricts_candidates_as_if_nothing_else_were_configured() -> None:
    pool = pool_of(model("t1"), model("t2", 2), model("t3a", 3), model("t3b", 3))

    def only(*names: str) -> Any:
        return lambda m: m.name in names

    def names(tier: int, accepts: Any) -> tuple[list[str], list[str]]:
        tried, skipped = pool.candidates(tier, 0.0, accepts=accepts)
        return [b.name for b in tried], [b.name for b in skipped]

    assert names(1, only("t3b", "t2")) == (["t2", "t3b"], [])
    assert names(2, only("t1")) == (["t1"], [])  # nothing at or above: the highest below
    assert names(1, only("t3a")) == (["t3a"], [])
    assert names(1, only()) == ([], [])  # nothing accepted: nothing to try or explain
    fail(pool["t3a"], "unreachable")
    assert names(3, only("t3a", "t1")) == ([], ["t3a"])  # accepted but down: explained


def test_prefer_leads_only_when_as_healthy_as_the_best() -> None:
    pool = pool_of(model("a"), model("b"), model("c"), base=5.0)

    def preferring(name: str, now: float = 0.0) -> list[str]:
        return [b.name for b in pool.candidates(1, now, prefer=name)[0]]

    pool["a"].begin(0.0)
    assert preferring("a") == ["a", "b", "c"]  # busier, but preferred and as healthy
    fail(pool["a"], "server_error")
    assert preferring("a") == ["b", "c", "a"]
    # Once a's probe is due it leads, even ahead of a preferred healthy backend.
    assert preferring("c", now=5.0) == ["a", "b", "c"]


def test_unconfigured_backends_are_skipped_and_shown_down() -> None:
    pool = pool_of(model("keyless", missing_env="SOME_KEY"), model("ok"))
    order_, skipped = pool.candidates(1, 0.0)
    assert [b.name for b in order_] == ["ok"]
    assert [b.name for b in skipped] == ["keyless"]
    entry = pool["keyless"].snapshot(0.0)
    assert entry["status"] == "down"
    assert "SOME_KEY" in str(entry["detail"])


def test_reference_model_is_the_priciest_of_the_top_tier() -> None:
    pool = pool_of(
        model("cheap", 1, price=9.0), model("top-a", 3, price=0.5), model("top-b", 3, price=0.7)
    )
    assert pool.reference.name == "top-b"


# ---- snapshot ----------------------------------------------------------------------------------


def test_snapshot_has_spec_fields_and_no_secrets() -> None:
    pool = pool_of(model("a", api_key="sk-very-secret-key-123"), model("b", 2))
    pool["a"].begin(0.0)
    pool["a"].succeeded(0.1234)
    fail(pool["b"], "server_error", now=0.0)
    snapshot = pool.snapshot(0.0)

    assert [e["name"] for e in snapshot] == ["a", "b"]
    for entry in snapshot:
        assert entry.keys() >= SPEC_FIELDS
        assert isinstance(entry["in_flight"], int)
        assert isinstance(entry["latency_ms"], int)
        assert isinstance(entry["total_requests"], int)
    a, b = snapshot
    assert (a["status"], a["in_flight"], a["latency_ms"], a["total_requests"]) == (
        "healthy",
        1,
        123,
        1,
    )
    assert b["status"] == "degraded"
    assert "sk-very-secret-key-123" not in repr(snapshot)


def test_snapshot_reports_a_rate_limit() -> None:
    backend = pool_of(model("a"))["a"]
    fail(backend, "rate_limited", now=0.0, retry_after=4.0)
    assert "rate limited" in str(backend.snapshot(1.0)["detail"])
    assert backend.snapshot(1.0)["status"] == "healthy"


# ---- properties ---------------------------------------------------------------------------------

EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(
            ["ok", "unreachable", "server_error", "timeout", "rate_limited", "rejected", "begin"]
        ),
        st.floats(0, 5),
    ),
    max_size=30,
)


@given(EVENTS, st.floats(0, 200))
def test_candidates_are_ordered_usable_and_partition_the_pool(
    events: list[tuple[str, str, float]], later: float
) -> None:
    pool = pool_of(model("a"), model("b", price=0.1), model("c", 2))
    now = 0.0
    for name, what, step in events:
        now += step
        backend = pool[name]
        if what == "ok":
            backend.succeeded(step)
        elif what == "begin":
            backend.begin(now)
        else:
            fail(backend, what, now=now, retry_after=step)
        assert backend.status in {"healthy", "degraded", "down"}
    now += later

    tried, skipped = pool.candidates(1, now)
    assert sorted(b.name for b in tried + skipped) == ["a", "b", "c"]
    assert all(b.usable(now) for b in tried)
    assert not any(b.usable(now) for b in skipped)
    tier1 = [b for b in tried if b.tier == 1]
    assert tried[: len(tier1)] == tier1  # the routed tier before failover tiers
    keys = [b.order_key(now) for b in tier1]
    assert keys == sorted(keys)
    due = [b for b in tier1 if b.probe_due(now)]
    assert tier1[: len(due)] == due  # a probe that is due leads its tier
