"""The newest entries by key, kept without a request ever paying for the whole set.

The router remembers each request it answered for a while, by request id: the routing
decision, for feedback (:class:`engine.runtime.policy.RoutingPolicy`, the last 100,000), and
the trained router's reading of it, for online learning (:class:`engine.runtime.learning.
Learning`, the last 20,000). An ``OrderedDict`` trimmed with ``popitem(last=False)`` kept
them, but a dict rebuilds its whole table whenever the table fills, and with one entry in and
one out per request it fills again every few ten thousand requests. The request that inserts
then rebuilds every entry (and the ``OrderedDict`` its index of them) with the event loop
stopped: milliseconds at 20,000 entries, tens of them at 100,000 (BENCHMARKS.md, 18e).

Here entries go into small dicts (generations) of at most ``chunk`` keys. A full generation
is set aside whole, and the oldest is dropped whole once the others hold ``size`` entries
without it. No table ever holds more than ``chunk`` keys, so no insert rebuilds, and no drop
frees, more than ``chunk`` entries. The newest ``size`` entries set are always kept, and
fewer than ``size + 2 * chunk``. Setting a key again is a new entry (the router's request ids
are unique): a lookup reads the generations newest first, so it answers the newest value.

>>> kept = Remembered(5, chunk=2)
>>> for i in range(9):
...     kept[f"req_{i}"] = i
>>> [kept.get(f"req_{i}") for i in range(9)]
[None, None, 2, 3, 4, 5, 6, 7, 8]
>>> len(kept)
7
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["Remembered"]

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")

#: A generation's keys: freeing 1,024 remembered beliefs (a tuple with an array each) takes
#: about 0.25 ms of CPU, against 10 ms for an OrderedDict's rebuild at 100,000 entries.
CHUNK = 1024
_MISSING = object()


class Remembered(Generic[_K, _V]):
    """At least the newest ``size`` entries set, by key (see the module docstring)."""

    __slots__ = ("_chunk", "_current", "_full", "_keep")

    def __init__(self, size: int, *, chunk: int = CHUNK) -> None:
        if size < 1 or chunk < 1:
            raise ValueError("size and chunk must be positive")
        self._chunk = min(chunk, size)
        #: Full generations kept beside the current one: together they hold ``size``.
        self._keep = -(-size // self._chunk)
        self._current: dict[_K, _V] = {}
        self._full: deque[dict[_K, _V]] = deque()

    def __setitem__(self, key: _K, value: _V) -> None:
        current = self._current
        current[key] = value
        if len(current) >= self._chunk:
            self._full.append(current)
            self._current = {}
            if len(self._full) > self._keep:
                self._full.popleft()

    def get(self, key: _K) -> _V | None:
        """The newest value set for ``key``, or None if it is not (or no longer) kept."""
        value = self._current.get(key, _MISSING)
        if value is _MISSING:
            for generation in reversed(self._full):
                value = generation.get(key, _MISSING)
                if value is not _MISSING:
                    break
            else:
                return None
        return value  # type: ignore[return-value]

    def __len__(self) -> int:
        """Entries held (a key set again in a newer generation counts in each)."""
        return len(self._current) + sum(len(generation) for generation in self._full)
