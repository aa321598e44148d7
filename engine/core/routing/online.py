"""Online learning: the deployment's own feedback teaches the trained router. Sans-IO.

The shipped router (``engine.core.routing.learned``) was fitted on a few thousand public rows;
a deployment's traffic is its own. Each quality report (``POST /v1/feedback`` naming a
request) is one labelled example of that traffic, and :func:`learn` takes one bounded step of
a logistic *correction* on top of the shipped model's log-odds:

    logit(p) = z_shipped + gate × (1 - known) × max_shift × tanh(w · inputs / max_shift)

``inputs`` (:meth:`LearnedRouter.assess <engine.core.routing.learned.LearnedRouter.assess>`)
are the shipped log-odds, its standardised dense block (the heuristic's signals and the text's
shape: lengths transfer across domains) and the WordLlama sentence vector (the topic): a few
hundred numbers, so a few hundred reports move it, and its state is small enough to share.

**What a report teaches.** ``p`` estimates the chance that the strong model answers better.
A report on tier 1 (the cheap model) of quality ``q`` says the strong model was needed to the
extent the cheap one failed: target ``1 - q``. A report on a higher tier says nothing about
the cheap model, except that a poor strong answer was no gain: target 0 with weight
``1 - q``; a good strong answer teaches nothing.
A *comparison* report (``other``: the other tier's quality on the same request) says what
routing needs, the strong model's gain ``(1 + strong - weak) / 2``, and weighs
:data:`COMPARED_WEIGHT` plain reports. Comparisons also fit the *mix*
(``engine.core.routing.mix``): which of the shipped model and prompt length this
deployment's traffic follows, applied before the correction, with its own floor, and held
back by ``known`` like the correction.

**Bounds.** Steps are AdaGrad's (a weight many reports have moved moves less on the next),
and one step moves its request's log-odds by at most ``max_step``; the correction never moves
any log-odds by more than ``max_shift`` (a soft bound: a hard clip would tie the requests past
it, and ties lose the order routing needs); every report shrinks the correction by
the decay (``half_life`` reports halve it), so old evidence fades and the model drifts back to
the shipped one when feedback stops. A reporter (``reporter``, the client key's digest) weighs
at most ``key_cap`` decayed reports: past that, its reports count for less and less, so one
client cannot outvote the others however much it sends.

**The floor** (:mod:`engine.core.routing.floor`). A comparison report is also scored by both
models before the step, prequentially (on evidence neither has learned from), and kept with
its gain among the newest :data:`~engine.core.routing.floor.WINDOW` comparisons. The
correction applies as far as it ranks those gains better than the shipped model, surely (its
lead less three standard errors), in full from ``tolerance`` (a share: 0.02 is two pairs in a
hundred), and not at all before :data:`~engine.core.routing.floor.MIN_JUDGED` comparisons.
Each floor judges only pairs of comparisons scored by one state: every
:data:`~engine.core.routing.floor.BLOCK` comparisons the state keeps a snapshot of what of it
scores (``frozen``, :mod:`engine.core.routing.snapshot`), and until the next one the floors'
scores of each comparison are the snapshot's, not the current state's (which has learned
from the earlier comparisons of the window and so would look ahead on them; routing itself
uses the current state).
Plain reports teach the correction but never open its floor: their target ranks how hard a
request is, and a correction can rank that better while ranking the gain worse (on MMLU,
with a router trained without it, plain reports opened the old floor, judged on their own
targets, and cost 0.03-0.07 of APGR on held-back rows; BENCHMARKS.md, "A floor judged on the
gain").

**What the shipped model knew.** ``known`` (how close a request is to the shipped model's
training rows, :meth:`LearnedRouter.known <engine.core.routing.learned.LearnedRouter.known>`)
holds the correction back: on traffic like its training data the router stays the shipped
one, whatever a few comparisons say.

**Regions.** Every report also teaches per-region levels (:mod:`engine.core.routing.regions`,
``OnlineSettings.regions``): how much harder or easier than the shipped model believed each
region of the sentence-vector space is, added to the log-odds with their own floor. They
reorder kinds of request past gaps the correction's bound cannot cross (BENCHMARKS.md,
section 11b).

The log-loss of both models on the reports is kept too, for ``GET /v1/routing``; the shipped
model's is taken after a learned constant shift (``offset``), which buys log-loss without
reordering anything.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .floor import BLOCK, MIN_JUDGED, WINDOW, concordance, judged, opening, row_blocks
from .floor import describe as describe_floor
from .learned import DENSE_NAMES
from .mix import KEPT, Mix, fit_mix
from .regions import Regions
from .snapshot import Snapshot

__all__ = ["COMPARED_WEIGHT", "OnlineSettings", "OnlineState",
           "Outcome", "label", "learn", "predict"]

_KEPT_REPORTERS = 1000
_EPSILON = 1e-6
COMPARED_WEIGHT = 4.0
"""What one comparison report (both tiers' quality) weighs against a served-tier report."""


@dataclass(frozen=True, slots=True)
class OnlineSettings:
    """How fast and how far feedback may move the router (``learned.online_*`` in the
    config)."""

    rate: float = 0.1
    max_step: float = 0.5
    max_shift: float = 3.0
    half_life: float = 2000.0
    key_cap: float = 200.0
    tolerance: float = 0.02
    regions: bool = True

    @property
    def decay(self) -> float:
        return float(0.5 ** (1.0 / self.half_life))


@dataclass(frozen=True, slots=True)
class OnlineState:
    """The learned correction and its record. ``weights`` has one entry per input and a bias
    last; ``model`` names the shipped model it corrects (a state made for another model does
    not apply); ``reporters`` maps a reporter to its decayed weight and the report count at
    which that was measured."""

    model: str
    weights: np.ndarray
    reports: int = 0
    learned: float = 0.0
    loss_shipped: float = 0.0
    loss_online: float = 0.0
    evidence: float = 0.0
    reporters: Mapping[str, tuple[float, int]] = field(default_factory=dict)
    offset: float = 0.0
    #: Per weight, the decayed sum of its squared gradients (AdaGrad): a weight that many
    #: reports have moved moves less on the next one, so the correction settles instead of
    #: swinging with the last few reports.
    squares: np.ndarray | None = None
    #: The newest :data:`~engine.core.routing.floor.WINDOW` comparison reports as the two
    #: models saw them before learning from them: rows of (shipped log-odds, corrected
    #: log-odds, gain, weight).
    recent: np.ndarray | None = None
    #: How much of the correction applies (the floor), set by each comparison from ``recent``.
    gate: float = 0.0
    #: Reports that carried both tiers' quality (comparisons), of ``reports``.
    compared: int = 0
    #: The newest :data:`~engine.core.routing.mix.KEPT` comparisons: rows of (shipped
    #: log-odds, length, gain, weight, the mixed log-odds before the mix learned from it).
    comparisons: np.ndarray | None = None
    #: How much of the mix applies (its floor), set by each comparison.
    mix_gate: float = 0.0
    #: The mix fitted on ``comparisons`` (rebuilt from them, not saved).
    mix: Mix | None = None
    #: Per-region levels learned from every report (:mod:`engine.core.routing.regions`).
    regions: Regions | None = None
    #: The block of each row of ``recent`` and of ``comparisons``: the snapshot (``frozen``)
    #: that scored it, -1 before the first (never judged). Floors judge pairs of one block.
    recent_blocks: np.ndarray | None = None
    comparison_blocks: np.ndarray | None = None
    #: What of the state scores comparisons (:mod:`engine.core.routing.snapshot`), as it
    #: stood after the last :data:`~engine.core.routing.floor.BLOCK`-th comparison: what
    #: scores comparisons for the floors until the next one.
    frozen: Snapshot | None = None

    @classmethod
    def fresh(cls, model: str, inputs: int) -> OnlineState:
        return cls(model, np.zeros(inputs + 1, np.float64),
                   squares=np.zeros(inputs + 1, np.float64))

    def concordance(self) -> tuple[float, float] | None:
        """How often each model (shipped, corrected) ranked the recent comparisons' pairs the
        way their gains do; None before :data:`~engine.core.routing.floor.MIN_JUDGED` of them."""
        blocks = row_blocks(self.recent, self.recent_blocks)
        if self.recent is None or judged(self.recent[:, 2], blocks) < MIN_JUDGED:
            return None
        return (concordance(self.recent[:, 0], self.recent[:, 2], self.recent[:, 3], blocks),
                concordance(self.recent[:, 1], self.recent[:, 2], self.recent[:, 3], blocks))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (shared through Redis); :meth:`from_dict` reads it back."""
        data = np.ascontiguousarray(self.weights, "<f8").tobytes()
        return {
            "model": self.model, "weights": base64.b64encode(data).decode("ascii"),
            "reports": self.reports, "learned": self.learned,
            "loss_shipped": self.loss_shipped, "loss_online": self.loss_online,
            "evidence": self.evidence, "offset": self.offset,
            "squares": _pack(self.squares if self.squares is not None
                             else np.zeros_like(self.weights)),
            "judged": _pack(self.recent if self.recent is not None else np.zeros((0, 4))),
            "gate": self.gate, "compared": self.compared, "mix_gate": self.mix_gate,
            "comparisons": _pack(self.comparisons if self.comparisons is not None
                                 else np.zeros((0, 5))),
            "judged_blocks": _pack(row_blocks(self.recent, self.recent_blocks)),
            "comparison_blocks": _pack(row_blocks(self.comparisons, self.comparison_blocks)),
            "reporters": {k: list(v) for k, v in self.reporters.items()},
            **({"regions": self.regions.to_dict()} if self.regions is not None else {}),
            **({"frozen": self.frozen.to_dict(
                None if self.regions is None else self.regions.leaders)}
               if self.frozen is not None else {}),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> OnlineState:
        """Raises: ValueError (or KeyError, TypeError) on a damaged state."""
        weights = np.frombuffer(base64.b64decode(raw["weights"]), "<f8").astype(np.float64)
        rows = _unpack(raw["comparisons"]).reshape(-1, 5) if "comparisons" in raw else None
        recent = _unpack(raw["judged"]).reshape(-1, 4) if "judged" in raw else None
        # Saved before the floors judged pairs within blocks, a window's rows were scored by
        # states that had learned from its earlier rows: they are kept but never judged, and
        # the floor starts shut.
        recent_blocks = _saved_blocks(raw, "judged_blocks", recent)
        comparison_blocks = _saved_blocks(raw, "comparison_blocks", rows)
        regions = Regions.from_dict(raw["regions"]) if "regions" in raw else None
        state = cls(
            str(raw["model"]), weights, int(raw["reports"]), float(raw["learned"]),
            float(raw["loss_shipped"]), float(raw["loss_online"]), float(raw["evidence"]),
            {str(k): (float(v[0]), int(v[1])) for k, v in raw.get("reporters", {}).items()},
            float(raw.get("offset", 0.0)),
            _unpack(raw["squares"]) if "squares" in raw else None,
            # A state saved before the floors judged on comparisons alone kept plain reports
            # under "recent": those rows are dropped, and its floor starts shut.
            recent,
            float(raw.get("gate", 0.0)) if "judged_blocks" in raw and recent is not None
            else 0.0,
            int(raw.get("compared", 0)), rows,
            float(raw.get("mix_gate", 0.0)) if "comparison_blocks" in raw else 0.0,
            None if rows is None else fit_mix(rows[:, :4]),
            regions, recent_blocks, comparison_blocks,
            _saved_snapshot(raw.get("frozen"), regions),
        )
        if not (0.0 <= state.gate <= 1.0 and 0.0 <= state.mix_gate <= 1.0):
            raise ValueError("damaged online state")
        return state

    def describe(self, settings: OnlineSettings) -> dict[str, Any]:
        """The learning state for ``GET /v1/routing`` (no reporter identities)."""
        n = max(self.evidence, 1e-12)
        ranks = self.concordance()
        return {
            "concordance": None if ranks is None else {
                "shipped": round(ranks[0], 4), "online": round(ranks[1], 4)},
            "reports": self.reports, "compared": self.compared,
            "learned_from": round(self.learned, 2),
            "gate": round(self.gate, 4),
            "floor": None if self.recent is None else describe_floor(
                self.recent[:, 0], self.recent[:, 1], self.recent[:, 2], self.recent[:, 3],
                row_blocks(self.recent, self.recent_blocks)),
            "log_loss": None if self.evidence <= 0 else {
                "shipped": round(self.loss_shipped / n, 4),
                "online": round(self.loss_online / n, 4)},
            "correction_norm": round(float(np.linalg.norm(self.weights)), 4),
            "reporters": len(self.reporters),
            "mix": self._describe_mix(),
            "regions": None if self.regions is None else self.regions.describe(),
        }

    def _describe_mix(self) -> dict[str, Any]:
        rows = self.comparisons
        if rows is None or self.mix is None:
            return {"comparisons": 0, "gate": 0.0, "weights": None, "concordance": None,
                    "floor": None}
        ranks = None
        blocks = row_blocks(rows, self.comparison_blocks)
        if judged(rows[:, 2], blocks) >= MIN_JUDGED:
            ranks = {"shipped": round(concordance(rows[:, 0], rows[:, 2], rows[:, 3], blocks), 4),
                     "mix": round(concordance(rows[:, 4], rows[:, 2], rows[:, 3], blocks), 4)}
        return {"comparisons": len(rows), "gate": round(self.mix_gate, 4),
                "weights": {"shipped": round(float(self.mix.weights[0]), 4),
                            "length": round(float(self.mix.weights[1]), 4)},
                "concordance": ranks,
                "floor": describe_floor(rows[:, 0], rows[:, 4], rows[:, 2], rows[:, 3], blocks)}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one report did: its target and weight, and how far it moved its request's
    log-odds (0 when it taught nothing)."""

    target: float
    weight: float
    moved: float


def label(tier: int, quality: float, other: float | None = None) -> tuple[float, float]:
    """The target ("the strong model was needed") and weight a report teaches; ``other``
    is the quality the other tier earned on the same request (a comparison report).

    >>> label(1, 0.0), label(1, 1.0), label(2, 0.0), label(2, 1.0)
    ((1.0, 1.0), (0.0, 1.0), (0.0, 1.0), (0.0, 0.0))

    With both tiers' quality the target is the strong model's gain, ``(1 + strong - weak) /
    2``, the quantity the shipped model was trained on and APGR measures, and every
    comparison teaches in full (a weight of :data:`COMPARED_WEIGHT`):

    >>> label(1, 0.0, other=1.0), label(2, 1.0, other=1.0), label(2, 0.0, other=1.0)
    ((1.0, 4.0), (0.5, 4.0), (0.0, 4.0))
    """
    if other is not None:
        weak, strong = (quality, other) if tier <= 1 else (other, quality)
        return (1.0 + strong - weak) / 2.0, COMPARED_WEIGHT
    if tier <= 1:
        return 1.0 - quality, 1.0
    return 0.0, 1.0 - quality


def _correction(state: OnlineState | Snapshot, inputs: np.ndarray,
                settings: OnlineSettings) -> float:
    raw = float(state.weights[:-1] @ inputs) + float(state.weights[-1])
    # A soft bound: past it, requests would tie and the ranking (all that APGR sees) is lost.
    return settings.max_shift * math.tanh(raw / settings.max_shift)


_LENGTH = 1 + DENSE_NAMES.index("log_chars_last")


def _length(inputs: np.ndarray) -> float:
    """The standardised log length of the last message, from a belief's inputs (the
    trained router's dense block, over the square root of its size, follows the log-odds)."""
    if len(inputs) <= _LENGTH:
        return 0.0
    return float(inputs[_LENGTH]) * math.sqrt(len(DENSE_NAMES))


_VECTOR = 1 + len(DENSE_NAMES)


def _vector(inputs: np.ndarray) -> np.ndarray:
    """The sentence vector, from a belief's inputs (after the log-odds and the dense
    block); empty for a router without embeddings."""
    return inputs[_VECTOR:]


def _mixed(state: OnlineState | Snapshot, logit: float, inputs: np.ndarray,
           known: float) -> float:
    if state.mix is None or state.mix_gate <= 0:
        return logit
    return logit + state.mix_gate * (1.0 - known) * (
        state.mix.logit(logit, _length(inputs)) - logit)


def predict(state: OnlineState | Snapshot | None, logit: float, inputs: np.ndarray,
            settings: OnlineSettings, *, known: float = 0.0) -> float:
    """The corrected log-odds of a request whose shipped log-odds are ``logit``: the mix
    (:mod:`engine.core.routing.mix`) as far as its floor lets it, then the region's level
    and the correction, each as far as its own floor lets it;
    ``known`` (0..1: how like the shipped model's training data the request is) holds both
    back, so what the shipped model knew stays as it was."""
    if state is None or len(inputs) + 1 != len(state.weights):
        return logit
    shift = (0.0 if state.regions is None or not settings.regions
             else state.regions.shift(_vector(inputs), known=known))
    return (_mixed(state, logit, inputs, known) + shift
            + state.gate * (1.0 - known) * _correction(state, inputs, settings))


def _pack(values: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(values, "<f8").tobytes()).decode("ascii")


def _unpack(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), "<f8").astype(np.float64)


