"""Client key secrets: how they look, how they are kept (a digest, never the secret), and the
short public prefix that names a key in logs.

A secret is ``llmr-`` and 43 URL-safe characters (256 random bits). Because it is random and
long, a keyed BLAKE2b digest of it is as good as a password hash for finding and checking it,
and costs microseconds: the router looks keys up by digest and compares digests in constant
time. The prefix (``llmr-`` and the next 6 characters) is what logs and listings show.

>>> secret = new_secret()
>>> secret.startswith("llmr-") and len(secret) == 48
True
>>> looks_like_key(secret), looks_like_key("sk-ant-api03-x"), public_prefix(secret) == secret[:11]
(True, False, True)
>>> matches(digest(secret), secret), matches(digest(secret), secret + "x")
(True, False)
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

__all__ = ["KEY_PREFIX", "digest", "looks_like_key", "matches", "new_key_id", "new_secret",
           "public_prefix"]

KEY_PREFIX = "llmr-"
_SHAPE = re.compile(r"llmr-[A-Za-z0-9_\-]{43}")


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    """A key's public id (``key_`` and 16 hex digits): what the admin API and stats use."""
    return "key_" + secrets.token_hex(8)


def looks_like_key(value: str) -> bool:
    """Whether ``value`` has a client key's shape (so it is looked up, not compared with
    the static ``server.api_keys``)."""
    return _SHAPE.fullmatch(value) is not None


def digest(secret: str) -> str:
    return hashlib.blake2b(secret.encode(), digest_size=32,
                           person=b"llmr-client-key").hexdigest()


def matches(stored_digest: str, secret: str) -> bool:
    """Constant-time check of ``secret`` against a stored digest."""
    return hmac.compare_digest(stored_digest, digest(secret))


def public_prefix(secret: str) -> str:
    return secret[: len(KEY_PREFIX) + 6]
