"""Who is asking: the client key and the cache tenant, from a request's credential headers.

Sans-IO. The tenant partitions the cache and dedup (``engine.core.cache.key``): two callers share
answers only when they presented the same credential. The key a client sends as ``x-api-key``
or ``Authorization: Bearer`` is one credential whichever header carries it (the Anthropic and
OpenAI SDKs send the same key differently); any other ``Authorization`` scheme (``Basic``,
``Digest``, a gateway's own token) is a credential too, so callers behind a proxy that
authenticates them some other way are still kept apart. The tenant is a digest: no secret is
kept in the cache's keys.
"""

from __future__ import annotations

import hashlib

__all__ = ["client_key", "tenant_of"]


def client_key(x_api_key: str, authorization: str) -> str:
    """The client key: ``x-api-key``, else an ``Authorization: Bearer`` token, else ``""``."""
    if x_api_key:
        return x_api_key
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return ""


def tenant_of(x_api_key: str, authorization: str) -> str:
    """The cache tenant for these credential headers: ``""`` when none was presented, else a
    digest of every credential presented.

    >>> tenant_of("k1", "") == tenant_of("", "Bearer k1") != tenant_of("", "Bearer k2")
    True
    >>> tenant_of("", "Basic dTE6cA==") == tenant_of("", "basic  dTE6cA==")
    True
    >>> tenant_of("", "Basic dTE6cA==") != tenant_of("", "Basic dTI6cA==")
    True
    >>> tenant_of("", "")
    ''
    """
    parts: list[str] = []
    if x_api_key:
        parts.append("key " + x_api_key)
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        if credentials and credentials != x_api_key:
            parts.append("key " + credentials)
    elif scheme:
        # Scheme names are case-insensitive (RFC 9110); the credentials are not.
        parts.append(f"authorization {scheme.lower()} {credentials}")
    if not parts:
        return ""
    digest = hashlib.blake2b("\n".join(parts).encode(), digest_size=16, person=b"llmr-tenant")
    return digest.hexdigest()
