"""The trained router: does this request need the strong model? Sans-IO, numpy only.

A :class:`LearnedRouter` is a logistic regression over a sparse feature vector of the
conversation (:func:`extract_features`):

* ``dense``: the heuristic's signals (``engine.core.routing.scoring``) and a few shape measures
(lengths, lines, digit and capital shares), standardised with the training set's mean and spread;
* ``words``: hashed word unigrams and bigrams; ``chars``: hashed character n-grams. Hashes are
  CRC-32 and fixed integer arithmetic, never Python's per-process ``hash()``, so a feature
  vector is the same in every process. Counts are log-scaled and each block has unit norm;
* ``embedding`` (optional): the WordLlama sentence vector (``engine.similarity.Embedder``;
  the weights ship inside the ``wordllama`` wheel and load offline).

Whole conversations are scored, not only the last message: the earlier user turns add to
the n-gram counts and to the embedding at ``context_weight`` (the last user message counts
fully), and the lengths of both enter the dense block. So a bare follow-up ("and why?")
after a hard question scores close to the hard question (``engine.core.routing.conversation``;
its :func:`conversation_text`, re-exported here, gives the heuristic the same view).

:meth:`LearnedRouter.score` returns ``p_strong`` in 0..1, calibrated as the chance that the
strong model answers better, in about half a millisecond (every stage reads a bounded prefix
of the text, so long prompts cost little more; BENCHMARKS.md has the figures); :func:`blend`
mixes it with the heuristic's 0-100 score. Models are saved as JSON
(:meth:`LearnedRouter.save`); training lives in ``engine.training.fit``.
"""

from __future__ import annotations

import functools
import json
import math
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from engine.errors import RouterError
from engine.messages import ChatRequest, Message, TextPart

from .conversation import conversation_text, user_turns
from .gate import Gate
from .hashing import bag, text_hashes
from .packing import pack_array, unpack_array
from .scoring import Score, score_request

__all__ = [
    "DEFAULT_MODEL_PATH",
    "DENSE_NAMES",
    "FORMAT_VERSION",
    "Belief",
    "FeatureConfig",
    "Features",
    "LearnedRouter",
    "TextEmbedder",
    "blend",
    "conversation_text",
    "extract_features",
    "pack_weights",
    "request_for_prompt",
    "unpack_weights",
]

FORMAT_VERSION = 1
DEFAULT_MODEL_PATH = Path(__file__).resolve().parents[2] / "data" / "router.json"
"""The router trained on the permissively licensed dev rows, shipped with the package."""

# Heuristic signals divided by their maximum points (engine.core.routing.scoring's table).
_SIGNAL_SCALE = {"tokens": 35, "depth": 15, "system": 10, "json": 10, "tools": 15, "code": 10,
                 "reasoning": 15}
_SHAPE = ("log_chars_last", "log_chars_all", "log_words_last", "log_lines_last", "digit_share",
          "upper_share", "punct_share", "non_ascii_share", "mean_word_len", "log_questions",
          "log_user_turns")
DENSE_NAMES = tuple(f"signal_{k}" for k in _SIGNAL_SCALE) + _SHAPE
_LOG_CHARS_ALL = DENSE_NAMES.index("log_chars_all")

_WORD = re.compile(r"\w+")


