"""Is a new prompt the same question as a cached one? Sans-IO: plain functions over plain data.

A hit serves an answer written for another prompt, so a false hit is the costly error, and the
score is shaped so that the default threshold is the safe one. Three parts:

* the cosine of WordLlama sentence vectors (static token embeddings shipped in the
  ``wordllama`` wheel) ranks paraphrases well (ROC-AUC 0.81 on the QQP dev pairs, token Jaccard
  0.72) but is blind to the word that changes an answer ("is X safe" / "is X not safe": 0.97;
  reordered words: 1.0);
* guards (``engine.core.cache.guards``) veto what a sum of word vectors cannot see: numbers,
  negation, question words, I / you, the role of "I" / "me", polar opposites, named entities
  and acronyms ("IT" is not "it"), a repeated phrase, two words trading places;
* the alignment test asks whether the two are word-for-word paraphrases: the same content
  words and meaning-bearing function words (modal verbs, "about", "be"...), the same tense,
  a compatible order ("the capital of France" / "France's capital" is aligned).

Why alignment gates the default: on the QQP dev pairs, pairs no guard vetoes but that differ
in a content word, a function word or their order are duplicates 76% of the time at cosine
>= 0.9 (80% at >= 0.95), aligned pairs 97%. Cosine alone cannot get there: its top ranks hold
QQP's label noise and reorderings ("Pakistan nuked India"), and its precision peaks at 0.89.

What :func:`similarity` means, so that ``cache.similarity_thresh`` alone decides:

* below 0.5: a guard vetoes (the score is ``0.49 * cosine``);
* 0.5 to 0.825: allowed but not aligned, ``0.5 + 0.5 * (cosine - 0.35 - s / 40)`` where ``s``
  is the salience of the most salient content word on one side only;
* aligned: ``0.5 + 0.5 * cosine``, the only pairs that can score above 0.825.

With ``cache.embedder`` (a model behind an embeddings endpoint, :meth:`Fingerprint.with_vector`)
the guards and the alignment test still apply and pairs score as above with that model's
cosine, so by default only aligned pairs hit. ``cache.embedder.unaligned_cosine`` opens the
rest: a pair that is allowed but not aligned then scores ``cosine - (unaligned_cosine -
0.85)``, so that at the default threshold it hits at that model's cosine ``unaligned_cosine``
(and each point a threshold sits above 0.85 raises that bar by the same). The bar depends on
the model and no value is safe for every one: on the QQP ``choose`` split the old fixed 0.95
gave precision 0.943 with all-MiniLM-L6-v2 and 0.765 with multilingual-e5-small, whose
cosines crowd near 1. A team measures its own with ``bench/cache_similarity.py
--embedder-url``, which picks it on ``choose`` and reports on ``report``.

The default 0.85 thus means "aligned, no veto, cosine >= 0.7". On the QQP dev pairs split by
``engine.training.cache_split`` (rules designed on ``design``, the threshold checked on
``choose``): precision 0.963 at recall 0.069 on ``report``, which nothing was tuned on (27
hits: a 95% interval of 0.82-0.99); see ``bench/cache_similarity.py``. Lower thresholds trade
precision for recall (over all pairs, 0.80: 0.93 at 0.11; 0.60: 0.81 at 0.25). Per-text features
are computed once into a :class:`Fingerprint`; a comparison then costs ~15-25 us (guards on the
texts first, the word alignment only if they pass).
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import RouterError

from .guards import (
    ALIGNED_GUARDS,
    TEXT_GUARDS,
    GuardKey,
    TextFeatures,
    aligned,
    guard_key,
    keyed_veto,
    pack_features,
    read_guard_key,
    read_text,
    unmatched,
    unpack_features,
)

__all__ = ["DEFAULT_THRESHOLD", "Comparison", "Embedder", "Fingerprint", "compare", "guard_veto",
           "guards_allow", "match", "normalize_text", "similarity"]

DEFAULT_THRESHOLD = 0.85
"""The default ``cache.similarity_thresh``: aligned pairs (word-for-word paraphrases) with a
cosine of at least 0.7, nothing else. Precision 0.985 / 0.966 / 0.963 on the design, choose
and report splits (``engine.training.cache_split``). The choose split's own pick, 0.825 (one
hit more there), is the top score of pairs that are *not* aligned: 0.85 keeps the default
inside the aligned-only range. The remaining false hits read as label noise ("maths" /
"math problem")."""

_CONTRACTIONS = [
    (re.compile(p, re.IGNORECASE), r)
    for p, r in (
        (r"\bcan'?t\b", "can not"), (r"\bcannot\b", "can not"), (r"\bwon'?t\b", "will not"),
        (r"n't\b", " not"), (r"'re\b", " are"), (r"'m\b", " am"), (r"'ll\b", " will"),
        (r"'ve\b", " have"), (r"'d\b", " would"),
        (r"\b(what|who|where|how|why|when|that|there|it|he|she)'s\b", r"\1 is"),
    )
]


def normalize_text(text: str) -> str:
    """Canonical spelling of a prompt: NFKC, straight quotes, contractions spelled out, one
    space. Contractions are expanded so "What's" and "What is" share tokens and the negation in
    "isn't" is the word "not" that the negation guard looks for."""
    text = unicodedata.normalize("NFKC", text).replace("\u2019", "'").replace("\u2018", "'")
    # the patterns after the first three all need an apostrophe (and none writes one); the
    # first three need "can" or "won", which an ASCII text shows in any case once lower-cased
    if "'" in text:
        patterns = _CONTRACTIONS
    elif text.isascii() and "can" not in (low := text.lower()) and "won" not in low:
        patterns = []
    else:
        patterns = _CONTRACTIONS[:3]
    for pattern, repl in patterns:
        text = pattern.sub(repl, text)
    # re.sub(r"\s+", " ", text).strip() without the regex: split() cuts at the same whitespace
    return " ".join(text.split())


# -- fingerprints ---------------------------------------------------------------------------

_MAX_WORD_VECTORS = 64  # per text; later words match by spelling only, which is stricter


class Fingerprint:
    """Everything a comparison needs from one text (keep it with the entry; do not change it).

    ``features`` is what the text says by word class (``similarity_guards.TextFeatures``:
    numbers, negations, question words, persons, tense, function words, content words...); the
    common ones are mirrored as attributes. Each content word has a ``salience``: the norm of
    its summed token vectors. WordLlama gives function words short vectors and rare content
    words long ones ("the" 1.6, "best" 9.8, "France" 21), an IDF without a corpus.

    ``features``, ``salience`` and ``word_vectors`` (each content word's unit vector), the
    lexical part, are worked out on first use from the tokens kept for it:
    a lookup reads only the ``vector`` of a query that no cached vector comes near (on real
    prompts most misses: 82-88% of the QQP and MMLU dev questions against the 1,000 before
    them), and an entry that no lookup compares never needs them. The result is the same
    either way.

    Before that, a comparison reads the :attr:`guard_key` (numbers, negations, question
    words, persons, roles), which decides the first guards on its own: a pair they veto never
    needs the lexical part (``guards.read_guard_key`` reads the key at a third of the cost).
    """

    __slots__ = ("_guard_key", "_lexical", "_tokens", "external", "text", "vector")

    def __init__(
        self, text: str, vector: np.ndarray, features: TextFeatures | None = None,
        salience: np.ndarray | None = None, word_vectors: np.ndarray | None = None,
        external: bool = False, *, tokens: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
        guard_key: GuardKey | None = None,
    ) -> None:
        """The lexical part given (``features``, ``salience``, ``word_vectors``), or the
        ``tokens`` to work it out from: ``(ids, (n, 2) character offsets, embedding table)``;
        ``guard_key``, if it has been read."""
        self.text = text  # normalised
        self.vector = vector  # (dim,) float32, unit (zero without tokens)
        #: The sentence vector came from ``cache.embedder`` (:meth:`with_vector`), not the table.
        self.external = external
        self._lexical: tuple[TextFeatures, np.ndarray, np.ndarray] | None = None
        self._tokens = tokens
        self._guard_key = guard_key
        if features is not None and salience is not None and word_vectors is not None:
            self._lexical = (features, salience, word_vectors)
        elif tokens is None:
            raise ValueError("a fingerprint needs its lexical part or the tokens to make it")

    def __repr__(self) -> str:
        return f"Fingerprint({self.text!r})"

    @property
    def features(self) -> TextFeatures:
        return (self._lexical or self._settle())[0]

    @property
    def guard_key(self) -> GuardKey:
        """What the first guards compare (``guards.GuardKey``): from the lexical part once
        worked out, else read from the text alone; kept."""
        key = self._guard_key
        if key is None:
            lexical = self._lexical
            key = guard_key(lexical[0]) if lexical is not None else read_guard_key(self.text)
            self._guard_key = key
        return key

    @property
    def salience(self) -> np.ndarray:
        """(len(words),) float32."""
        return (self._lexical or self._settle())[1]

    @property
    def word_vectors(self) -> np.ndarray:
        """(<= len(words), dim) float16, unit rows."""
        return (self._lexical or self._settle())[2]

    @property
    def settled(self) -> bool:
        """Whether the lexical part has been worked out."""
        return self._lexical is not None

    def settle(self) -> None:
        """Work out the lexical part now (it is kept)."""
        if self._lexical is None:
            self._settle()

    def _settle(self) -> tuple[TextFeatures, np.ndarray, np.ndarray]:
        tokens = self._tokens
        if tokens is None:  # settled meanwhile, in another thread
            assert self._lexical is not None
            return self._lexical
        ids, offsets, table = tokens
        self._lexical = lexical = _lexical(self.text, table[ids], offsets)
        self._tokens = None
        return lexical

    def with_vector(self, vector: np.ndarray) -> Fingerprint:
        """This fingerprint with a sentence vector from another model (``cache.embedder``):
        the guards and the alignment still read the text; the score then trusts that model's
        cosine (:func:`compare`)."""
        vector = np.asarray(vector, np.float32)
        norm = float(np.sqrt(vector @ vector))
        vector = vector / norm if norm > 0 else vector
        if self._lexical is None:
            return Fingerprint(self.text, vector, external=True, tokens=self._tokens,
                               guard_key=self._guard_key)
        return Fingerprint(self.text, vector, *self._lexical, external=True,
                           guard_key=self._guard_key)

    def pack(self) -> tuple[Any, ...]:
        """This fingerprint as a plain tuple of strings, bytes and arrays: what a cache keeps
        per entry. The cyclic collector stops tracking such a tuple once it has seen it, so a
        cache of 100,000 entries adds nothing to a full collection (as objects, a
        fingerprint's features are a few dozen tracked sets and tuples). Unsettled, it holds
        the token ids and offsets instead of the lexical part (:meth:`unpack` needs the
        table then), and in its third place the :attr:`guard_key` if it has been read (a
        tuple of tuples of strings and numbers, untracked too), else None."""
        if self._lexical is None:
            assert self._tokens is not None
            ids, offsets, _ = self._tokens
            return (self.text, self.vector, self._guard_key, ids, offsets, self.external)
        features, salience, word_vectors = self._lexical
        return (self.text, self.vector, pack_features(features), salience, word_vectors,
                self.external)

    @classmethod
    def unpack(cls, packed: tuple[Any, ...], table: np.ndarray | None = None) -> Fingerprint:
        """The fingerprint :meth:`pack` packed (about 10 µs settled: a cache unpacks only the
        few candidates a lookup compares); an unsettled one needs the embedding ``table``."""
        text, vector, features, salience, word_vectors, external = packed
        if not isinstance(features, bytes):  # unsettled: the guards' key or None, then the
            if table is None:                # token ids and offsets
                raise ValueError("an unsettled fingerprint unpacks with its embedding table")
            return cls(text, vector, external=external, tokens=(salience, word_vectors, table),
                       guard_key=features)
        return cls(text, vector, unpack_features(features), salience, word_vectors, external)

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
    character ``offsets`` and the embedding ``table``: its sentence vector now, its lexical
    part when first used."""
    # table[ids].sum(axis=0), spelled as what it calls: ``take`` gathers the same rows in a
    # third less work than fancy indexing, and the sum is the same reduction
    if len(ids):
        vector = np.add.reduce(table.take(ids, axis=0), axis=0)
    else:
        vector = np.zeros(table.shape[1], np.float32)
    norm = float(np.sqrt(vector @ vector))
    if norm > 0:
        vector /= norm  # a new array: divided in place, as ``vector / norm`` would
    return Fingerprint(text, vector, tokens=(ids, offsets, table))


def _lexical(text: str, tokens: np.ndarray, offsets: np.ndarray
             ) -> tuple[TextFeatures, np.ndarray, np.ndarray]:
    """A fingerprint's lexical part: the text's features, and each content word's salience
    and unit vector, a word's vector being the sum of the ``tokens`` (vectors) overlapping
    it."""
    features = read_text(text)
    spans = np.asarray(features.spans, np.int64).reshape(-1, 2)
    lo = np.searchsorted(offsets[:, 1], spans[:, 0], side="right")  # first token ending in it
    hi = np.searchsorted(offsets[:, 0], spans[:, 1], side="left")  # first token after it
    sums = _word_sums(tokens, lo, hi)
    salience = np.sqrt(np.einsum("ij,ij->i", sums, sums))
    top = slice(0, _MAX_WORD_VECTORS)
    word_vectors = (sums[top] / np.maximum(salience[top, None], 1e-6)).astype(np.float16)
    return features, salience, word_vectors


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

    @property
    def table(self) -> np.ndarray:
        """The token embedding table, ``(vocabulary, dim)`` float32."""
        return self._model()[0]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of the normalised ``texts``, ``(len(texts), dim)`` float32; the zero
        vector for a text without tokens. Row ``i`` equals ``fingerprint(texts[i]).vector``."""
        table, tokenizer = self._model()
        normal = [normalize_text(t) for t in texts]
        if len(normal) == 1:  # a request being routed
            # The batch call without offsets (``encode_batch_fast``): the same ids, a quarter
            # less CPU than ``encode``; one text runs on this thread, not the tokenizer's pool.
            ids = tokenizer.encode_batch_fast(normal, add_special_tokens=False)[0].ids
            row = table[ids].sum(axis=0) if ids else np.zeros(table.shape[1], np.float32)
            norm = np.sqrt(np.add.reduce(row * row))  # the rows' below, one row's work
            if norm > 0:
                row /= norm
            return row[None]
        out = np.zeros((len(texts), table.shape[1]), np.float32)
        encodings = tokenizer.encode_batch(normal, add_special_tokens=False)
        for row, enc in zip(out, encodings, strict=True):
            if enc.ids:
                row[:] = table[enc.ids].sum(axis=0)
        norms = np.sqrt(np.add.reduce(out * out, axis=1, keepdims=True))  # np.linalg.norm's sum
        unit: np.ndarray = np.divide(out, norms, out=out, where=norms > 0)
        return unit

    def fingerprint(self, text: str, *, normalised: str | None = None) -> Fingerprint:
        """The :class:`Fingerprint` of ``text`` (~0.2 ms for a one-line prompt);
        ``normalised`` is ``normalize_text(text)``, if the caller has it already."""
        table, tokenizer = self._model()
        normal = normalize_text(text) if normalised is None else normalised
        enc = tokenizer.encode(normal, add_special_tokens=False)
        pairs = enc.offsets  # a list of (start, end) tuples: flat, numpy reads it at half the cost
        offsets = np.fromiter(chain.from_iterable(pairs), np.int64, 2 * len(pairs)).reshape(-1, 2)
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
_UNALIGNED = 0.35  # cosine points lost by a pair that is not a word-for-word paraphrase
_VETOED = 0.49  # vetoed pairs score 0.49 * cosine: below 0.5, still ordered by cosine


def _spelled_alike(a: TextFeatures, b: TextFeatures) -> list[int]:
    """For each content word of ``a``: the same word in ``b``, else the first word of ``b``
    sharing an inflection key with it, else -1."""
    same, shared = b.word_index, b.first_with_key
    out = [same.get(word, -1) for word in a.words]
    for i, j in enumerate(out):
        if j < 0:
            out[i] = min((shared[k] for k in a.keys[i] if k in shared), default=-1)
    return out


def _align(a: Fingerprint, b: Fingerprint) -> tuple[list[int], list[int]]:
    """For each content word of ``a``, the index of its counterpart among ``b``'s, or -1; and
    the same from ``b`` to ``a``. The counterpart is the same word, else the first sharing an
    inflection key, else the nearest word vector at ``_SOFT_MATCH`` or more."""
    a_to_b, b_to_a = _spelled_alike(a.features, b.features), _spelled_alike(b.features, a.features)
    rows = [i for i, j in enumerate(a_to_b) if j < 0 and i < len(a.word_vectors)]
    cols = [j for j, i in enumerate(b_to_a) if i < 0 and j < len(b.word_vectors)]
    if (rows or cols) and len(a.word_vectors) and len(b.word_vectors):
        sims = a.word_vectors.astype(np.float32) @ b.word_vectors.astype(np.float32).T
        for i in rows:
            if sims[i].max() >= _SOFT_MATCH:
                a_to_b[i] = int(sims[i].argmax())
        for j in cols:
            if sims[:, j].max() >= _SOFT_MATCH:
                b_to_a[j] = int(sims[:, j].argmax())
    return a_to_b, b_to_a


@dataclass(frozen=True, slots=True)
class Comparison:
    """Why a pair scores what it scores (:func:`compare`)."""

    cosine: float
    vetoes: tuple[str, ...]  # every guard that tells the two apart; the score uses the first
    aligned: bool  # a word-for-word paraphrase; False when a guard stopped the comparison
    penalty: float  # cosine points lost: unmatched salience / 40, plus 0.35 unless aligned
    score: float


def compare(query: Fingerprint, cached: Fingerprint, *, all_vetoes: bool = False,
            unaligned_cosine: float | None = None) -> Comparison:
    """The :class:`Comparison` of two fingerprints: :func:`similarity` with its reasons.

    By default the guards stop at the first veto, as :func:`similarity` does (the cheap text
    guards first, the word alignment only if they pass); ``all_vetoes`` runs every guard.
    ``unaligned_cosine`` is ``cache.embedder.unaligned_cosine``: with vectors from that
    endpoint on both sides, the cosine at which an allowed pair that is not aligned hits at
    the default threshold (None: such pairs score as with the packaged table, below 0.825).
    """
    cosine = float(query.vector @ cached.vector)
    vetoed = max(0.0, _VETOED * cosine)
    # the first text guards, from the two keys: a pair they veto needs no more of either text
    if not all_vetoes and (veto := keyed_veto(query.guard_key, cached.guard_key)) is not None:
        return Comparison(cosine, (veto,), False, 0.0, vetoed)
    qf, cf = query.features, cached.features
    vetoes: list[str] = []
    for name, guard in TEXT_GUARDS:
        if guard(qf, cf):
            if not all_vetoes:
                return Comparison(cosine, (name,), False, 0.0, vetoed)
            vetoes.append(name)
    q_to_c, c_to_q = _align(query, cached)
    for name, aligned_guard in ALIGNED_GUARDS:
        if aligned_guard(qf, cf, q_to_c, c_to_q):
            if not all_vetoes:
                return Comparison(cosine, (name,), False, 0.0, vetoed)
            vetoes.append(name)
    is_aligned = aligned(qf, cf, q_to_c, c_to_q)
    salience = [query.salience[i] for i in unmatched(qf, q_to_c)]
    salience += [cached.salience[i] for i in unmatched(cf, c_to_q)]
    penalty = max(salience, default=0.0) / _SALIENCE_SCALE + (0.0 if is_aligned else _UNALIGNED)
    if vetoes:
        score = vetoed
    elif (unaligned_cosine is not None and query.external and cached.external
          and not is_aligned):  # see "With cache.embedder"
        penalty = unaligned_cosine - DEFAULT_THRESHOLD
        score = max(0.0, min(1.0, cosine - penalty))
    else:
        score = 0.5 + 0.5 * min(1.0, max(0.0, cosine - penalty))
    return Comparison(cosine, tuple(vetoes), is_aligned, float(penalty), score)


def guard_veto(query: Fingerprint, cached: Fingerprint) -> str | None:
    """Why ``cached`` must not answer ``query`` whatever their cosine, or None: the first of
    ``similarity_guards.TEXT_GUARDS`` and ``ALIGNED_GUARDS`` that tells them apart
    (``"number"``, ``"negation"``, ``"question"``, ``"person"``, ``"role"``, ``"opposite"``,
    ``"entity"``, ``"repeat"``, ``"order"``)."""
    vetoes = compare(query, cached).vetoes
    return vetoes[0] if vetoes else None


def guards_allow(query: Fingerprint, cached: Fingerprint) -> bool:
    """True when no guard vetoes the pair (:func:`guard_veto` is None)."""
    return not compare(query, cached).vetoes


def similarity(query: Fingerprint, cached: Fingerprint, *,
               unaligned_cosine: float | None = None) -> float:
    """How safely ``cached``'s answer serves ``query``, in [0, 1]; higher is safer.

    A pair the guards allow scores ``0.5 + 0.5 * max(0, cosine - penalty)``: the penalty is
    ``s / 40``, where ``s`` is the salience of the most salient content word found on one side
    only ("lower" in "lower back" costs 0.25 of cosine), plus 0.35 unless the two texts are
    word-for-word paraphrases (``similarity_guards.aligned``). A vetoed pair scores ``0.49 *
    cosine`` (below 0.5). So a threshold ``t`` means:

    * ``t > 0.825``: aligned pairs only (the most an unaligned pair can score is 0.825), with a
      cosine of at least ``2t - 1``: 0.7 at the default 0.85;
    * ``0.5 <= t <= 0.825``: also unaligned pairs no guard vetoes, with ``cosine - penalty``
      at least ``2t - 1``;
    * ``t < 0.5``: near-identical vectors override the guards.

    ``unaligned_cosine``: see :func:`compare` (``cache.embedder``).
    """
    return compare(query, cached, unaligned_cosine=unaligned_cosine).score


def match(
    query: Fingerprint, cached: Fingerprint, *, threshold: float = DEFAULT_THRESHOLD,
    unaligned_cosine: float | None = None,
) -> tuple[bool, float]:
    """``(hit, score)``: may ``cached``'s answer serve ``query`` at ``threshold``? The score is
    :func:`similarity`; ``threshold`` is ``cache.similarity_thresh``."""
    score = similarity(query, cached, unaligned_cosine=unaligned_cosine)
    return score >= threshold, score
