"""The three parts of a labelled pair file the cache's similarity function is built and judged
on, chosen by a hash of each pair's id so that the split is the same on every machine and
needs no file of its own.

A rule designed while looking at some pairs will look better on them than on pairs it has
never seen; a threshold chosen on some pairs likewise. So:

* ``design`` (half of the pairs): where rules are proposed, kept or dropped;
* ``choose`` (a quarter): where the default threshold is chosen, rules fixed;
* ``report`` (a quarter): where the figures users read are measured. Nothing is tuned here:
  a figure that disappoints is reported, not fixed on these pairs.

The fractions and the hash are part of the contract: changing either reshuffles every pair
and voids the ``report`` figures measured before (they would include pairs that were tuned
on).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Literal, TypeVar

__all__ = ["SPLITS", "Split", "split_of", "split_rows"]

Split = Literal["design", "choose", "report"]

#: Each split and the cumulative share of the hash range that ends it.
SPLITS: tuple[tuple[Split, float], ...] = (("design", 0.5), ("choose", 0.75), ("report", 1.0))

_Row = TypeVar("_Row", bound=Mapping[str, object])


def split_of(pair_id: str) -> Split:
    """The split ``pair_id`` belongs to: BLAKE2b of the id (no key, 8 bytes) as a fraction of
    2**64, against the cumulative shares of :data:`SPLITS`.

    >>> [split_of(f"qqp-{n:05d}") for n in (65, 1, 3, 3)]
    ['design', 'choose', 'report', 'report']
    """
    digest = hashlib.blake2b(pair_id.encode(), digest_size=8).digest()
    position = int.from_bytes(digest, "big") / 2**64
    return next(name for name, end in SPLITS if position < end)


def split_rows(rows: Iterable[_Row], split: Split) -> list[_Row]:
    """The rows (each with an ``"id"``) that fall in ``split``."""
    return [row for row in rows if split_of(str(row["id"])) == split]
