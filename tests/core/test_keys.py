"""The arithmetic of client keys (engine.core.keys): secrets and digests, the settings the
admin API takes, rate limits (GCRA) and budgets (reserve, then settle)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.core.keys import (
    KeyRecord,
    KeySettings,
    Ledger,
    digest,
    looks_like_key,
    matches,
    new_secret,
    period_key,
    period_reset,
    public_prefix,
    settle,
    take,
)


def test_secrets_are_random_and_only_their_digest_identifies_them() -> None:
    secrets = {new_secret() for _ in range(200)}
    assert len(secrets) == 200 and all(looks_like_key(s) for s in secrets)
    one = next(iter(secrets))
    assert len(digest(one)) == 64 and one not in digest(one)
    other = one[:-1] + ("B" if one.endswith("A") else "A")  # one character changed
    assert matches(digest(one), one) and not matches(digest(one), other)
    assert not looks_like_key(one + "x") and not looks_like_key("Bearer " + one)
    record = KeyRecord(id="key_1", digest=digest(one), prefix=public_prefix(one),
                       settings=KeySettings(name="t"), created_at=0.0)
    assert one not in str(record.public()) and digest(one) not in str(record.public())


@given(st.lists(st.floats(min_value=0, max_value=180, allow_nan=False), min_size=1,
                max_size=400), st.integers(min_value=1, max_value=20))
def test_a_limit_admits_a_minutes_allowance_at_once_then_the_steady_rate(
    times: list[float], limit: int,
) -> None:
    tat, admitted = 0.0, []
    for now in sorted(times):
        decision = take(tat, now=now, cost=1, per_minute=limit)
        if decision.allowed:
            tat = decision.tat
            admitted.append(now)
        else:
            assert decision.retry_after > 0
            assert take(tat, now=now + decision.retry_after, cost=1, per_minute=limit).allowed
    interval = 60 / limit
    for i, start in enumerate(admitted):
        for width in (1e-9, 30.0, 60.0):
            inside = sum(start <= t < start + width for t in admitted[i:])
            # the burst (a minute's allowance) plus one per interval since: a token bucket
            assert inside <= limit + width / interval + 1e-9


def test_a_burst_gets_exactly_the_limit() -> None:
    tat, allowed = 0.0, 0
    for _ in range(10):
        decision = take(tat, now=1000.0, cost=1, per_minute=6)
        if decision.allowed:
            tat, allowed = decision.tat, allowed + 1
    assert allowed == 6
    assert take(tat, now=1000.0, cost=1, per_minute=6).retry_after == pytest.approx(10.0)


def test_token_limits_admit_while_allowance_is_left_and_charge_the_real_count() -> None:
    first = take(0.0, now=0.0, cost=900, per_minute=1000, admit_over=True)
    assert first.allowed and first.remaining == 100
    second = take(first.tat, now=0.0, cost=500, per_minute=1000, admit_over=True)
    assert second.allowed  # 100 left: admitted, overshooting
    third = take(second.tat, now=0.0, cost=1, per_minute=1000, admit_over=True)
    assert not third.allowed and third.retry_after == pytest.approx(24.06, abs=0.01)
    corrected = settle(second.tat, reserved=500, actual=50, per_minute=1000)
    assert take(corrected, now=0.0, cost=1, per_minute=1000, admit_over=True).allowed


@given(st.lists(st.floats(min_value=0.01, max_value=2.0), min_size=1, max_size=60),
       st.floats(min_value=0.0, max_value=10.0))
def test_concurrent_admissions_overspend_by_at_most_one_request(costs: list[float],
                                                                budget: float) -> None:
    ledger = Ledger()
    admitted = [cost for cost in costs if ledger.admit(cost, budget=budget)]
    for cost in admitted:  # each costs all it reserved: the worst case
        ledger.settle(reserved=cost, actual=cost)
    assert ledger.spent <= budget + max(costs) + 1e-9
    assert ledger.reserved == pytest.approx(0.0, abs=1e-9)


def test_periods() -> None:
    friday = datetime(2026, 12, 4, 23, 59, 59, tzinfo=UTC).timestamp()
    assert period_key("day", friday) == "2026-12-04"
    assert period_key("week", friday) == "2026-W49" and period_key("month", friday) == "2026-12"
    assert period_reset("day", friday) == datetime(2026, 12, 5, tzinfo=UTC).timestamp()
    assert period_reset("week", friday) == datetime(2026, 12, 7,
                                                    tzinfo=UTC).timestamp()
    assert period_reset("month", friday) == datetime(2027, 1, 1,
                                                     tzinfo=UTC).timestamp()
    assert period_reset("total", friday) is None


@pytest.mark.parametrize(("body", "fragment"), [
    ({}, "name"),
    ({"name": "x", "rpm": 0}, "rpm"),
    ({"name": "x", "budget_usd": -1}, "budget_usd"),
    ({"name": "x", "budget_usd": float("nan")}, "budget_usd"),
    ({"name": "x", "budget_period": "year"}, "budget_period"),
    ({"name": "x", "max_tier": 0}, "max_tier"),
    ({"name": "x", "models": [""]}, "models"),
    ({"name": "x", "metadata": {"big": "x" * 20000}}, "metadata"),
    ({"name": "x", "secret": "mine"}, "secret"),
])
def test_settings_refuse_what_they_cannot_mean(body: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError) as caught:
        KeySettings.model_validate(body)
    assert fragment in str(caught.value)


def test_expiry_and_updates() -> None:
    settings = KeySettings(name="t", expires_at=datetime(2026, 1, 1))
    assert settings.expires_at is not None and settings.expires_at.tzinfo is not None
    assert settings.expired(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    assert not settings.expired(datetime(2025, 12, 31, tzinfo=UTC).timestamp())
    assert settings.updated({"expires_at": None}).expired(1e12) is False
    with pytest.raises(ValidationError):
        settings.updated({"rpm": -5})
