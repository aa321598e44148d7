"""The fake upstream's ``/v1/embeddings``: OpenAI's embeddings wire format with a deterministic
vector, so tests of ``cache.embedder`` need no model.

The vector of a text is the normalised sum of one pseudo-random unit vector per distinct
lower-case word (seeded by the word's BLAKE2b digest): texts that share most of their words
are close (two texts of seven words differing in one: cosine 6/7), the same text always gets
the same vector, and word order does not matter, so a test can tell the remote vector from the
packaged one (which does not make "the cache's guards still apply" true by itself).
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from typing import Any

__all__ = ["DEFAULT_DIMENSIONS", "embed_text", "embeddings_body", "validate_embeddings"]

DEFAULT_DIMENSIONS = 64
_WORD = re.compile(r"[a-z0-9]+")


def embed_text(text: str, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """The fake's vector of ``text`` (unit length; all zeros for a text without words)."""
    total = [0.0] * dimensions
    for word in sorted(set(_WORD.findall(text.lower()))):
        seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "big")
        rng = random.Random(seed)
        row = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
        norm = math.sqrt(sum(x * x for x in row))
        total = [t + x / norm for t, x in zip(total, row, strict=True)]
    norm = math.sqrt(sum(x * x for x in total))
    return [x / norm for x in total] if norm > 0 else total


def validate_embeddings(body: Any) -> str | None:
    """What is wrong with an embeddings request body, as OpenAI says it, or None."""
    if not isinstance(body, dict):
        return "We could not parse the JSON body of your request."
    if not isinstance(body.get("model"), str):
        return "you must provide a model parameter"
    texts = body.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        return "'input' must be a string or a non-empty array of strings"
    dimensions = body.get("dimensions", DEFAULT_DIMENSIONS)
    if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
        return "'dimensions' must be a positive integer"
    return None


def embeddings_body(body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's answer to a valid embeddings request (``validate_embeddings``)."""
    texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
    dimensions = int(body.get("dimensions", DEFAULT_DIMENSIONS))
    tokens = sum(len(t.split()) for t in texts)
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": embed_text(t, dimensions)}
                 for i, t in enumerate(texts)],
        "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
