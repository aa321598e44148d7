"""The familiarity gate: on a request unlike what the trained router learned from, its
log-odds lean on prompt length. Sans-IO, numpy only.

A trained router ranks requests like its training rows well and can rank others worse than
prompt length does (BENCHMARKS.md, section 16: trained without MBPP, the shipped recipe
ranks MBPP's coding prompts at APGR 0.35 where length reaches 0.49). Whether a request is
like the training rows is read from its hashed **character n-grams**, the one measure found
that separates what the router never saw from what it knows (the sentence vector's
``known`` does not): the request's character n-gram block, folded to :attr:`Gate.buckets`
buckets, and its cosine to the nearest of the training rows' centroids in that space, as a
percentile ``m`` among the training rows.

The gate then mixes two percentiles among the training rows, the router's log-odds ``z``
and the log length of the conversation ``L`` (``log1p`` of its characters, so that a short
follow-up keeps the weight of what came before), with ``w = clip((m - low) / (high - low))``:
``c = w × F_z(z) + (1 − w) × F_L(L)``, and puts ``c`` back on the log-odds' scale
(``F_z``'s inverse). A familiar request (``w = 1``) keeps its log-odds exactly; an
unfamiliar one (``w = 0``) gets the log-odds a training row of its length's percentile had:
the same share of traffic stays below the tier-1 boundary, ordered by length. Percentiles
are piecewise linear through 101 quantiles and go on linearly beyond the training range, so
the map keeps the order there too and inverts exactly.

The gate moves the router's belief only: the heuristic score that the routing rule blends
with it keeps its signals (a reasoning cue or a code block counts on any request).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .packing import pack_array, unpack_array

__all__ = ["Gate", "fit_gate", "fold", "spherical_kmeans"]

GRID = np.linspace(0.0, 1.0, 101)
"""The percentiles the quantiles are kept at."""


def spherical_kmeans(vectors: np.ndarray, clusters: int, *, seed: int = 0,
                     iterations: int = 20) -> np.ndarray:
    """``clusters`` unit centroids of the unit rows ``vectors`` (k-means on cosine),
    started from rows drawn with ``seed``: the same input gives the same centroids."""
    k = min(clusters, len(vectors))
    rng = np.random.default_rng(seed)
    centroids = vectors[rng.choice(len(vectors), k, replace=False)].copy()
    for _ in range(iterations):
        nearest = (vectors @ centroids.T).argmax(axis=1)
        for j in range(k):
            members = vectors[nearest == j]
            if len(members):
                mean = members.mean(axis=0)
                centroids[j] = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return centroids


def fold(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, *, start: int,
         buckets: int) -> np.ndarray:
    """Rows of a CSR matrix (``indptr``, ``indices``, ``values``), their columns from
    ``start`` on folded modulo ``buckets``, as dense unit rows (float32)."""
    n = len(indptr) - 1
    row_of = np.repeat(np.arange(n), np.diff(indptr))
    keep = indices >= start
    out = np.zeros((n, buckets), np.float32)
    np.add.at(out, (row_of[keep], (indices[keep] - start) % buckets), values[keep])
    unit: np.ndarray = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return unit


_STEP = float(GRID[1])


def _percentile(v: float, q: list[float]) -> float:
    """``v``'s percentile (0..1) among values whose quantiles at :data:`GRID` are ``q``,
    linear beyond them at the mean slope (plain Python: a request's path)."""
    lo, hi = q[0], q[-1]
    span = max(hi - lo, 1e-9)
    if v < lo:
        return (v - lo) / span
    if v >= hi:
        return 1 + (v - hi) / span
    j = bisect.bisect_right(q, v) - 1  # q[j] <= v < q[j + 1]
    return (j + (v - q[j]) / (q[j + 1] - q[j])) * _STEP


def _inverse(c: float, q: list[float]) -> float:
    """The value at percentile ``c``: :func:`_percentile`'s inverse."""
    span = max(q[-1] - q[0], 1e-9)
    if c < 0:
        return q[0] + c * span
    if c >= 1:
        return q[-1] + (c - 1) * span
    j = min(int(c / _STEP), len(q) - 2)
    j -= c < j * _STEP  # the float division's last bit
    return q[j] + (c - j * _STEP) / _STEP * (q[j + 1] - q[j])


@dataclass(frozen=True, slots=True, eq=False)
class Gate:
    """A router file's gate record (``info.gate``), unpacked.

    ``centroids`` is (buckets, clusters) float32, unit columns; ``familiarity``, ``logits``
    and ``lengths`` are the training rows' quantiles at :data:`GRID` of their similarity to
    the nearest centroid, their calibrated log-odds and ``log1p`` of their length; the gate
    opens between the familiarity percentiles ``low`` and ``high``.
    """

    buckets: int
    centroids: np.ndarray
    familiarity: np.ndarray
    logits: np.ndarray
    lengths: np.ndarray
    low: float
    high: float
    _lists: tuple[list[float], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_lists", tuple(
            q.tolist() for q in (self.familiarity, self.logits, self.lengths)))

    def similarity(self, indices: np.ndarray, values: np.ndarray) -> float:
        """The cosine of one request's n-gram block (bucket ``indices`` past the block's
        start, ``values``) folded to :attr:`buckets`, to its nearest centroid."""
        if not len(indices):
            return 0.0
        folded = indices % self.buckets
        # the folded vector's norm counts colliding buckets once; its dot with a centroid
        # is the same summed bucket by bucket or value by value
        bins = np.bincount(folded, weights=values)
        # squared where a value landed only (elsewhere 0 is its own square): the array
        # np.square(bins) gives, for the same pairwise sum, without a pass over every bucket
        landed = bins[folded]
        bins[folded] = landed * landed
        norm = math.sqrt(float(np.add.reduce(bins)))
        if norm == 0:
            return 0.0
        rows = self.centroids.take(folded, axis=0)
        return float(np.maximum.reduce(values.astype(np.float32) @ rows)) / norm

    def weight(self, similarity: float) -> float:
        """How much the router's own order counts (0..1) at ``similarity``."""
        m = min(1.0, max(0.0, _percentile(similarity, self._lists[0])))
        return min(1.0, max(0.0, (m - self.low) / max(self.high - self.low, 1e-9)))

    def lean(self, z: float, log_length: float, similarity: float) -> float:
        """One request's gated log-odds (the module docstring's map): ``z`` itself where
        the :meth:`weight` at ``similarity`` is 1."""
        w = self.weight(similarity)
        if w >= 1.0:
            return z
        _, logits, lengths = self._lists
        return _inverse(w * _percentile(z, logits) + (1 - w) * _percentile(log_length, lengths),
                        logits)

    def to_dict(self) -> dict[str, Any]:
        return {
            "measure": "character n-grams", "buckets": self.buckets,
            "clusters": int(self.centroids.shape[1]),
            "centroids": pack_array(self.centroids, "<f2"),
            "familiarity": [round(float(v), 6) for v in self.familiarity],
            "logits": [round(float(v), 6) for v in self.logits],
            "lengths": [round(float(v), 6) for v in self.lengths],
            "low": self.low, "high": self.high,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Gate:
        """The gate ``raw`` (:meth:`to_dict`'s output) describes.

        Raises:
            ValueError, KeyError, TypeError: a damaged record.
        """
        buckets, clusters = int(raw["buckets"]), int(raw["clusters"])
        centroids = unpack_array(raw["centroids"], ("<f2", "<f4")).reshape(buckets, clusters)
        quantiles = [np.array(raw[k], np.float64)
                     for k in ("familiarity", "logits", "lengths")]
        if any(len(q) != len(GRID) or np.any(np.diff(q) < 0) for q in quantiles):
            raise ValueError(f"gate quantiles must be {len(GRID)} ascending values")
        familiarity, logits, lengths = quantiles
        return cls(buckets, centroids, familiarity, logits, lengths, float(raw["low"]),
                   float(raw["high"]))


def fit_gate(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, logits: np.ndarray,
             log_lengths: np.ndarray, *, start: int,
             buckets: int = 16384, clusters: int = 32, low: float = 0.05, high: float = 0.06,
             seed: int = 0) -> Gate:
    """The gate of a router's training rows: their n-gram blocks (CSR, columns from
    ``start``), calibrated log-odds and ``log1p`` lengths.

    The defaults are the gate measured in BENCHMARKS.md (section 16): 32 centroids of the
    character n-grams folded to 16,384 buckets, the router's own order from the training
    rows' 6th familiarity percentile up, prompt length's below their 5th.
    """
    vectors = fold(indptr, indices, values, start=start, buckets=buckets)
    centroids = spherical_kmeans(vectors, clusters, seed=seed)
    # stored as float16: the similarity they give moves by well under a percentile
    centroids = centroids.astype(np.float16).astype(np.float32)
    similarity = (vectors @ centroids.T).max(axis=1)
    return Gate(buckets, np.ascontiguousarray(centroids.T), np.quantile(similarity, GRID),
                np.quantile(logits, GRID), np.quantile(log_lengths, GRID), low, high)