def _saved_blocks(raw: Mapping[str, Any], key: str, rows: np.ndarray | None) -> np.ndarray:
    """The saved blocks of ``rows`` under ``key``; all -1 (never judged) in an older state.
    Raises: ValueError when they do not match the rows."""
    if key not in raw or rows is None:
        return np.full(0 if rows is None else len(rows), -1.0)
    blocks = _unpack(raw[key])
    if len(blocks) != len(rows) or not np.isfinite(blocks).all():
        raise ValueError(f"damaged online state: {key}")
    return blocks


def _snapshot(state: OnlineState) -> Snapshot:
    """What scores the floors' comparisons until the next snapshot: what of ``state``
    scoring reads (:mod:`engine.core.routing.snapshot`)."""
    return Snapshot(state.weights, state.gate, state.mix, state.mix_gate,
                    None if state.regions is None else state.regions.scoring())


def _saved_snapshot(raw: Mapping[str, Any] | None, regions: Regions | None) -> Snapshot | None:
    """A saved state's snapshot, read with the live ``regions`` (its leaders' count refers
    to theirs). Saved before snapshots had a form of their own, it is a whole state (without
    windows, reporters or a snapshot), read as one; what scoring reads of it is the same."""
    if raw is None:
        return None
    if "model" in raw:
        return _snapshot(OnlineState.from_dict(raw))
    return Snapshot.from_dict(raw, None if regions is None else regions.leaders)


