"""The online state's snapshot (engine.core.routing.snapshot): it keeps and saves only what
scores comparisons for the floors; a state saved in the new form reads back bit for bit, one
saved when the snapshot was a whole state reads back to the same scores, and learning goes on
from either exactly as from the state that was saved; a damaged snapshot is refused."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from engine.core.routing.floor import BLOCK
from engine.core.routing.learned import DENSE_NAMES
from engine.core.routing.mix import Mix
from engine.core.routing.online import OnlineSettings, OnlineState, learn, predict
from engine.core.routing.regions import Regions
from engine.core.routing.snapshot import Snapshot

SETTINGS = OnlineSettings()
_LENGTH = DENSE_NAMES.index("log_chars_last")
VECTOR = 6
INPUTS = 1 + len(DENSE_NAMES) + VECTOR


def _reports(count: int, seed: int) -> list[dict[str, Any]]:
    """Comparisons (and some plain reports) whose gain the shipped log-odds miss and the
    inputs, the length and the regions tell: hard requests are long, and most come from one
    of three parts of the vector space."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        kind = int(rng.integers(3))
        dense = rng.standard_normal(len(DENSE_NAMES))
        z = float(rng.standard_normal())
        vector = 3.0 * np.eye(VECTOR)[kind] + 0.2 * rng.standard_normal(VECTOR)
        x = np.concatenate([[z], dense / np.sqrt(len(DENSE_NAMES)), vector])
        hard = rng.random() < (0.4 if dense[_LENGTH] > 0 else 0.0) + (0.55 if kind == 0 else 0.05)
        out.append({"logit": z, "inputs": x, "tier": 1, "quality": 0.0 if hard else 1.0,
                    "other": 1.0 if k % 5 else None, "reporter": f"r{k % 3}",
                    "known": 0.1 * (k % 4)})
    return out


def _teach(state: OnlineState, reports: list[dict[str, Any]]) -> list[OnlineState]:
    """Every state on the way (the last is the newest)."""
    states = [state]
    for r in reports:
        state, _ = learn(state, r["logit"], r["inputs"], tier=r["tier"], quality=r["quality"],
                         other=r["other"], reporter=r["reporter"], settings=SETTINGS,
                         known=r["known"])
        states.append(state)
    return states


def _taught() -> tuple[OnlineState, OnlineState]:
    """A state after a few snapshots, and the state the last of them was taken from; a
    plain report of a new kind of request since then made a new region."""
    reports = _reports(6 * BLOCK + 11, seed=1)
    new = np.concatenate([[0.0], np.zeros(len(DENSE_NAMES)), 3.0 * np.eye(VECTOR)[-1]])
    reports.append(dict(reports[-1], inputs=new, other=None))
    states = _teach(OnlineState.fresh("m", INPUTS), reports)
    last = states[-1]
    taken = next(s for s in states if s.frozen is not None and s.frozen is last.frozen)
    return last, replace(taken, frozen=None)


def _bits(a: Any) -> bytes:
    return np.ascontiguousarray(a, "<f8").tobytes()


def _same(a: Snapshot | None, b: Snapshot | None) -> bool:
    """Bit for bit the same numbers, everything scoring reads."""
    assert a is not None and b is not None
    assert a.mix is not None and b.mix is not None
    assert a.regions is not None and b.regions is not None
    return (_bits(a.weights) == _bits(b.weights)
            and _bits([a.gate, a.mix_gate]) == _bits([b.gate, b.mix_gate])
            and _bits(a.mix.weights) == _bits(b.mix.weights)
            and _bits([a.mix.centre, a.mix.spread, a.mix.mix_centre, a.mix.mix_spread])
            == _bits([b.mix.centre, b.mix.spread, b.mix.mix_centre, b.mix.mix_spread])
            and a.regions.leaders.shape == b.regions.leaders.shape
            and _bits(a.regions.leaders) == _bits(b.regions.leaders)
            and _bits(a.regions.sums) == _bits(b.regions.sums))


def _earlier_form(taken: OnlineState) -> dict[str, Any]:
    """The snapshot as states saved it before it had a form of its own: the whole state it
    was taken from, without its windows' rows, reporters or a snapshot."""
    assert taken.regions is not None
    regions = Regions(taken.regions.leaders, taken.regions.sums, np.zeros((0, 4)),
                      taken.regions.gate, np.zeros(0))
    return replace(taken, recent=np.zeros((0, 4)), recent_blocks=np.zeros(0), reporters={},
                   regions=regions, frozen=None).to_dict()


def _saved(state: OnlineState) -> str:
    return json.dumps(state.to_dict())


def test_a_snapshot_keeps_what_scoring_reads_and_nothing_else() -> None:
    state, taken = _taught()
    frozen = state.frozen
    assert frozen is not None and frozen.regions is not None
    assert frozen.weights is taken.weights and frozen.mix is taken.mix
    assert (frozen.gate, frozen.mix_gate) == (taken.gate, taken.mix_gate)
    assert frozen.regions.recent is None
    saved = state.to_dict()["frozen"]
    assert set(saved) == {"weights", "gate", "mix_gate", "mix", "regions"}
    # The live leaders only grew since: the snapshot's are saved as their count.
    assert state.regions is not None and taken.regions is not None
    assert saved["regions"]["leaders"] == len(taken.regions.leaders) == 3
    assert len(state.regions.leaders) == 4


