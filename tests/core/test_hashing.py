"""The trained router's feature hashes (``engine.core.routing.hashing``) are part of a saved
model's meaning: they stay what the shipped router was trained on. Checked against the
arithmetic they were first written in (64-bit integers masked to 32 bits after each step),
on any text, and pinned on a few.
"""

from __future__ import annotations

import hashlib
import re
import zlib

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.routing.hashing import bag, text_hashes

_MASK = np.uint64(0xFFFFFFFF)


def _mix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(16))
    h = (h * np.uint64(0x85EBCA6B)) & _MASK
    h = h ^ (h >> np.uint64(13))
    h = (h * np.uint64(0xC2B2AE35)) & _MASK
    return h ^ (h >> np.uint64(16))


def _word_hashes64(text: str, bigrams: bool) -> np.ndarray:
    words = re.findall(r"\w+", text)
    h = np.array([zlib.crc32(w.encode()) for w in words], np.uint64)
    if bigrams and len(h) > 1:
        h = np.concatenate([h, _mix64((h[:-1] * np.uint64(0x9E3779B1) + h[1:] + np.uint64(1))
                                      & _MASK)])
    return h


def _char_hashes64(text: str, ngrams: tuple[int, ...]) -> np.ndarray:
    b = np.frombuffer(text.encode(), np.uint8).astype(np.uint64)
    out, h = [], b
    for n in range(2, max(ngrams) + 1):
        if len(b) < n:
            break
        h = (h[:-1] * np.uint64(0x01000193) + b[n - 1 :]) & _MASK
        if n in ngrams:
            out.append(_mix64(h ^ np.uint64(n << 24)))
    return np.concatenate(out) if out else np.zeros(0, np.uint64)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.booleans())
def test_hashes_are_the_64_bit_arithmetics(text: str, bigrams: bool) -> None:
    assert word_hashes(text, bigrams).tolist() == _word_hashes64(text, bigrams).tolist()
    for ngrams in ((3, 4, 5), (2,), (4,)):
        assert char_hashes(text, ngrams).tolist() == _char_hashes64(text, ngrams).tolist()


def word_hashes(text: str, bigrams: bool) -> np.ndarray:
    return text_hashes(text, bigrams, ())[0]


def char_hashes(text: str, ngrams: tuple[int, ...]) -> np.ndarray:
    return text_hashes(text, False, ngrams)[1]


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_a_bag_reads_the_same_buckets_from_either(text: str) -> None:
    new, old = char_hashes(text, (3, 4, 5)), _char_hashes64(text, (3, 4, 5))
    for parts in ([(new, 1.0)], [(new, 1.0), (new[::3], 0.5)]):
        reference = [(old, 1.0)] if len(parts) == 1 else [(old, 1.0), (old[::3], 0.5)]
        (i, v), (j, w) = bag(parts, 1 << 15), bag(reference, 1 << 15)
        assert i.dtype == j.dtype == np.intp
        assert i.tolist() == j.tolist() and v.tobytes() == w.tobytes()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.booleans(), st.sampled_from([(3, 4, 5), (2,), (4,), ()]))
def test_text_hashes_are_the_word_and_char_hashes(text: str, bigrams: bool,
                                                  ngrams: tuple[int, ...]) -> None:
    """Hashed together, each block is what it is hashed alone (the 64-bit references)."""
    words, chars = text_hashes(text, bigrams, ngrams)
    for got, want in ((words, _word_hashes64(text, bigrams)),
                      (chars, _char_hashes64(text, ngrams) if ngrams else np.zeros(0))):
        assert got.dtype == np.uint32
        assert got.tolist() == want.tolist()


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300), st.integers(0, 1 << 20))
def test_a_bag_at_an_offset_is_the_bag_shifted(text: str, offset: int) -> None:
    h = char_hashes(text, (3, 4, 5))
    for parts in ([(h, 1.0)], [(h, 1.0), (h[::3], 0.5)]):
        (i, v), (j, w) = bag(parts, 1 << 15, offset), bag(parts, 1 << 15)
        assert i.dtype == j.dtype == np.intp
        assert i.tolist() == (j + offset).tolist() and v.tobytes() == w.tobytes()


def test_hashes_are_pinned() -> None:
    texts = ["what is the capital of france?", "Écrire un poème", "a", "", "x" * 300,
             "def f(x):\n    return x ** 2  # squares"]
    digest = hashlib.sha256()
    for text in texts:
        digest.update(word_hashes(text, True).astype("<u4").tobytes())
        digest.update(char_hashes(text, (3, 4, 5)).astype("<u4").tobytes())
    assert digest.hexdigest()[:16] == PINNED


# Written by the 64-bit arithmetic, before the hashes were computed in 32 bits.
PINNED = "c51676f3643efcc6"
