"""engine.core.remembered: the newest entries by key, against the OrderedDict it replaces."""

from __future__ import annotations

from collections import OrderedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.remembered import Remembered


@given(size=st.integers(1, 40), chunk=st.integers(1, 16),
       keys=st.lists(st.integers(0, 60), max_size=300))
def test_the_newest_entries_answer_their_newest_value(
    size: int, chunk: int, keys: list[int]
) -> None:
    """Whatever is set, each key among the newest ``size`` entries set answers the value it
    was set to last; a key never set answers None; fewer than ``size + 2 * chunk`` are held."""
    kept: Remembered[int, tuple[int, int]] = Remembered(size, chunk=chunk)
    newest: dict[int, tuple[int, int]] = {}
    for at, key in enumerate(keys):
        kept[key] = newest[key] = (key, at)
        for known in keys[max(0, at + 1 - size):at + 1]:
            assert kept.get(known) == newest[known]
        assert len(kept) < size + 2 * min(chunk, size)
    for key in range(-1, 62):
        if key not in newest:
            assert kept.get(key) is None


@given(size=st.integers(1, 40), chunk=st.integers(1, 16), n=st.integers(0, 300))
def test_with_unique_keys_it_keeps_what_the_trimmed_ordered_dict_kept_and_a_little_more(
    size: int, chunk: int, n: int
) -> None:
    """Request ids are unique: then every entry the OrderedDict trimmed to ``size`` kept is
    kept with its value, and an entry is forgotten once ``size + 2 * chunk`` newer ones were
    set."""
    kept: Remembered[int, int] = Remembered(size, chunk=chunk)
    reference: OrderedDict[int, int] = OrderedDict()
    for key in range(n):
        kept[key] = reference[key] = -key
        if len(reference) > size:
            reference.popitem(last=False)
    assert {key: kept.get(key) for key in reference} == dict(reference)
    for key in range(n - size - 2 * min(chunk, size)):
        assert kept.get(key) is None


def test_falsy_values_are_answered() -> None:
    """The default tenant is "": a kept falsy value is not "not kept"."""
    kept: Remembered[str, str] = Remembered(3, chunk=2)
    kept["req_a"] = ""
    kept["req_b"] = "t"
    kept["req_c"] = ""
    assert [kept.get(k) for k in ("req_a", "req_b", "req_c", "req_d")] == ["", "t", "", None]


def test_no_table_holds_more_than_a_chunk() -> None:
    """The point of it: with 100,000 kept, no dict inside ever holds more than a chunk of
    keys, so no single insert rebuilds (or frees) more than that many entries."""
    kept: Remembered[int, int] = Remembered(100_000, chunk=1024)
    largest = 0
    for i in range(250_000):
        kept[i] = i
        largest = max(largest, len(kept._current))
    assert largest <= 1024
    assert all(len(generation) <= 1024 for generation in kept._full)
    assert kept.get(250_000 - 100_000) == 150_000 and kept.get(0) is None


@pytest.mark.parametrize(("size", "chunk"), [(0, 5), (5, 0)])
def test_sizes_must_be_positive(size: int, chunk: int) -> None:
    with pytest.raises(ValueError):
        Remembered(size, chunk=chunk)
