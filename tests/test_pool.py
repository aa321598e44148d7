"""The backend pool (``engine.pool``), sans-IO: health transitions, cool-downs, rate limits and
the order backends are tried in. Time is a plain number passed in, so no clock is involved.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.config import ModelConfig
from engine.pool import BackendPool, BackendState

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


def pool_of(*models: ModelConfig) -> BackendPool:
    return BackendPool(models)


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


def test_cooldown_starts_at_1s_doubles_and_is_capped_at_30s() -> None:
    backend = pool_of(model("a"))["a"]
    now = 100.0
    cooldowns = []
    for _ in range(8):
        fail(backend, "unreachable", now=now)
        cooldowns.append(backend.down_until - now)
        assert not backend.usable(now + cooldowns[-1] - 0.01)
        assert backend.usable(now + cooldowns[-1])
        now += 1000.0
    assert cooldowns == [1, 2, 4, 8, 16, 30, 30, 30]


def test_a_down_backend_is_tried_again_last_after_its_cooldown_and_recovers() -> None:
    pool = pool_of(model("a", price=0.001), model("b", price=0.002))
    fail(pool["a"], "unreachable", now=0.0)

    assert order(pool, now=0.5) == ["b"]
    assert pool.candidates(1, 0.5)[1] == [pool["a"]]  # skipped, so callers can say why
    assert order(pool, now=1.0) == ["b", "a"]  # usable again, but after every healthy one

    pool["b"].succeeded(0.10)
    pool["a"].succeeded(0.05)
    assert pool["a"].status == "healthy"
    assert pool["a"].failures == 0
    assert order(pool, now=1.0) == ["a", "b"]  # healthy again, and faster


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
    pool["a"].begin()
    pool["a"].begin()
    pool["b"].begin()
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
        pool["b"].begin()
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
    pool = pool_of(model("a"), model("b"))
    pool["a"].begin()
    assert [b.name for b in pool.candidates(1, 0.0, prefer="a")[0]] == ["a", "b"]
    fail(pool["a"], "server_error")
    assert [b.name for b in pool.candidates(1, 0.0, prefer="a")[0]] == ["b", "a"]


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
    pool["a"].begin()
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
            backend.begin()
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
    keys = [b.order_key() for b in tier1]
    assert keys == sorted(keys)
