"""Client keys: their secrets (a digest is kept, never the secret), what each may do, and the
arithmetic of their rate limits and budgets. Sans-IO: stores keep the numbers, the runtime
asks here what they mean."""

from .budget import (
    PERIODS,
    SPEND_KEPT_SEC,
    Ledger,
    Period,
    period_end,
    period_key,
    period_reset,
)
from .ratelimit import Decision, settle, take
from .settings import KeyRecord, KeySettings
from .token import (
    KEY_PREFIX,
    digest,
    looks_like_key,
    matches,
    new_key_id,
    new_secret,
    public_prefix,
)

__all__ = [
    "KEY_PREFIX", "PERIODS", "SPEND_KEPT_SEC", "Decision", "KeyRecord", "KeySettings", "Ledger",
    "Period",
    "digest", "looks_like_key", "matches", "new_key_id", "new_secret", "period_end", "period_key",
    "period_reset", "public_prefix", "settle", "take",
]