def test_a_state_reads_back_bit_for_bit_and_learns_on_alike() -> None:
    state, _ = _taught()
    again = OnlineState.from_dict(json.loads(_saved(state)))
    assert _saved(again) == _saved(state)
    assert _same(again.frozen, state.frozen)
    more = _reports(2 * BLOCK + 3, seed=6)
    assert _saved(_teach(again, more)[-1]) == _saved(_teach(state, more)[-1])


def test_a_state_saved_with_a_whole_state_as_its_snapshot_reads_back_to_the_same_scores() -> None:
    state, taken = _taught()
    # Every floor open when it was taken, so that its openings read back too.
    assert taken.regions is not None
    assert taken.gate == taken.mix_gate == taken.regions.gate == 1.0
    saved = json.loads(_saved(state))
    saved["frozen"] = json.loads(json.dumps(_earlier_form(taken)))
    assert {"squares", "comparisons", "reports"} <= set(saved["frozen"])
    old = OnlineState.from_dict(saved)
    assert _same(old.frozen, state.frozen)
    # What the earlier form scored with: the state it saved, its mix refitted on load.
    earlier = OnlineState.from_dict(saved["frozen"])
    assert earlier.mix is not None and old.frozen is not None and old.frozen.mix is not None
    assert _bits(earlier.weights) == _bits(old.frozen.weights)
    assert _bits(earlier.mix.weights) == _bits(old.frozen.mix.weights)
    assert (earlier.gate, earlier.mix_gate) == (old.frozen.gate, old.frozen.mix_gate)
    x = _reports(1, seed=7)[0]["inputs"]
    assert predict(replace(old.frozen, regions=None), 0.3, x, SETTINGS) == predict(
        replace(earlier, regions=None), 0.3, x, SETTINGS)
    # Saved again, it takes the new form; learning goes on exactly as from the live state.
    assert set(old.to_dict()["frozen"]) == {"weights", "gate", "mix_gate", "mix", "regions"}
    more = _reports(2 * BLOCK + 3, seed=6)
    assert _saved(_teach(old, more)[-1]) == _saved(_teach(state, more)[-1])


def test_the_new_form_is_smaller() -> None:
    state, taken = _taught()
    saved = state.to_dict()
    earlier = dict(saved, frozen=_earlier_form(taken))
    assert len(json.dumps(saved["frozen"])) * 3 < len(json.dumps(earlier["frozen"]))


def test_leaders_that_are_not_the_live_ones_first_rows_are_saved_in_full() -> None:
    state, _ = _taught()
    assert state.frozen is not None and state.frozen.regions is not None
    moved = state.frozen.regions.leaders[::-1].copy()
    other = replace(state.frozen, regions=Regions(moved, state.frozen.regions.sums))
    assert state.regions is not None
    saved = json.loads(json.dumps(other.to_dict(state.regions.leaders)))
    assert isinstance(saved["regions"]["leaders"], str)
    again = Snapshot.from_dict(saved, state.regions.leaders)
    assert _same(again, other)
    # Without live regions at all, too.
    assert _same(Snapshot.from_dict(json.loads(json.dumps(other.to_dict()))), other)


@pytest.mark.parametrize("damage", [
    lambda f: f.update(gate=1.5),
    lambda f: f.update(mix_gate=-0.1),
    lambda f: f.update(weights="AAAA"),
    lambda f: f["mix"].update(weights=[0.1, 0.2]),
    lambda f: f["mix"].update(weights=[0.1, 0.2, 0.3, 0.4]),
    lambda f: f["regions"].update(leaders=10_000),
    lambda f: f["regions"].update(leaders=-1),
    lambda f: f["regions"].update(leaders=2.0),
    lambda f: f["regions"].update(sums="AAAA"),
    lambda f: f["regions"].update(dim=VECTOR + 1),
])
def test_a_damaged_snapshot_is_refused(damage: Any) -> None:
    state, _ = _taught()
    saved = json.loads(_saved(state))
    damage(saved["frozen"])
    with pytest.raises(ValueError):
        OnlineState.from_dict(saved)


def test_a_count_of_leaders_needs_the_live_regions() -> None:
    state, _ = _taught()
    saved = json.loads(_saved(state))
    del saved["regions"]
    with pytest.raises(ValueError):
        OnlineState.from_dict(saved)


def test_a_mix_reads_back_bit_for_bit() -> None:
    state, _ = _taught()
    assert state.mix is not None
    again = Mix.from_dict(json.loads(json.dumps(state.mix.to_dict())))
    assert _bits(again.weights) == _bits(state.mix.weights)
    assert again.logit(0.7, -0.2) == state.mix.logit(0.7, -0.2)