class TextEmbedder(Protocol):
    """What the optional embedding block needs (``engine.similarity.Embedder`` fits)."""

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """How a conversation becomes a feature vector; saved with the model.

    ``word_buckets`` and ``char_buckets`` are powers of two; ``char_ngrams`` are the n-gram
    lengths; ``max_chars`` bounds the text the n-grams read (the first ``max_chars * 3/4``
    and the last quarter) and ``embedding_chars`` the text embedded, so scoring stays fast
    on long prompts; ``context_weight`` is what the earlier user turns (the newest
    ``max_context_turns``, read at half those budgets) count for against the last one;
    ``*_scale`` weight the blocks (a smaller scale is a stronger L2 penalty on the block).
    """

    word_buckets: int = 1 << 15
    char_buckets: int = 1 << 15
    char_ngrams: tuple[int, ...] = (3, 4, 5)
    word_bigrams: bool = True
    embeddings: bool = True
    max_chars: int = 2000
    context_weight: float = 0.5
    max_context_turns: int = 4
    embedding_chars: int = 600
    word_scale: float = 0.5
    char_scale: float = 0.5
    embedding_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("word_buckets", "char_buckets"):
            value = getattr(self, name)
            if value < 1 or value & (value - 1):
                raise ValueError(f"{name} must be a power of two, got {value}")

    @property
    def embedding_dim(self) -> int:
        return 256 if self.embeddings else 0

    @property
    def char_start(self) -> int:
        """Where the character n-gram block starts in the feature vector."""
        return len(DENSE_NAMES) + self.embedding_dim + self.word_buckets

    @property
    def size(self) -> int:
        """The length of the feature vector."""
        return self.char_start + self.char_buckets

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FeatureConfig:
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        if "char_ngrams" in known:
            known["char_ngrams"] = tuple(known["char_ngrams"])
        return cls(**known)


@dataclass(frozen=True, slots=True)
class Features:
    """One conversation's features: the raw dense block (before standardising), the
    embedding (or an empty array) and the sparse hashed block (offsets past the embedding)."""

    dense: np.ndarray
    embedding: np.ndarray
    indices: np.ndarray
    values: np.ndarray


def request_for_prompt(prompt: str) -> ChatRequest:
    """A one-turn request holding ``prompt`` (how labelled rows are scored)."""
    return ChatRequest(messages=(Message("user", (TextPart(prompt),)),))


# -- hashing -------------------------------------------------------------------------------------