def _log_loss(z: float, y: float) -> float:
    # -(y log p + (1-y) log(1-p)) with p = sigmoid(z), stable for large |z|
    return max(z, 0.0) - z * y + math.log1p(math.exp(-abs(z)))


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def learn(state: OnlineState, logit: float, inputs: np.ndarray, *, tier: int, quality: float,
          reporter: str | None, settings: OnlineSettings,
          other: float | None = None, known: float = 0.0) -> tuple[OnlineState, Outcome]:
    """One report's step (the module docstring): the new state and what the report did.

    Two kinds of request the shipped model cannot tell apart (log-odds 0 both); the cheap
    model fails one and serves the other, the strong model serves both (comparisons: the
    floor opens only on them):

    >>> s = OnlineSettings()
    >>> state = OnlineState.fresh("m", 2)
    >>> hard, easy = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    >>> for _ in range(30):
    ...     state, _ = learn(state, 0.0, hard, tier=1, quality=0.0, other=1.0, reporter=None,
    ...                      settings=s)
    ...     state, _ = learn(state, 0.0, easy, tier=1, quality=1.0, other=1.0, reporter=None,
    ...                      settings=s)
    >>> state.gate, predict(state, 0.0, hard, s) > predict(state, 0.0, easy, s)
    (1.0, True)
    """
    target, weight = label(tier, quality, other)
    decay = settings.decay
    n = state.reports + 1
    reporters = dict(state.reporters)
    if reporter is not None:
        had, at = reporters.get(reporter, (0.0, n))
        had *= decay ** (n - at)
        weight *= min(1.0, max(0.0, settings.key_cap - had))
        reporters[reporter] = (had + weight, n)
        if len(reporters) > _KEPT_REPORTERS:
            newest = sorted(reporters.items(), key=lambda kv: kv[1][1])[-_KEPT_REPORTERS:]
            reporters = dict(newest)
    w = state.weights * decay
    loss_shipped = state.loss_shipped * decay
    loss_online = state.loss_online * decay
    evidence = state.evidence * decay
    offset = state.offset
    squares = (state.squares if state.squares is not None
               else np.zeros_like(state.weights)) * decay
    moved = 0.0
    if weight > 0:
        correction = _correction(state, inputs, settings)
        loss_shipped += weight * _log_loss(logit + offset, target)
        loss_online += weight * _log_loss(logit + correction, target)
        evidence += weight
        offset -= settings.rate * weight * (_sigmoid(logit + offset) - target)
        x = np.append(inputs, 1.0)
        gradient = weight * (_sigmoid(logit + correction) - target) * x
        squares = squares + gradient * gradient
        step = settings.rate * gradient / np.sqrt(squares + _EPSILON)
        moved = float(step @ x)
        if abs(moved) > settings.max_step:
            step *= settings.max_step / abs(moved)
            moved = math.copysign(settings.max_step, moved)
        w = w - step
    compared = other is not None and weight > 0  # the floors judge on the gain alone
    # The floors' scores are the last snapshot's (one state for every pair of a block); before
    # the first snapshot rows are kept but never judged (block -1).
    judge: OnlineState | Snapshot = state.frozen if state.frozen is not None else state
    block = -1 if state.frozen is None else state.compared // BLOCK
    recent = state.recent if state.recent is not None else np.zeros((0, 4))
    recent_blocks = row_blocks(state.recent, state.recent_blocks)
    if compared:
        row = [logit, logit + _correction(judge, inputs, settings), target, weight]
        recent = np.vstack([recent, row])[-WINDOW:]
        recent_blocks = np.append(recent_blocks, float(block))[-WINDOW:]
    vector = _vector(inputs)
    regions = state.regions
    if len(vector) and settings.regions:
        regions = regions or Regions.fresh(len(vector))
        if compared:
            # Scored before learning (prequentially), as routing would have: the floor's
            # evidence.
            without = predict(replace(judge, regions=None), logit, inputs, settings,
                              known=known)
            level = (0.0 if judge.regions is None
                     else judge.regions.shift(vector, known=known, gated=False))
            regions = regions.floor((without, without + level), target, weight,
                                    settings.tolerance, block)
        regions = regions.learn(
            vector, p=_sigmoid(logit), target=target, weight=weight, known=known, decay=decay)
    new = replace(state, weights=w, squares=squares, recent=recent, reports=n, regions=regions,
                  recent_blocks=recent_blocks, compared=state.compared + compared,
                  learned=state.learned * decay + weight, loss_shipped=loss_shipped,
                  loss_online=loss_online, evidence=evidence, reporters=reporters,
                  offset=offset)
    if compared:
        new = replace(new, gate=opening(recent[:, 0], recent[:, 1], recent[:, 2], recent[:, 3],
                                        settings.tolerance, recent_blocks))
        new = _compare(new, judge, block, logit, inputs, target, weight, settings)
        if new.compared % BLOCK == 0:
            new = replace(new, frozen=_snapshot(new))
    return new, Outcome(target, weight, abs(moved))


def _compare(state: OnlineState, judge: OnlineState | Snapshot, block: int, logit: float,
             inputs: np.ndarray, gain: float, weight: float,
             settings: OnlineSettings) -> OnlineState:
    """A comparison's lesson for the mix: scored first by ``judge``'s mix (the snapshot of
    ``block``, for the floor), then learned."""
    length = _length(inputs)
    before = logit if judge.mix is None else judge.mix.logit(logit, length)
    rows = state.comparisons if state.comparisons is not None else np.zeros((0, 5))
    blocks = np.append(row_blocks(state.comparisons, state.comparison_blocks), float(block))
    rows = np.vstack([rows, [logit, length, gain, weight, before]])[-KEPT:]
    blocks = blocks[-KEPT:]
    gate = opening(rows[:, 0], rows[:, 4], rows[:, 2], rows[:, 3], settings.tolerance, blocks)
    return replace(state, comparisons=rows, comparison_blocks=blocks, mix=fit_mix(rows[:, :4]),
                   mix_gate=gate)
