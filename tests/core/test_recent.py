"""engine.core.recent: the dashboard's last requests and recent window, bounded whatever the
traffic."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.core.recent import FinishedRequest, RecentRequests, percentile


def _ok(at: float, ms: float = 10.0, **fields: object) -> FinishedRequest:
    return FinishedRequest(at=at, ms=ms, status="ok", **fields)  # type: ignore[arg-type]


def test_the_list_keeps_the_newest_requests_newest_first() -> None:
    recent = RecentRequests(keep=3)
    for i in range(5):
        recent.add(_ok(100.0 + i, model=f"m{i}"))
    assert [r["model"] for r in recent.snapshot(105.0)["requests"]] == ["m4", "m3", "m2"]


def test_the_window_counts_only_its_own_seconds() -> None:
    recent = RecentRequests(window_sec=10)
    recent.add(_ok(80.0, ms=999.0))  # long gone
    recent.add(_ok(95.5, ms=20.0))
    recent.add(FinishedRequest(at=99.0, ms=40.0, status="upstream_error"))
    window = recent.snapshot(100.0)["window"]
    assert window == {"seconds": 10, "requests": 2, "errors": 1, "per_sec": 0.2,
                      "latency_ms": {"p50": 20.0, "p90": 40.0, "p99": 40.0}}


def test_an_empty_window_has_no_percentiles() -> None:
    snap = RecentRequests().snapshot(1000.0)
    assert snap["requests"] == []
    assert snap["window"]["latency_ms"] == {"p50": None, "p90": None, "p99": None}
    assert snap["window"]["per_sec"] == 0


def test_the_series_has_one_point_per_second_oldest_first() -> None:
    recent = RecentRequests(window_sec=3)
    recent.add(_ok(98.2, ms=5.0))
    recent.add(_ok(98.7, ms=7.0))
    recent.add(FinishedRequest(at=100.1, ms=9.0, status="rate_limited"))
    series = recent.snapshot(100.5)["series"]
    assert series == [
        {"t": 98, "requests": 2, "errors": 0, "p50_ms": 5.0},
        {"t": 99, "requests": 0, "errors": 0, "p50_ms": None},
        {"t": 100, "requests": 1, "errors": 1, "p50_ms": 9.0},
    ]


def test_past_its_samples_the_rate_is_taken_over_what_they_cover() -> None:
    recent = RecentRequests(window_sec=60, samples=100)
    for i in range(400):  # 400 requests in the last 4 s; only the last 100 are kept
        recent.add(_ok(96.0 + i / 100))
    window = recent.snapshot(100.0)["window"]
    assert window["requests"] == 100
    assert 99 <= window["per_sec"] <= 101  # 100 samples over the 1 s they span


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=50),
       st.integers(1, 100))
def test_a_percentile_is_one_of_the_values_and_ranks_right(values: list[float], q: int) -> None:
    ordered = sorted(values)
    found = percentile(ordered, q)
    assert found in ordered
    at_or_below = sum(1 for v in ordered if v <= found)
    assert at_or_below >= q / 100 * len(ordered)
