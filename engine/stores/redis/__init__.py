"""Shared state on Redis: the client (:mod:`.client`, over the protocol in :mod:`.resp`) and
the stores built on it."""

from .client import Redis, Script, open_redis
from .resp import ReplyError

__all__ = ["Redis", "ReplyError", "Script", "open_redis"]
