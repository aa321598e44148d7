"""Is a new prompt the same question as a cached one? Sans-IO: plain functions over plain data.

A hit serves an answer written for another prompt, so a false hit is the costly error. The
cosine of WordLlama sentence vectors (static token embeddings shipped in the ``wordllama``
wheel) ranks paraphrases well (ROC-AUC 0.81 on the QQP dev pairs, token Jaccard 0.72) but is
blind to the one word that changes an answer ("capital of France" / "of Germany": cosine 0.44
only because both names are rare; "is X safe" / "is X not safe": 0.97). Guards veto what a mean
of word vectors cannot see (numbers, negation, question words, I/you, named entities), and a
salient word on one side only lowers the score. :func:`similarity` folds all of it into one
score, so ``cache.similarity_thresh`` alone decides. Per-text features are computed once into a
:class:`Fingerprint`; a comparison then costs ~12 us.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import RouterError
from .similarity_guards import GENERIC, TextFeatures, aligned, lexical_veto, read_text

__all__ = ["DEFAULT_THRESHOLD", "Embedder", "Fingerprint", "guard_veto", "guards_allow", "match",
           "normalize_text", "similarity"]

DEFAULT_THRESHOLD = 0.85
"""The default ``cache.similarity_thresh``: on the QQP dev pairs, where precision reaches its
plateau (0.87 at recall 0.16; the bare cosine at 0.85: 0.65 at 0.43). Stricter thresholds buy
little precision (QQP's label noise caps it near 0.9) and lose a fifth of the hits per 0.05."""

_CONTRACTIONS = [
    (re.compile(p, re.IGNORECASE), r)
    for p, r in (
        (r"\bcan'?t\b", "can not"), (r"\bcannot\b", "can not"), (r"\bwon'?t\b", "will not"),
        (r"n't\b", " not"), (r"'re\b", " are"), (r"'m\b", " am"), (r"'ll\b", " will"),
        (r"'ve\b", " have"), (r"'d\b", " would"),
        (r"\b(what|who|where|how|why|when|that|there|it|he|she)'s\b", r"\1 is"),
    )
]
_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Canonical spelling of a prompt: NFKC, straight quotes, contractions spelled out, one
    space. Contractions are expanded so "What's" and "What is" share tokens and the negation in
    "isn't" is the word "not" that the negation guard looks for."""
    text = unicodedata.normalize("NFKC", text).replace("\u2019", "'").replace("\u2018", "'")
    for pattern, repl in _CONTRACTIONS:
        text = pattern.sub(repl, text)
    return _SPACE.sub(" ", text).strip()


# -- fingerprints ---------------------------------------------------------------------------

_MAX_WORD_VECTORS = 64  # per text; later words match by spelling only, which is stricter


@dataclass(frozen=True, slots=True, eq=False)
class Fingerprint:
    """Everything a comparison needs from one text, computed once (keep it with the entry).

    ``features`` is what the text says by word class (:class:`TextFeatures`: numbers, negations,
    question words, persons, modals, tense, content words...); the common ones are mirrored as
    attributes. Each content word has a ``salience``: the norm of its summed token vectors.
    WordLlama gives function words short vectors and rare content words long ones ("the" 1.6,
    "best" 9.8, "France" 21), an IDF without a corpus.
    """

    text: str  # normalised
    vector: np.ndarray = field(repr=False)  # (dim,) float32, unit (zero without tokens)
    features: TextFeatures = field(repr=False)
    salience: np.ndarray = field(repr=False)  # (len(words),) float32
    word_vectors: np.ndarray = field(repr=False)  # (<= len(words), dim) float16, unit rows

    @property
    def numbers(self) -> frozenset[str]:
        return self.features.numbers

    @property
    def negations(self) -> frozenset[str]:
        return self.features.negations

    @property
    def question(self) -> frozenset[str]:
        return self.features.question

    @property
    def persons(self) -> frozenset[int]:
        return self.features.persons

    @property
    def words(self) -> tuple[str, ...]:
        return self.features.words

    @property
    def entity(self) -> tuple[bool, ...]:
        return self.features.entity


def _word_sums(tokens: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Row ``i``: the sum of ``tokens[lo[i]:hi[i]]``. Spans are in text order, so blocks of 64
    words cover a short run of tokens and a (64 x run) 0/1 product stays linear overall; it is
    five times faster than a cumulative sum, which numpy does not vectorise."""
    out = np.zeros((len(lo), tokens.shape[1]), np.float32)
    for s in range(0, len(lo), 64):
        block_lo, block_hi = lo[s : s + 64], hi[s : s + 64]
        first, last = int(block_lo.min()), int(block_hi.max())
        if last > first:
            at = np.arange(first, last)
            member = (at >= block_lo[:, None]) & (at < block_hi[:, None])
            out[s : s + 64] = member.astype(np.float32) @ tokens[first:last]
    return out


def _fingerprint(text: str, ids: np.ndarray, offsets: np.ndarray, table: np.ndarray) -> Fingerprint:
    """The fingerprint of a normalised ``text`` from its token ``ids``, their ``(n, 2)``
    character ``offsets`` and the embedding ``table``. A word's vector is the sum of the
    vectors of the tokens overlapping it."""
    tokens = table[ids]
    vector = tokens.sum(axis=0) if len(ids) else np.zeros(table.shape[1], np.float32)
    norm = float(np.sqrt(vector @ vector))
    vector = vector / norm if norm > 0 else vector
    features = read_text(text)
    spans = np.asarray(features.spans, np.int64).reshape(-1, 2)
    lo = np.searchsorted(offsets[:, 1], spans[:, 0], side="right")  # first token ending in it
    hi = np.searchsorted(offsets[:, 0], spans[:, 1], side="left")  # first token after it
    sums = _word_sums(tokens, lo, hi)
    salience = np.sqrt(np.einsum("ij,ij->i", sums, sums))
    top = slice(0, _MAX_WORD_VECTORS)
    return Fingerprint(
        text=text,
        vector=vector,
        features=features,
        salience=salience,
        word_vectors=(sums[top] / np.maximum(salience[top, None], 1e-6)).astype(np.float16),
    )


# -- the embedder ---------------------------------------------------------------------------


class Embedder:
    """WordLlama ``l2_supercat`` 256-dim vectors, loaded once, lazily, strictly offline.

    wordllama 0.4 looks for its tokenizer under ``tokenizer/`` while its wheel ships it under
    ``tokenizers/``, and on a miss downloads it. ``cache_dir`` = the installed package with
    ``disable_download=True`` finds both files locally; a missing file raises
    :class:`RouterError` instead. Pooling is done here so one tokenizer pass yields the sentence
    and word vectors. Thread-safe: callers may run it in ``trio.to_thread``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: tuple[np.ndarray, Any] | None = None

    @property
    def dim(self) -> int:
        """The vector dimension (256)."""
        return int(self._model()[0].shape[1])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of the normalised ``texts``, ``(len(texts), dim)`` float32; the zero
        vector for a text without tokens. Row ``i`` equals ``fingerprint(texts[i]).vector``."""
        table, tokenizer = self._model()
        out = np.zeros((len(texts), table.shape[1]), np.float32)
        normal = [normalize_text(t) for t in texts]
        for row, enc in zip(out, tokenizer.encode_batch(normal, add_special_tokens=False),
                            strict=True):
            if enc.ids:
                row[:] = table[enc.ids].sum(axis=0)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.divide(out, norms, out=out, where=norms > 0)

    def fingerprint(self, text: str) -> Fingerprint:
        """The :class:`Fingerprint` of ``text`` (~0.2 ms for a one-line prompt)."""
        table, tokenizer = self._model()
        normal = normalize_text(text)
        enc = tokenizer.encode(normal, add_special_tokens=False)
        offsets = np.asarray(enc.offsets, np.int64).reshape(-1, 2)
        return _fingerprint(normal, np.asarray(enc.ids, np.int64), offsets, table)

    def _model(self) -> tuple[np.ndarray, Any]:
        with self._lock:
            if self._loaded is None:
                self._loaded = _load_wordllama()
            return self._loaded


def _load_wordllama() -> tuple[np.ndarray, Any]:
    # wordllama.inference runs logging.basicConfig(level=INFO) on import: undo it, the
    # application owns the root logger.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        import wordllama
        from wordllama import WordLlama
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    package = Path(wordllama.__file__).parent
    if not (package / "tokenizers" / "l2_supercat_tokenizer_config.json").is_file():
        raise RouterError(f"wordllama: no packaged tokenizer under {package}/tokenizers")
    try:
        model = WordLlama.load("l2_supercat", dim=256, cache_dir=package, disable_download=True)
    except (OSError, ValueError) as exc:  # FileNotFoundError: a file the wheel lacks
        raise RouterError(f"wordllama: cannot load l2_supercat offline: {exc}") from exc
    model.tokenizer.no_padding()
    return np.ascontiguousarray(model.embedding, np.float32), model.tokenizer


# -- guards and score -----------------------------------------------------------------------

_SOFT_MATCH = 0.85  # word-vector cosine at which two spellings count as one word (maths/math)
_SALIENCE_SCALE = 40.0  # cosine points lost per unit of salience of an unmatched word
_UNALIGNED = 0.35  # cosine points lost by a pair that is not word-for-word aligned
_VETOED = 0.49  # vetoed pairs score 0.49 * cosine: below 0.5, still ordered by cosine


def _align(a: Fingerprint, b: Fingerprint) -> list[int]:
    """For each content word of ``a``, the index of its counterpart among ``b``'s, or -1: the
    first word sharing an inflection key, else the nearest word vector at ``_SOFT_MATCH``."""
    fa, fb = a.features, b.features
    out = [-1] * len(fa.words)
    for i, keys in enumerate(fa.keys):
        if not keys.isdisjoint(fb.key_set):
            out[i] = next(j for j, other in enumerate(fb.keys) if not keys.isdisjoint(other))
    soft = [i for i, j in enumerate(out) if j < 0 and i < len(a.word_vectors)]
    if soft and len(b.word_vectors):
        sims = a.word_vectors[soft].astype(np.float32) @ b.word_vectors.astype(np.float32).T
        for i, row in zip(soft, sims, strict=True):
            if row.max() >= _SOFT_MATCH:
                out[i] = int(row.argmax())
    return out


def _compare(query: Fingerprint, cached: Fingerprint) -> tuple[str | None, float]:
    """The veto reason (or None) and the cosine points the pair loses: the salience of its most
    salient unmatched word / 40, plus ``_UNALIGNED`` unless the two are aligned."""
    q_to_c, c_to_q = _align(query, cached), _align(cached, query)
    veto = lexical_veto(query.features, cached.features, q_to_c, c_to_q)
    if veto is not None:
        return veto, 0.0
    worst = 0.0
    for a, a_to_b in ((query, q_to_c), (cached, c_to_q)):
        salient = [a.salience[i] for i, j in enumerate(a_to_b)
                   if j < 0 and a.features.words[i] not in GENERIC]
        worst = max(worst, *salient, 0.0)
    penalty = worst / _SALIENCE_SCALE
    if not aligned(query.features, cached.features, q_to_c, c_to_q):
        penalty += _UNALIGNED
    return None, float(penalty)


def guard_veto(query: Fingerprint, cached: Fingerprint) -> str | None:
    """Why ``cached`` must not answer ``query`` whatever their cosine, or None: ``"number"``
    ("3 items" / "4 items"), ``"negation"`` (added, dropped or moved: "is X safe" / "is X not
    safe"), ``"question"`` ("how" / "why"), ``"person"`` ("your predictions" / "some
    predictions"), ``"entity"`` (a named entity on one side only: "France" / "Germany")."""
    return _compare(query, cached)[0]


def guards_allow(query: Fingerprint, cached: Fingerprint) -> bool:
    """True when no guard vetoes the pair (:func:`guard_veto` is None)."""
    return _compare(query, cached)[0] is None


def similarity(query: Fingerprint, cached: Fingerprint) -> float:
    """How safely ``cached``'s answer serves ``query``, in [0, 1]; higher is safer.

    A pair the guards allow scores ``0.5 + 0.5 * max(0, cosine - s / 40)``, where ``s`` is the
    salience of the most salient content word found on one side only (0 when every word has a
    counterpart; "lower" in "lower back" costs 0.25 of cosine). A vetoed pair scores
    ``0.49 * cosine`` (below 0.5). So a threshold ``t`` at or above 0.5 means "no guard vetoes
    and the adjusted cosine is at least ``2t - 1``" (0.85: 0.7), and a threshold below 0.5
    lets near-identical vectors override the guards.
    """
    cosine = float(query.vector @ cached.vector)
    veto, penalty = _compare(query, cached)
    if veto is not None:
        return max(0.0, _VETOED * cosine)
    return 0.5 + 0.5 * min(1.0, max(0.0, cosine - penalty))


def match(
    query: Fingerprint, cached: Fingerprint, *, threshold: float = DEFAULT_THRESHOLD
) -> tuple[bool, float]:
    """``(hit, score)``: may ``cached``'s answer serve ``query`` at ``threshold``? The score is
    :func:`similarity`; ``threshold`` is ``cache.similarity_thresh``."""
    score = similarity(query, cached)
    return score >= threshold, score
