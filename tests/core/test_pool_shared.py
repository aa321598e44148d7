"""Another process's verdict on a backend (``BackendState.adopt``, shared health): taken as
it is, without counting a failure or an ejection here, and published only on a change
(``BackendState.verdict``)."""

from __future__ import annotations

from engine.core.config import HealthConfig, ModelConfig
from engine.core.pool import BackendPool


def pool() -> BackendPool:
    models = [ModelConfig(name=n, provider="openai", model=n, tier=1, cost_per_1k_in=p,
                          cost_per_1k_out=p) for n, p in (("cheap", 0.001), ("dear", 0.01))]
    return BackendPool(models, health=HealthConfig(probe_interval_sec=5,
                                                   max_probe_interval_sec=60))


def order(p: BackendPool, now: float) -> list[str]:
    return [b.name for b in p.candidates(1, now)[0]]


def test_a_down_verdict_skips_the_backend_until_its_probe_without_counting_here() -> None:
    p = pool()
    p["cheap"].adopt("down", probe_at=10.0, backoff=2, error="cheap: refused")
    cheap = p["cheap"]
    assert order(p, 0.0) == ["dear"]
    assert (cheap.failures, cheap.ejections, cheap.total_requests) == (0, 0, 0)
    assert cheap.snapshot(0.0)["detail"] == "cheap: refused"
    assert order(p, 10.0) == ["cheap", "dear"]  # due its probe here too
    # A failed probe here doubles from the adopted backoff.
    probe = cheap.begin(10.0)
    cheap.failed("server_error", 10.0, message="x", probe=True)
    cheap.end(probe=probe)
    assert cheap.probe_at == 10.0 + 5 * 2 ** 2


def test_a_healthy_verdict_brings_it_back_and_a_rate_limit_only_lengthens() -> None:
    p = pool()
    cheap = p["cheap"]
    cheap.failed("unreachable", 0.0, message="refused")
    cheap.adopt("healthy", probe_at=0.0, backoff=0, error=None)
    assert (cheap.status, cheap.backoff, cheap.last_error) == ("healthy", 0, None)
    assert order(p, 1.0) == ["cheap", "dear"]
    cheap.adopt_rate_limit(30.0)
    cheap.adopt_rate_limit(20.0)
    assert cheap.rate_limited_until == 30.0 and order(p, 29.0) == ["dear"]


def test_the_verdict_changes_on_news_only() -> None:
    cheap = pool()["cheap"]
    before = cheap.verdict()
    cheap.succeeded(0.1)
    assert cheap.verdict() == before  # a success of a healthy backend: nothing to publish
    cheap.failed("server_error", 0.0, message="x")
    assert cheap.verdict()[:3] == ("degraded", 5.0, 1)
    cheap.failed("rate_limited", 0.0, message="x", retry_after=9)
    assert cheap.verdict()[3] == 9.0