def _clip(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    head = max_chars * 3 // 4
    return text[:head] + "\n" + text[len(text) - (max_chars - head):]


# -- features ------------------------------------------------------------------------------------


# Character classes of ASCII bytes for _shape: digit, upper, lower, space; everything else
# (punctuation, control characters) counts as punctuation.
_CLASSES = bytes(
    ord("d") if 48 <= c <= 57 else ord("u") if 65 <= c <= 90 else ord("l") if 97 <= c <= 122
    else ord("s") if c == 32 or 9 <= c <= 13 else ord("p")
    for c in range(256)
)
_CLASS_OF = np.frombuffer(_CLASSES, np.uint8)  # the same table, to index with code points


def _shape(last: str, whole: int, user_turns: int) -> list[float]:
    # Shares are measured on the first 2,000 characters (enough to estimate them, and
    # cheap); the word count is scaled up from there.
    sample = last[:2000]
    n = max(1, len(sample))
    words = _WORD.findall(sample)
    if sample.isascii():
        classes = sample.encode().translate(_CLASSES)
        digit, upper, lower, space = (classes.count(c) for c in b"duls")
        other = 0
    else:
        code = np.frombuffer(sample.encode("utf-32-le"), np.uint32)
        counts = np.bincount(_CLASS_OF[np.minimum(code, 255)], minlength=256)
        digit, upper, lower, space = (int(counts[c]) for c in b"duls")
        other = int((code >= 128).sum())
        # a non-ASCII character is none of the ASCII classes (its clipped code, 255, is "p")
    punct = len(sample) - digit - upper - lower - space - other
    return [
        math.log1p(len(last)),
        math.log1p(whole),
        math.log1p(len(words) * len(last) / n),
        math.log1p(last.count("\n")),
        digit / n,
        upper / n,
        punct / n,
        other / n,
        sum(map(len, words)) / max(1, len(words)),
        math.log1p(last.count("?")),
        math.log1p(user_turns),
    ]


def extract_features(
    request: ChatRequest,
    config: FeatureConfig,
    *,
    embedder: TextEmbedder | None = None,
    heuristic: Score | None = None,
) -> Features:
    """The features of ``request`` under ``config``; ``heuristic`` is the request's
    ``score_request`` when the caller has it already (it is computed otherwise).

    Raises:
        RouterError: ``config.embeddings`` is on and no ``embedder`` is given.
    """
    return _features(_conversation(request, config, heuristic), config, embedder)


#: All that the features read of a request: its last user turn, the earlier ones (newest
#: first), the number of user turns and the heuristic's signals.
_Conversation = tuple[str, tuple[str, ...], int, tuple[float, ...]]


def _conversation(request: ChatRequest, config: FeatureConfig,
                  heuristic: Score | None) -> _Conversation:
    last, earlier = user_turns(request, max_earlier=config.max_context_turns)
    signals = (heuristic or score_request(request)).signals
    turns = sum(1 for m in request.messages if m.role == "user")
    return last, tuple(earlier), turns, tuple(float(signals[k]) for k in _SIGNAL_SCALE)


def _features(conversation: _Conversation, config: FeatureConfig,
              embedder: TextEmbedder | None) -> Features:
    last, earlier, turns, signals = conversation
    whole = len(last) + sum(len(t) + 1 for t in earlier)
    dense = np.array([v / s for v, s in zip(signals, _SIGNAL_SCALE.values(), strict=True)]
                     + _shape(last, whole, turns), np.float64)

    # The last message, and the earlier turns (newest first) as one context text at half the
    # budget: scoring a long conversation costs at most 1.5 times a long prompt.
    texts = [(_clip(last, config.max_chars).lower(), 1.0, config.embedding_chars)]
    if earlier:
        context = _clip("\n".join(earlier), config.max_chars // 2).lower()
        texts.append((context, config.context_weight, config.embedding_chars // 2))
    hashed = [(text_hashes(t, config.word_bigrams, config.char_ngrams), w) for t, w, _ in texts]
    w_idx, w_val = bag([(words, w) for (words, _), w in hashed], config.word_buckets,
                       len(DENSE_NAMES) + config.embedding_dim)
    c_idx, c_val = bag([(chars, w) for (_, chars), w in hashed], config.char_buckets,
                       config.char_start)
    indices = np.concatenate([w_idx, c_idx])
    values = np.concatenate([w_val * config.word_scale, c_val * config.char_scale])

    embedding = np.zeros(0, np.float64)
    if config.embeddings:
        if embedder is None:
            raise RouterError("this router uses embeddings: pass an embedder")
        clipped = [_clip(t, budget) for t, _, budget in texts]
        vectors = embedder.embed(clipped).astype(np.float64)
        if vectors.shape[1] != config.embedding_dim:
            raise RouterError(f"this router needs {config.embedding_dim}-dim embeddings, "
                              f"the embedder gives {vectors.shape[1]}")
        if len(texts) == 1:  # the sum below, of one row: the last message's, at weight 1
            embedding = vectors[0]
        else:
            embedding = (vectors * np.array([w for _, w, _ in texts])[:, None]).sum(axis=0)
        norm = math.sqrt(float(embedding @ embedding))  # np.linalg.norm's, without its checks
        if norm > 0:
            embedding = embedding / norm
            if config.embedding_scale != 1.0:  # a product by one is the identity, to the bit
                embedding *= config.embedding_scale
    return Features(dense, embedding, indices, values)


# Conversations up to this many characters have their features remembered (the last
# _REMEMBERED of them): a repeated question, which is what a cache hit is, is routed again
# before the cache is asked (the tier is part of its key), and its features, a pure function
# of its text, are most of that routing's CPU (the embedding and the hashing). ~10 KiB each.
_REMEMBER_CHARS = 4096
_REMEMBERED = 256


# -- the model -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class Belief:
    """What the trained router believes about one request: ``p`` (the calibrated chance the
    strong model answers better), its log-odds ``logit``, the ``inputs`` online learning
    (``engine.core.routing.online``) corrects it from, and ``known``: how close the request
    is to what the router was trained on (0..1, :meth:`LearnedRouter.known`)."""

    p: float
    logit: float
    inputs: np.ndarray
    known: float = 1.0


@dataclass(frozen=True, slots=True, eq=False)
class LearnedRouter:
    """A trained router: ``score(request)`` is the probability that the strong model is
    needed. Build one with ``engine.learned_fit.fit_router`` or :meth:`load`.

    ``weights`` covers the whole feature vector (dense block first); it is float32, as
    saved, so a loaded model scores exactly as the one that was saved.
    """

    config: FeatureConfig
    weights: np.ndarray
    bias: float
    dense_mean: np.ndarray
    dense_std: np.ndarray
    calibration: tuple[float, float] = (1.0, 0.0)
    info: Mapping[str, Any] = field(default_factory=dict)
    embedder: TextEmbedder | None = None
    #: ``info.familiarity``'s centroids, unpacked (:meth:`known`).
    centroids: np.ndarray | None = field(default=None, repr=False)
    #: ``info.gate``, unpacked: the familiarity gate (:meth:`assess`).
    gate: Gate | None = field(default=None, repr=False)
    _remembered: Callable[[_Conversation], tuple[Features, float]] = field(init=False,
                                                                            repr=False)
    #: ``weights`` as float64, what a request's features are multiplied with: every
    #: product casts them so, and a miss would cast the dense and embedding blocks each time.
    _weights64: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_weights64", np.asarray(self.weights, np.float64))

        def remembered(conversation: _Conversation) -> tuple[Features, float]:
            features = _features(conversation, self.config, self.embedder)
            for array in (features.dense, features.embedding, features.indices,
                          features.values):
                array.flags.writeable = False  # shared by every later ask of this text
            return features, self._familiarity(features)

        object.__setattr__(self, "_remembered",
                           functools.lru_cache(maxsize=_REMEMBERED)(remembered))

    def features(self, request: ChatRequest, *, heuristic: Score | None = None) -> Features:
        """:func:`extract_features` of ``request`` under this model's config, remembered
        for the last few hundred short conversations (read-only arrays)."""
        return self._read(request, heuristic)[0]

    def _read(self, request: ChatRequest, heuristic: Score | None) -> tuple[Features, float]:
        """:meth:`features` and the gate's similarity of them (0 without a gate), both
        remembered: a repeated question, a cache hit, pays for neither again."""
        conversation = _conversation(request, self.config, heuristic)
        last, earlier = conversation[0], conversation[1]
        if len(last) + sum(map(len, earlier)) > _REMEMBER_CHARS:
            features = _features(conversation, self.config, self.embedder)
            return features, self._familiarity(features)
        return self._remembered(conversation)

    def logit(self, features: Features) -> float:
        """The model's log-odds for precomputed ``features``."""
        return self._logit(features, self._standardised(features))

    def _standardised(self, features: Features) -> np.ndarray:
        """The dense block, standardised with the training set's mean and spread."""
        standardised: np.ndarray = (features.dense - self.dense_mean) / self.dense_std
        return standardised

    def _logit(self, features: Features, dense: np.ndarray) -> float:
        """:meth:`logit`, the dense block standardised already."""
        w, n_dense = self._weights64, len(dense)
        z = self.bias + float(dense @ w[:n_dense])
        if len(features.embedding):
            z += float(features.embedding @ w[n_dense : n_dense + len(features.embedding)])
        return z + float(features.values @ w.take(features.indices))

    def score(self, request: ChatRequest, *, heuristic: Score | None = None) -> float:
        """``p_strong`` in 0..1: the calibrated chance that the strong model answers better
        than the weak one. Pass the request's ``heuristic`` score if already computed.

        Raises:
            RouterError: the model uses embeddings and was loaded without an embedder.
        """
        return _sigmoid(self._log_odds(request, heuristic)[2])

    def assess(self, request: ChatRequest, *, heuristic: Score | None = None) -> Belief:
        """:meth:`score` with its log-odds and the inputs online learning reads: the
        log-odds (halved), the standardised dense block (over the square root of its size,
        so it weighs about one unit) and the sentence vector. The log-odds are the
        calibrated model's, through the file's familiarity gate if it has one
        (``engine.core.routing.gate``): on a request unlike the training rows they lean on
        the length of the conversation.

        Raises:
            RouterError: the model uses embeddings and was loaded without an embedder.
        """
        features, dense, z = self._log_odds(request, heuristic)
        inputs = np.concatenate([[0.5 * z], dense / math.sqrt(len(dense)),
                                 features.embedding])
        return Belief(_sigmoid(z), z, inputs, self.known(features))

    def _log_odds(self, request: ChatRequest, heuristic: Score | None
                  ) -> tuple[Features, np.ndarray, float]:
        """The request's features, their dense block standardised and its calibrated
        log-odds, through the gate."""
        features, familiarity = self._read(request, heuristic)
        dense = self._standardised(features)
        slope, intercept = self.calibration
        z = slope * self._logit(features, dense) + intercept
        if self.gate is not None:
            z = self.gate.lean(z, float(features.dense[_LOG_CHARS_ALL]), familiarity)
        return features, dense, z

    def _familiarity(self, features: Features) -> float:
        """The gate's similarity of a request's character n-gram block (0 without a gate)."""
        gate = self.gate
        if gate is None:
            return 0.0
        start = self.config.char_start
        first = int(features.indices.searchsorted(start))  # the indices are sorted
        return gate.similarity(features.indices[first:] - start, features.values[first:])

    def known(self, features: Features) -> float:
        """How close a request is to what the router was trained on: 1 when its sentence
        vector is as near the training rows' centroids (``info.familiarity``, written by
        ``llm-router router train``) as most training rows are, 0 when it is as far as the
        farthest 5% or farther, linear between; 1 for a router without that record."""
        record = self.info.get("familiarity")
        if not isinstance(record, Mapping) or not len(features.embedding):
            return 1.0
        centroids = self.centroids if self.centroids is not None else _centroids(record)
        norm = math.sqrt(float(features.embedding @ features.embedding))  # np.linalg.norm's
        if norm == 0:
            return 0.0
        similarity = float((centroids @ (features.embedding / norm)).max())
        low, high = float(record["low"]), float(record["high"])
        return min(1.0, max(0.0, (similarity - low) / max(high - low, 1e-6)))

    @property
    def fingerprint(self) -> str:
        """Names this model's weights (online learning's state belongs to one model)."""
        data = np.ascontiguousarray(self.weights, "<f4").tobytes()
        return f"{zlib.crc32(data):08x}-{len(self.weights)}-{self.bias:.6g}"

    def score_prompt(self, prompt: str) -> float:
        """:meth:`score` of a one-turn request."""
        return self.score(request_for_prompt(prompt))

    def to_dict(self) -> dict[str, Any]:
        n_dense = len(DENSE_NAMES)
        n_embed = self.config.embedding_dim
        w = self.weights.astype("<f4")
        return {
            "format": "llm-router/learned-router",
            "version": FORMAT_VERSION,
            "model": "logistic-regression",
            "features": asdict(self.config),
            "bias": self.bias,
            "calibration": {"slope": self.calibration[0], "intercept": self.calibration[1]},
            "dense": {name: {"weight": float(w[i]), "mean": float(self.dense_mean[i]),
                             "std": float(self.dense_std[i])}
                      for i, name in enumerate(DENSE_NAMES)},
            "embedding_weights": pack_weights(w[n_dense : n_dense + n_embed]),
            "hashed_weights": pack_weights(w[n_dense + n_embed :]),
            "info": dict(self.info),
        }

    @property
    def boundary_p(self) -> float | None:
        """The probability its file puts at the tier-1 boundary (``info.boundary_p``), if any."""
        value = self.info.get("boundary_p")
        return float(value) if isinstance(value, int | float) else None

    def save(self, path: str | Path) -> None:
        """Write the model as JSON to ``path``."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *,
                  embedder: TextEmbedder | None = None) -> LearnedRouter:
        """The router ``raw`` describes (:meth:`to_dict`'s output).

        Raises:
            RouterError: not a router file, another format version, or inconsistent sizes.
        """
        if raw.get("format") != "llm-router/learned-router":
            raise RouterError("not an llm-router learned router file")
        if raw.get("version") != FORMAT_VERSION:
            raise RouterError(f"learned router format version {raw.get('version')!r}; "
                              f"this llm-router reads version {FORMAT_VERSION}")
        try:
            config = FeatureConfig.from_dict(raw["features"])
            dense = raw["dense"]
            weights = np.concatenate([
                np.array([dense[n]["weight"] for n in DENSE_NAMES], "<f4"),
                unpack_weights(raw["embedding_weights"]),
                unpack_weights(raw["hashed_weights"]),
            ])
            router = cls(
                config=config,
                weights=weights,
                bias=float(raw["bias"]),
                dense_mean=np.array([dense[n]["mean"] for n in DENSE_NAMES], np.float64),
                dense_std=np.array([dense[n]["std"] for n in DENSE_NAMES], np.float64),
                calibration=(float(raw["calibration"]["slope"]),
                             float(raw["calibration"]["intercept"])),
                info=dict(raw.get("info", {})),
                embedder=embedder,
                centroids=_centroids(raw["info"]["familiarity"])
                if "familiarity" in raw.get("info", {}) else None,
                gate=Gate.from_dict(raw["info"]["gate"]) if "gate" in raw.get("info", {})
                else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RouterError(f"learned router file is damaged: {exc!r}") from exc
        if len(weights) != config.size:
            raise RouterError(f"learned router has {len(weights)} weights; its feature "
                              f"config needs {config.size}")
        return router

    @classmethod
    def load(cls, path: str | Path, *, embedder: TextEmbedder | None = None) -> LearnedRouter:
        """Read a model written by :meth:`save`. A model trained with embeddings needs an
        ``embedder`` (one is created, loading WordLlama offline, if none is given).

        Raises:
            RouterError: the file is missing, not JSON, or not a router of this version.
        """
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RouterError(f"cannot read learned router {path}: {exc}") from exc
        if embedder is None and raw.get("features", {}).get("embeddings"):
            from engine.core.cache.similarity import Embedder

            embedder = Embedder()
        return cls.from_dict(raw, embedder=embedder)


def _centroids(record: Mapping[str, Any]) -> np.ndarray:
    return unpack_weights(record["centroids"]).astype(np.float64).reshape(
        int(record["clusters"]), -1)


def pack_weights(weights: np.ndarray) -> dict[str, Any]:
    """``weights`` as a router file keeps them (float32, :func:`pack_array`)."""
    return pack_array(weights)


def unpack_weights(packed: Mapping[str, Any]) -> np.ndarray:
    """The weights :func:`pack_weights` packed."""
    return unpack_array(packed)


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def blend(learned_p: float, heuristic_score: float, weight: float) -> float:
    """One 0-100 score from the trained router's ``p_strong`` and the heuristic's score:
    ``weight * 100 * learned_p + (1 - weight) * heuristic_score`` (round it for
    ``X-LLM-Router-Score``).

    >>> blend(0.5, 10, 0.0), blend(0.5, 10, 1.0), blend(0.2, 40, 0.5)
    (10.0, 50.0, 30.0)

    Raises:
        ValueError: ``weight`` outside 0..1.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"blend weight must be in 0..1, got {weight}")
    score = weight * 100.0 * learned_p + (1.0 - weight) * float(heuristic_score)
    return min(100.0, max(0.0, score))
