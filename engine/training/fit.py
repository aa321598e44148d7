"""Training the router of ``engine.core.routing.learned``: L2 logistic regression fitted by L-BFGS
in numpy, and stratified K-fold cross-validation. Sans-IO and CPU-bound (seconds for a few
thousand rows); call it from a thread or a CLI, never from the event loop.

The target of a labelled row is "the strong model is needed". ``"binary"`` makes it 1 when
the strong model scored higher than the weak one; ``"gain"`` uses ``(1 + strong - weak) / 2``,
a soft target that also says when the weak model did *better* (0) and handles graded scores
(AlpacaEval's judge probabilities). Either way the model ranks prompts by the expected gain of
calling the strong model, which is what APGR rewards.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from engine.core.routing.gate import Gate, fit_gate, spherical_kmeans
from engine.core.routing.learned import (
    DENSE_NAMES,
    FORMAT_VERSION,
    FeatureConfig,
    Features,
    LearnedRouter,
    TextEmbedder,
    extract_features,
    pack_weights,
    request_for_prompt,
)

from .evaluate import RoutingRow, summarize

__all__ = ["DEFAULT_L2", "MONOTONE", "CrossValidation", "FeatureMatrix", "Target", "Training",
           "apgr_by_source", "build_matrix", "calibrate", "cross_validate", "fit_router",
           "source_of", "stratified_folds", "targets", "train_router"]

DEFAULT_L2 = 3e-3
"""Chosen by cross-validation on the MMLU and RouterBench dev rows (BENCHMARKS.md)."""

MONOTONE = ("signal_tokens", "log_chars_last", "log_chars_all", "log_words_last")
"""The length measures whose weights are kept from going negative: on data where longer
prompts happen to need the strong model less (RouterBench, AlpacaEval) a free weight learns
"longer means cheaper", which ranks traffic where length helps (MMLU) the wrong way round
(BENCHMARKS.md, section 16). Held at zero, such a weight leaves that data's order to the
other features."""

Target = Literal["binary", "gain"]
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class FeatureMatrix:
    """Many rows' features as one sparse matrix in CSR form (``indptr``, ``indices``,
    ``values``; the dense block is stored raw in ``dense`` and standardised per fit)."""

    config: FeatureConfig
    dense: np.ndarray
    embedding: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.dense)

    def take(self, rows: np.ndarray) -> FeatureMatrix:
        """The sub-matrix of ``rows``."""
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = ends - starts
        pick = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])
        return FeatureMatrix(self.config, self.dense[rows], self.embedding[rows],
                             np.concatenate([[0], np.cumsum(lengths)]),
                             self.indices[pick], self.values[pick])


def build_matrix(
    prompts: Sequence[str],
    config: FeatureConfig,
    *,
    embedder: TextEmbedder | None = None,
    progress: Progress | None = None,
) -> FeatureMatrix:
    """The features of ``prompts`` (one-turn requests), as :func:`extract_features` gives
    them at scoring time."""
    feats: list[Features] = []
    for i, prompt in enumerate(prompts):
        feats.append(extract_features(request_for_prompt(prompt), config, embedder=embedder))
        if progress is not None:
            progress(i + 1, len(prompts))
    lengths = [len(f.indices) for f in feats]
    return FeatureMatrix(
        config,
        np.array([f.dense for f in feats]),
        np.array([f.embedding for f in feats]).reshape(len(feats), config.embedding_dim),
        np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        np.concatenate([f.indices for f in feats]).astype(np.int64),
        np.concatenate([f.values for f in feats]),
    )


def targets(rows: Sequence[RoutingRow], kind: Target = "binary") -> np.ndarray:
    """The training target of each row (see the module docstring).

    Raises:
        ValueError: an unknown ``kind``.
    """
    gain = np.array([r.strong_score - r.weak_score for r in rows], np.float64)
    if kind == "binary":
        return (gain > 0).astype(np.float64)
    if kind == "gain":
        return np.clip((1.0 + gain) / 2.0, 0.0, 1.0)
    raise ValueError(f"target must be 'binary' or 'gain', got {kind!r}")


# -- the optimiser -------------------------------------------------------------------------------


class _Problem:
    """Mean logistic loss of ``X @ w + b`` against soft targets, plus ``l2/2 * |w|^2``."""

    def __init__(self, x: FeatureMatrix, dense: np.ndarray, y: np.ndarray, l2: float) -> None:
        self.x, self.dense, self.y, self.l2 = x, dense, y, l2
        self.n_dense = dense.shape[1]
        self.n_embed = x.embedding.shape[1]
        self.size = x.config.size
        self.row_of = np.repeat(np.arange(len(y)), np.diff(x.indptr))

    def margins(self, w: np.ndarray, b: float) -> np.ndarray:
        nd, ne = self.n_dense, self.n_embed
        z = self.dense @ w[:nd] + b
        if ne:
            z += self.x.embedding @ w[nd : nd + ne]
        z += np.bincount(self.row_of, weights=self.x.values * w[self.x.indices],
                         minlength=len(self.y))
        return z

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        z = self.margins(w, b)
        # log(1 + e^z) - y z, stably; its derivative is sigmoid(z) - y
        loss = np.logaddexp(0.0, z) - self.y * z
        r = (_sigmoid(z) - self.y) / len(self.y)
        nd, ne = self.n_dense, self.n_embed
        grad = np.empty_like(theta)
        grad[:nd] = self.dense.T @ r
        if ne:
            grad[nd : nd + ne] = self.x.embedding.T @ r
        hashed = np.bincount(self.x.indices, weights=self.x.values * r[self.row_of],
                             minlength=self.size)
        grad[nd + ne : -1] = hashed[nd + ne :]
        grad[:-1] += self.l2 * w
        grad[-1] = r.sum()
        return float(loss.mean() + 0.5 * self.l2 * (w @ w)), grad


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _lbfgs(f: Callable[[np.ndarray], tuple[float, np.ndarray]], x: np.ndarray, *,
           iterations: int, memory: int = 10, tol: float = 1e-7) -> np.ndarray:
    """Minimise a smooth convex ``f`` (value, gradient) from ``x``: L-BFGS with a
    backtracking Armijo line search."""
    fx, g = f(x)
    s_hist: list[np.ndarray] = []
    y_hist: list[np.ndarray] = []
    for _ in range(iterations):
        q = g.copy()
        alphas = []
        for s, yv in zip(reversed(s_hist), reversed(y_hist), strict=True):
            a = (s @ q) / (yv @ s)
            alphas.append(a)
            q -= a * yv
        if s_hist:
            q *= (s_hist[-1] @ y_hist[-1]) / (y_hist[-1] @ y_hist[-1])
        for s, yv, a in zip(s_hist, y_hist, reversed(alphas), strict=True):
            q += s * (a - (yv @ q) / (yv @ s))
        d = -q
        slope = g @ d
        if slope >= 0:  # not a descent direction: restart from steepest descent
            s_hist.clear()
            y_hist.clear()
            d, slope = -g, -(g @ g)
        step = 1.0 if s_hist else min(1.0, 1.0 / max(1e-12, float(np.abs(g).sum())))
        while True:
            x_new = x + step * d
            f_new, g_new = f(x_new)
            if f_new <= fx + 1e-4 * step * slope or step < 1e-12:
                break
            step *= 0.5
        s, yv = x_new - x, g_new - g
        if s @ yv > 1e-12:
            s_hist.append(s)
            y_hist.append(yv)
            if len(s_hist) > memory:
                s_hist.pop(0)
                y_hist.pop(0)
        done = abs(fx - f_new) <= tol * max(1.0, abs(fx))
        x, fx, g = x_new, f_new, g_new
        if done:
            break
    return x


# -- fitting -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Fit:
    weights: np.ndarray  # float32, as saved
    bias: float
    mean: np.ndarray
    std: np.ndarray

    def margins(self, x: FeatureMatrix) -> np.ndarray:
        problem = _Problem(x, (x.dense - self.mean) / self.std, np.zeros(len(x)), 0.0)
        return problem.margins(self.weights.astype(np.float64), self.bias)


def _fit(x: FeatureMatrix, y: np.ndarray, *, l2: float, iterations: int,
         monotone: Sequence[str] = MONOTONE) -> _Fit:
    """The fit, with the weights of the dense features named in ``monotone`` non-negative:
    an active-set fit (those that come out negative are held at zero, by zeroing their
    column, and the fit is redone, until none does)."""
    mean = x.dense.mean(axis=0)
    std = x.dense.std(axis=0)
    std[std < 1e-9] = 1.0  # a constant feature (no tools in the data): its weight stays 0
    bounded = [DENSE_NAMES.index(name) for name in monotone]
    keep = np.ones(len(DENSE_NAMES))
    prior = float(np.clip(y.mean(), 1e-3, 1 - 1e-3))
    while True:
        # a zeroed column's gradient is its L2 term alone, so its weight stays at 0
        problem = _Problem(x, (x.dense - mean) / std * keep, y, l2)
        theta = np.zeros(x.config.size + 1)
        theta[-1] = np.log(prior / (1 - prior))
        theta = _lbfgs(problem, theta, iterations=iterations)
        negative = [j for j in bounded if keep[j] and theta[j] < 0]
        if not negative:
            return _Fit(theta[:-1].astype("<f4"), float(theta[-1]), mean, std)
        keep[negative] = 0.0


def calibrate(margins: np.ndarray, positive: np.ndarray) -> tuple[float, float]:
    """Platt scaling: ``(slope, intercept)`` so that ``sigmoid(slope * margin + intercept)``
    estimates the chance of ``positive`` (a monotone map: the ranking, and so APGR, stay)."""
    z = np.stack([margins, np.ones_like(margins)], axis=1)
    theta = np.array([1.0, 0.0])
    for _ in range(50):  # Newton's method on a two-parameter logistic regression
        p = _sigmoid(z @ theta)
        grad = z.T @ (p - positive) + 1e-6 * theta
        hess = (z * (p * (1 - p))[:, None]).T @ z + 1e-6 * np.eye(2)
        delta = np.linalg.solve(hess, grad)
        theta -= delta
        if np.abs(delta).max() < 1e-10:
            break
    return float(theta[0]), float(theta[1])


def fit_router(
    x: FeatureMatrix,
    y: np.ndarray,
    *,
    l2: float = DEFAULT_L2,
    iterations: int = 300,
    calibration: tuple[float, float] = (1.0, 0.0),
    embedder: TextEmbedder | None = None,
    info: Mapping[str, Any] | None = None,
    monotone: Sequence[str] = MONOTONE,
) -> LearnedRouter:
    """A :class:`LearnedRouter` fitted on features ``x`` and targets ``y`` (0..1), its
    output mapped through ``calibration`` (see :func:`calibrate`), the weights of the
    dense features named in ``monotone`` non-negative (:data:`MONOTONE`)."""
    fit = _fit(x, y, l2=l2, iterations=iterations, monotone=monotone)
    # No timestamps or timings: the same rows and options give the same file, byte for byte.
    meta: dict[str, Any] = {"l2": l2, "iterations": iterations, "rows": len(y),
                            "format_version": FORMAT_VERSION}
    if monotone:
        meta["monotone"] = list(monotone)
    return LearnedRouter(x.config, fit.weights, fit.bias, fit.mean, fit.std,
                         calibration=calibration, info={**meta, **(info or {})},
                         embedder=embedder)


@dataclass(frozen=True, slots=True)
class CrossValidation:
    """Out-of-fold margins (each row scored by a model that never saw it), the APGR of
    each fold and of all out-of-fold scores together, and APGR per ``source`` group."""

    folds: int
    l2: float
    margins: np.ndarray
    fold_apgr: tuple[float, ...]
    apgr: float
    by_source: Mapping[str, float]

    @property
    def apgr_std(self) -> float:
        return float(np.std(self.fold_apgr))


def stratified_folds(classes: Sequence[float], folds: int, *, seed: int = 0,
                     groups: Sequence[str] | None = None) -> np.ndarray:
    """A fold number per row: rows shuffled within each class (and group, e.g. the data set
    a row came from) and dealt round-robin, so every fold keeps the mix."""
    rng = np.random.default_rng(seed)
    keys = [f"{g}|{c}" for g, c in zip(groups or [""] * len(classes), classes, strict=True)]
    fold = np.empty(len(keys), np.int64)
    start = 0
    for key in sorted(set(keys)):
        members = np.array([i for i, k in enumerate(keys) if k == key])
        rng.shuffle(members)
        fold[members] = (np.arange(len(members)) + start) % folds
        start += len(members)
    return fold


def source_of(row: RoutingRow) -> str:
    """The data set a row came from: its ``source`` up to the first slash."""
    return row.source.split("/")[0] or "data"


def apgr_by_source(rows: Sequence[RoutingRow], scores: np.ndarray) -> dict[str, float]:
    """APGR (exact mode) of ``scores`` on each data set among ``rows``, and on all of them."""
    out = {}
    names = sorted({source_of(r) for r in rows})
    for name in names:
        idx = [i for i, r in enumerate(rows) if source_of(r) == name]
        out[name] = summarize([rows[i] for i in idx], scores[idx].tolist()).apgr
    if len(names) > 1:
        out["all"] = summarize(rows, scores.tolist()).apgr
    return out


def cross_validate(
    x: FeatureMatrix,
    y: np.ndarray,
    rows: Sequence[RoutingRow],
    *,
    folds: int = 5,
    l2: float = DEFAULT_L2,
    iterations: int = 300,
    seed: int = 0,
    progress: Progress | None = None,
    monotone: Sequence[str] = MONOTONE,
) -> CrossValidation:
    """Stratified K-fold cross-validation: folds keep each data set's share of rows where
    the strong model gained, tied and lost.

    Raises:
        ValueError: fewer than 2 folds, or more folds than rows.
    """
    if not 2 <= folds <= len(y):
        raise ValueError(f"folds must be in 2..{len(y)}, got {folds}")
    # Stratified on the sign of the gain, not on y: every target kind sees the same folds.
    sign = [float(np.sign(r.strong_score - r.weak_score)) for r in rows]
    fold = stratified_folds(sign, folds, seed=seed, groups=[source_of(r) for r in rows])
    out = np.zeros(len(y))
    scores = []
    for k in range(folds):
        train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        out[test] = _fit(x.take(train), y[train], l2=l2, iterations=iterations,
                         monotone=monotone).margins(x.take(test))
        scores.append(summarize([rows[int(i)] for i in test], out[test].tolist()).apgr)
        if progress is not None:
            progress(k + 1, folds)
    return CrossValidation(folds, l2, out, tuple(scores), summarize(rows, out.tolist()).apgr,
                           apgr_by_source(rows, out))


@dataclass(frozen=True, slots=True)
class Training:
    """What :func:`train_router` did: the router, and the cross-validation of each ``l2``
    tried (the router uses the best one's)."""

    router: LearnedRouter
    validations: tuple[CrossValidation, ...]

    @property
    def chosen(self) -> CrossValidation:
        return max(self.validations, key=lambda v: v.apgr)


def familiarity(embeddings: np.ndarray, *, clusters: int = 32, seed: int = 0,
                iterations: int = 20) -> dict[str, Any]:
    """What the router was trained on, as :meth:`LearnedRouter.known` reads it: ``clusters``
    centroids of the training rows' sentence vectors (spherical k-means) and the range of
    training rows' similarity to their nearest centroid: at ``high`` (its 25th percentile)
    and above a request is known, at ``low`` (the 5th) and below it is not."""
    vectors = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    centroids = spherical_kmeans(vectors, clusters, seed=seed, iterations=iterations)
    similarity = (vectors @ centroids.T).max(axis=1)
    low, high = np.percentile(similarity, [5, 25])
    return {"centroids": pack_weights(centroids.astype("<f4").ravel()),
            "clusters": len(centroids), "low": round(float(low), 4),
            "high": round(float(high), 4)}


def with_gate(router: LearnedRouter, x: FeatureMatrix) -> LearnedRouter:
    """``router`` with the familiarity gate (``engine.core.routing.gate``) of its training
    rows ``x``: what the router file records in ``info.gate``."""
    fit = _Fit(router.weights, router.bias, router.dense_mean, router.dense_std)
    slope, intercept = router.calibration
    gate = fit_gate(x.indptr, x.indices, x.values, slope * fit.margins(x) + intercept,
                    x.dense[:, DENSE_NAMES.index("log_chars_all")], start=x.config.char_start)
    record = gate.to_dict()  # and read back, so the router scores as its file will
    return replace(router, info={**router.info, "gate": record}, gate=Gate.from_dict(record))


def train_router(
    rows: Sequence[RoutingRow],
    *,
    config: FeatureConfig | None = None,
    target: Target = "gain",
    l2: Sequence[float] = (DEFAULT_L2,),
    folds: int = 5,
    seed: int = 0,
    embedder: TextEmbedder | None = None,
    info: Mapping[str, Any] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    monotone: Sequence[str] = MONOTONE,
) -> Training:
    """Cross-validate each ``l2``, keep the best by out-of-fold APGR, fit on all ``rows``
    and calibrate the output to P(strong model scores higher) on the out-of-fold margins.
    The weights of the dense features named in ``monotone`` stay non-negative (``()``:
    no bound).

    Raises:
        ValueError: no rows, a bad ``folds`` or ``target``, or an unknown name in
            ``monotone``.
    """
    unknown = [name for name in monotone if name not in DENSE_NAMES]
    if unknown:
        raise ValueError(f"monotone: unknown dense features {unknown}")
    if not rows:
        raise ValueError("no rows to train on")
    config = config or FeatureConfig()

    def stage(name: str) -> Progress | None:
        return None if progress is None else (lambda i, n: progress(name, i, n))

    x = build_matrix([r.prompt for r in rows], config, embedder=embedder,
                     progress=stage("features"))
    y = targets(rows, target)
    validations = tuple(
        cross_validate(x, y, rows, folds=folds, l2=value, seed=seed,
                       progress=stage(f"cross-validation l2={value:g}"), monotone=monotone)
        for value in l2
    )
    best = max(validations, key=lambda v: v.apgr)
    calibration = calibrate(best.margins, targets(rows, "binary"))
    sources: dict[str, int] = {}
    for r in rows:
        sources[r.source] = sources.get(r.source, 0) + 1
    meta = {
        "target": target,
        "output": "calibrated P(strong_score > weak_score)",
        "trained_on": {"rows": len(rows), "sources": sources},
        "cross_validation": {
            "folds": folds, "seed": seed, "mode": "exact",
            "runs": [{"l2": v.l2, "apgr": round(v.apgr, 4), "apgr_std": round(v.apgr_std, 4),
                      "by_source": {k: round(a, 4) for k, a in v.by_source.items()}}
                     for v in validations],
        },
        **(info or {}),
    }
    if config.embeddings:
        meta["familiarity"] = familiarity(x.embedding)
    if progress is not None:
        progress("final fit", 0, 1)
    router = with_gate(fit_router(x, y, l2=best.l2, calibration=calibration,
                                  embedder=embedder, info=meta, monotone=monotone), x)
    if progress is not None:
        progress("final fit", 1, 1)
    return Training(router, validations)
