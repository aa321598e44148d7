"""Feature hashing for the trained router: a text's words, word bigrams and character
n-grams as 32-bit hashes, and a weighted bag of them in a fixed number of buckets. Sans-IO,
numpy only. The hashes are part of a saved model's meaning: a change here changes every
trained router's scores (``router.json`` stores weights per bucket), so they must stay
bit-for-bit what they are.

The arithmetic is on ``uint32`` arrays, whose products and sums wrap modulo 2**32: the
32-bit hashes the model was trained on, without masking a wider type after each step.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence

import numpy as np

__all__ = ["bag", "text_hashes"]

_WORD = re.compile(r"\w+")
_U32 = np.uint32
_SHIFT_13, _SHIFT_16 = _U32(13), _U32(16)
_MURMUR_1, _MURMUR_2 = _U32(0x85EBCA6B), _U32(0xC2B2AE35)
_GOLDEN, _FNV = _U32(0x9E3779B1), _U32(0x01000193)


def _mix(h: np.ndarray) -> np.ndarray:
    """A 32-bit avalanche (murmur3's finaliser) over a uint32 array, in place."""
    h ^= h >> _SHIFT_16
    h *= _MURMUR_1
    h ^= h >> _SHIFT_13
    h *= _MURMUR_2
    h ^= h >> _SHIFT_16
    return h


def text_hashes(text: str, bigrams: bool, ngrams: Sequence[int]
                ) -> tuple[np.ndarray, np.ndarray]:
    """``(words, chars)`` of ``text``, as uint32. ``words``: the CRC-32 of each ``\\w+``
    word, then (``bigrams``) a mixed hash of each pair of neighbours. ``chars``: a hash of
    every UTF-8 byte n-gram for each length in ``ngrams``, with the length mixed in. One
    avalanche runs over the word pairs and the n-grams together (it is elementwise, so as if
    mixed one by one): a short text's hashing is a few dozen numpy calls on small arrays."""
    crcs = _word_crcs(text)
    pairs = _pairs(crcs) if bigrams and len(crcs) >= 2 else np.zeros(0, _U32)
    mixed = _mix(np.concatenate([pairs, *_grams(text, ngrams)]))
    words = np.concatenate([crcs, mixed[: len(pairs)]]) if len(pairs) else crcs
    return words, mixed[len(pairs) :]


def _word_crcs(text: str) -> np.ndarray:
    """CRC-32 of each ``\\w+`` word of ``text``."""
    words = _WORD.findall(text)
    return np.fromiter((zlib.crc32(w.encode()) for w in words), _U32, len(words))


def _pairs(crcs: np.ndarray) -> np.ndarray:
    """Each pair of neighbouring word hashes combined, before the avalanche."""
    pair = crcs[:-1] * _GOLDEN
    pair += crcs[1:]
    pair += _U32(1)
    return pair


def _grams(text: str, ngrams: Sequence[int]) -> list[np.ndarray]:
    """Each length's n-gram hashes of ``text``, tagged with the length, before the avalanche."""
    b = np.frombuffer(text.encode(), np.uint8).astype(_U32)
    tagged = []
    h = b
    for n in range(2, max(ngrams, default=0) + 1):
        if len(b) < n:
            break
        # the hash of each n-gram extends its (n-1)-gram prefix's by one byte (FNV-style)
        h = h[:-1] * _FNV
        h += b[n - 1 :]
        if n in ngrams:
            tagged.append(h ^ _U32(n << 24))
    return tagged


def bag(parts: Sequence[tuple[np.ndarray, float]], buckets: int, offset: int = 0
        ) -> tuple[np.ndarray, np.ndarray]:
    """Weighted bucket counts of hashes, log-scaled, with unit norm: (indices, values), the
    indices ``offset`` on (where the block starts in a feature vector)."""
    mask = _U32(buckets - 1)
    parts = [(h, w) for h, w in parts if len(h)]
    if not parts:
        return np.zeros(0, np.intp), np.zeros(0)
    if len(parts) == 1:
        keys, w = parts[0][0] & mask, parts[0][1]
        keys.sort()
        starts = _run_starts(keys)
        values = np.log1p((starts[1:] - starts[:-1]) * w)
    else:
        # ``np.unique`` and ``np.bincount`` by hand (a third of their cost on a prompt's few
        # hundred hashes): a stable sort keeps each bucket's weights in input order, so the
        # sums are bincount's to the last bit
        hashes = np.concatenate([h & mask for h, _ in parts])
        order = np.argsort(hashes, kind="stable")
        keys = hashes[order]
        starts = _run_starts(keys)
        weights = np.concatenate([np.full(len(h), w) for h, w in parts])[order]
        values = np.log1p(np.add.reduceat(weights, starts[:-1]))
    indices = np.add(keys[starts[:-1]], offset, dtype=np.intp)
    return indices, values / math.sqrt(float(values @ values))


def _run_starts(keys: np.ndarray) -> np.ndarray:
    """Where each run of equal values of the sorted ``keys`` starts, and ``len(keys)``."""
    edge = np.empty(len(keys) + 1, bool)
    edge[0] = edge[-1] = True
    np.not_equal(keys[1:], keys[:-1], out=edge[1:-1])
    return edge.nonzero()[0]
