"""engine.core.recent: the dashboard's last requests and recent window, bounded whatever the
traffic."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from engine.core.recent import FinishedRequest, RecentRequests, latency_key, percentile


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


def test_the_window_stays_exact_and_bounded_whatever_the_traffic() -> None:
    recent = RecentRequests(window_sec=60, keep=10)
    for i in range(100_000):  # 100,000 requests over the last 10 s
        recent.add(_ok(90.0 + i / 10_000, ms=float(1 + i % 200)))
    snap = recent.snapshot(100.0)
    assert snap["window"]["requests"] == 100_000
    assert snap["window"]["per_sec"] == round(100_000 / 60, 3)
    assert len(snap["requests"]) == 10
    assert len(recent.export()["seconds"]) <= 60
    assert max(len(s[3]) for s in recent.export()["seconds"]) <= 200


def test_other_processes_merge_as_one_window() -> None:
    mine, theirs = RecentRequests(window_sec=5), RecentRequests(window_sec=5)
    for ms in (10.0, 20.0, 30.0):
        mine.add(_ok(99.2, ms=ms, model="mine"))
    theirs.add(FinishedRequest(at=97.0, ms=5.0, status="upstream_error"))
    for ms in (40.0, 50.0, 60.0, 70.0, 80.0):
        theirs.add(_ok(99.6, ms=ms, model="theirs"))
    exported = orjson.loads(orjson.dumps(theirs.export()))  # as it travels through Redis
    snap = mine.snapshot(100.0, others=[exported])
    assert snap["window"] == {"seconds": 5, "requests": 9, "errors": 1, "per_sec": 1.8,
                              "latency_ms": {"p50": 40.0, "p90": 80.0, "p99": 80.0}}
    assert [r["model"] for r in snap["requests"]] == ["theirs"] * 5 + ["mine"] * 3 + [None]
    assert snap["series"][-2] == {"t": 99, "requests": 8, "errors": 0, "p50_ms": 40.0}
    assert snap["series"][-4]["errors"] == 1
    assert mine.snapshot(100.0)["window"]["requests"] == 3  # its own alone


def test_seconds_outside_the_window_are_left_out() -> None:
    recent = RecentRequests(window_sec=3)
    other = {"requests": [], "seconds": [[50, 7, 0, [[1.0, 7]]], [150, 2, 0, [[1.0, 2]]]]}
    assert recent.snapshot(100.0, others=[other])["window"]["requests"] == 0


@given(st.floats(1e-3, 1e7, allow_nan=False))
def test_a_latency_is_bucketed_within_5_percent(ms: float) -> None:
    assert abs(latency_key(ms) - ms) <= 0.05 * ms


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=50),
       st.integers(1, 100))
def test_a_percentile_is_one_of_the_values_and_ranks_right(values: list[float], q: int) -> None:
    ordered = sorted(values)
    found = percentile(ordered, q)
    assert found in ordered
    at_or_below = sum(1 for v in ordered if v <= found)
    assert at_or_below >= q / 100 * len(ordered)


def test_a_request_its_client_left_is_counted_but_not_as_a_failure() -> None:
    recent = RecentRequests(window_sec=10)
    for status in ("ok", "cancelled", "upstream_timeout"):
        recent.add(FinishedRequest(at=100.0, ms=5.0, status=status))
    snap = recent.snapshot(now=100.0)
    assert (snap["window"]["requests"], snap["window"]["errors"]) == (3, 1)
    assert snap["series"][-1]["errors"] == 1
