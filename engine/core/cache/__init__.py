"""The response cache: request keys, the similarity function and its guards, the vector
index, and the bounded cache itself."""

from .key import RequestKey, request_key
from .responses import CacheHit, Matcher, PreparedText, ResponseCache
from .semantic import SemanticMatcher
from .similarity import Embedder

__all__ = [
    "CacheHit",
    "Embedder",
    "Matcher",
    "PreparedText",
    "RequestKey",
    "ResponseCache",
    "SemanticMatcher",
    "request_key",
]
