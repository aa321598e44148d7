"""Threshold calibration (engine.core.routing.calibration), sans-IO: named cases and Hypothesis
properties.

Scores in these reports sit between integer points (``0.275`` is 27.5 on the 0-100 scale)
unless a case is about an exact boundary, so band membership never hangs on float rounding.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.routing.calibration import (
    THRESHOLD_TIERS,
    Adjustment,
    Report,
    Tally,
    calibrate,
    calibrate_threshold,
    millionths,
    read_windows,
)

TIER1 = {"name": "tier1_max", "tier": 1, "target": 0.8, "min_samples": 20, "max_step": 5,
         "band": 10}


def tier1(reports: list[Report], *, current: int = 30, **overrides: Any) -> Adjustment | None:
    return calibrate_threshold(reports, **(TIER1 | {"current": current} | overrides))


def many(score: float, quality: float, n: int = 30, *, tier: int = 1) -> list[Report]:
    return [Report(score, tier, quality)] * n


# ---- one threshold -----------------------------------------------------------------------------


def test_good_band_raises_by_max_step() -> None:
    change = tier1(many(0.275, 0.95))
    assert change is not None
    assert (change.name, change.old, change.new) == ("tier1_max", 30, 35)
    assert change.samples == 30
    assert change.quality is not None and abs(change.quality - 0.95) < 1e-9
    assert "meets" in change.reason


def test_poor_band_lowers_by_max_step() -> None:
    change = tier1(many(0.275, 0.4))
    assert change is not None
    assert (change.old, change.new) == (30, 25)
    assert change.quality is not None and change.quality < 0.8
    assert "falls short" in change.reason


def test_too_few_reports_move_nothing() -> None:
    assert tier1(many(0.275, 0.95, 19)) is None
    assert tier1(many(0.275, 0.4, 19)) is None
    assert tier1([]) is None


def test_min_samples_reports_are_enough() -> None:
    assert tier1(many(0.275, 0.95, 20)) is not None
    assert tier1(many(0.275, 0.4, 20)) is not None


def test_reports_outside_the_band_are_not_evidence() -> None:
    # 5.5 is below every candidate band (T - 10, T] for T in 25..35.
    assert tier1(many(0.055, 0.1, 100)) is None


def test_reports_of_other_tiers_are_ignored() -> None:
    assert tier1(many(0.275, 0.1, 100, tier=2)) is None
    change = tier1(many(0.275, 0.1, 100, tier=2) + many(0.275, 0.95, 20))
    assert change is not None and change.new == 35


def test_raises_to_the_largest_candidate_that_meets_the_target() -> None:
    # Good answers at 27.5, poor ones at 32.5, band 5: candidates 28..32 hold only the good
    # reports, 33..35 only the poor ones. The cheapest setting that meets the target is 32.
    reports = many(0.275, 0.95) + many(0.325, 0.2)
    change = tier1(reports, band=5)
    assert change is not None and change.new == 32


def test_never_moves_more_than_max_step() -> None:
    # Excellent quality everywhere: still one bounded step up.
    reports = [Report(s / 1000, 1, 1.0) for s in range(0, 1000, 3) for _ in range(5)]
    change = tier1(reports, max_step=3, min_samples=5)
    assert change is not None and change.new == 33
    # Dreadful quality everywhere: one bounded step down.
    reports = [Report(s / 1000, 1, 0.0) for s in range(0, 1000, 3) for _ in range(5)]
    change = tier1(reports, max_step=3, min_samples=5)
    assert change is not None and change.new == 27


def test_already_at_the_best_setting_keeps_it() -> None:
    # Good band, but the threshold is already at its ceiling.
    assert tier1(many(0.975, 0.95), current=100) is None
    assert tier1(many(0.275, 0.95), current=30, high=30) is None


def test_lowering_stops_at_the_floor() -> None:
    change = tier1(many(0.015, 0.1), current=3)
    assert change is not None and change.new == 0
    assert tier1(many(0.0, 0.1), current=0) is None


def test_quality_exactly_at_target_meets_it() -> None:
    # 25 reports of exactly 0.9 against a target of 0.9 meet it (a naive float mean of them
    # comes out a hair below 0.9): the threshold rises, it must not fall.
    change = tier1(many(0.275, 0.9, 25), target=0.9)
    assert change is not None and change.new == 35


def test_report_at_exactly_the_threshold_is_in_its_band() -> None:
    # A request scored 28 with tier1_max 28 went to tier 1; its report (score 0.28) is the
    # hardest request tier 1 takes, so it belongs to the band at 28, float rounding or not.
    change = tier1(many(0.28, 0.1), current=28)
    assert change is not None and change.new == 23
    change = tier1(many(0.29, 0.1), current=29)
    assert change is not None and change.new == 24


# ---- both thresholds ---------------------------------------------------------------------------


def both(reports: list[Report], t1: int = 30, t2: int = 70) -> list[Adjustment]:
    return calibrate(reports, tier1_max=t1, tier2_max=t2, target=0.8, min_samples=20,
                     max_step=5, band=10)


def test_no_feedback_no_changes() -> None:
    assert both([]) == []


def test_both_thresholds_move_independently() -> None:
    reports = many(0.275, 0.95) + many(0.675, 0.3, tier=2)
    changes = {c.name: (c.old, c.new) for c in both(reports)}
    assert changes == {"tier1_max": (30, 35), "tier2_max": (70, 65)}


def test_tier1_never_rises_past_tier2() -> None:
    changes = both(many(0.275, 0.95), t1=30, t2=32)
    assert [(c.name, c.new) for c in changes] == [("tier1_max", 32)]


def test_tier2_never_falls_below_tier1() -> None:
    changes = both(many(0.315, 0.2, tier=2), t1=30, t2=32)
    assert [(c.name, c.new) for c in changes] == [("tier2_max", 30)]


def test_tier2_floor_is_the_new_tier1() -> None:
    # tier 1 rises to 35 first; tier 2 may then come down only to 35, not to 31.
    reports = many(0.275, 0.95) + many(0.355, 0.1, tier=2)
    changes = {c.name: c.new for c in both(reports, t1=30, t2=36)}
    assert changes == {"tier1_max": 35, "tier2_max": 35}


# ---- properties --------------------------------------------------------------------------------

reports_st = st.lists(
    st.builds(
        Report,
        score=st.one_of(st.integers(0, 100).map(lambda k: k / 100),
                        st.floats(0, 1, allow_nan=False)),
        tier=st.integers(1, 3),
        quality=st.one_of(st.sampled_from([0.0, 0.5, 0.7, 0.8, 0.9, 1.0]),
                          st.floats(0, 1, allow_nan=False)),
    ),
    max_size=120,
)


@st.composite
def thresholds_st(draw: st.DrawFn) -> tuple[int, int]:
    t1 = draw(st.integers(0, 100))
    return t1, draw(st.integers(t1, 100))


#: Any reports under any settings calibration accepts.
any_calibration = given(
    reports=reports_st,
    thresholds=thresholds_st(),
    target=st.floats(0, 1, allow_nan=False),
    min_samples=st.integers(1, 30),
    max_step=st.integers(1, 50),
    band=st.integers(1, 100),
)


@settings(max_examples=300, deadline=None)
@any_calibration
def test_any_burst_moves_each_threshold_at_most_max_step(
    reports: list[Report], thresholds: tuple[int, int], target: float, min_samples: int,
    max_step: int, band: int,
) -> None:
    t1, t2 = thresholds
    changes = calibrate(reports, tier1_max=t1, tier2_max=t2, target=target,
                        min_samples=min_samples, max_step=max_step, band=band)
    now = {"tier1_max": t1, "tier2_max": t2}
    for change in changes:
        assert change.old == now[change.name]
        assert change.new != change.old
        assert abs(change.new - change.old) <= max_step
        assert change.samples >= min_samples
        assert change.quality is not None
        # the band's mean against the target, both in whole millionths
        if change.new > change.old:
            assert change.quality >= millionths(target) / 1_000_000
        else:
            assert change.quality <= millionths(target) / 1_000_000
        now[change.name] = change.new
    assert [c.name for c in changes] in ([], ["tier1_max"], ["tier2_max"],
                                         ["tier1_max", "tier2_max"])
    assert 0 <= now["tier1_max"] <= now["tier2_max"] <= 100
    if len(reports) < min_samples:
        assert changes == []


@settings(max_examples=200, deadline=None)
@given(reports=reports_st, thresholds=thresholds_st(), target=st.floats(0, 1))
def test_good_news_never_lowers_and_bad_news_never_raises(
    reports: list[Report], thresholds: tuple[int, int], target: float
) -> None:
    t1, t2 = thresholds
    good = [Report(r.score, r.tier, max(r.quality, target)) for r in reports]
    for change in calibrate(good, tier1_max=t1, tier2_max=t2, target=target, min_samples=3,
                            max_step=5, band=10):
        assert change.new > change.old, change
    bad = [Report(r.score, r.tier, max(0.0, min(r.quality, target - 0.01))) for r in reports]
    if target >= 0.01:
        for change in calibrate(bad, tier1_max=t1, tier2_max=t2, target=target,
                                min_samples=3, max_step=5, band=10):
            assert change.new < change.old, change


@settings(max_examples=300, deadline=None)
@any_calibration
def test_the_reports_outside_the_read_windows_change_nothing(
    reports: list[Report], thresholds: tuple[int, int], target: float, min_samples: int,
    max_step: int, band: int,
) -> None:
    """A store may give calibration only the counts ``read_windows`` names."""
    t1, t2 = thresholds
    settings = {"tier1_max": t1, "tier2_max": t2, "target": target,
                "min_samples": min_samples, "max_step": max_step, "band": band}
    windows = read_windows(tier1_max=t1, tier2_max=t2, max_step=max_step, band=band)
    read = Tally.of(reports).within(windows)
    assert calibrate(read, **settings) == calibrate(reports, **settings)


# ---- the tally ---------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(reports=reports_st, tier=st.integers(1, 3), top=st.integers(0, 100),
       band=st.integers(1, 100))
def test_a_band_of_the_tally_is_the_reports_in_it(
    reports: list[Report], tier: int, top: int, band: int
) -> None:
    """The tally's band holds exactly the reports of the tier whose score x 100, rounded to
    1e-6, is above ``top - band`` and at most ``top``."""
    inside = [r for r in reports
              if r.tier == tier and top - band < round(r.score * 100, 6) <= top]
    assert Tally.of(reports).band(tier, top, band) == (
        len(inside), sum(millionths(r.quality) for r in inside))


def test_a_tally_adds_up_in_any_order_and_forgets_a_tier() -> None:
    reports = [Report(0.1 * k % 1, 1 + k % 2, (k * 0.37) % 1) for k in range(200)]
    assert Tally.of(reports) == Tally.of(reversed(reports))
    tally = Tally.of(reports)
    tally.clear(2)
    assert tally == Tally.of(r for r in reports if r.tier != 2)
    assert all(tier == 1 for tier, _ in tally.cells())


@settings(max_examples=150, deadline=None)
@given(
    reports=st.lists(st.builds(
        Report, score=st.floats(0, 1, allow_nan=False), tier=st.integers(1, 3),
        quality=st.sampled_from([0.1, 0.6, 0.8, 0.9, 0.95, 1.0])), max_size=300),
    thresholds=thresholds_st(), target=st.sampled_from([0.7, 0.8, 0.9]),
    min_samples=st.integers(1, 12), max_step=st.integers(1, 10), band=st.integers(1, 40),
)
def test_a_tally_kept_as_reports_arrive_calibrates_as_the_unspent_reports_do(
    reports: list[Report], thresholds: tuple[int, int], target: float, min_samples: int,
    max_step: int, band: int,
) -> None:
    """What a store does (add each report to its tally, calibrate on the tally, clear the tier
    of each threshold that moved) decides as calibrating on every report since the
    threshold last moved does."""
    settings = {"target": target, "min_samples": min_samples, "max_step": max_step,
                "band": band}
    now = {"tier1_max": thresholds[0], "tier2_max": thresholds[1]}
    tally = Tally()
    spent = {1: 0, 2: 0}  # per tier, the reports spent on moving its threshold
    for i, report in enumerate(reports, start=1):
        tally.add(report)
        unspent = [r for k, r in enumerate(reports[:i], start=1)
                   if k > spent.get(r.tier, 0)]
        changes = calibrate(tally, **now, **settings)
        assert changes == calibrate(unspent, **now, **settings)
        for change in changes:
            now[change.name] = change.new
            tally.clear(THRESHOLD_TIERS[change.name])
            spent[THRESHOLD_TIERS[change.name]] = i
