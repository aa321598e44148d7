"""Shared state on Redis: the client (:mod:`.client`, over the protocol in :mod:`.resp`) and
the stores built on it."""

from .client import Redis, Script, open_redis
from .keys import RedisKeyStore
from .resp import ReplyError
from .runs import RedisRunStore

__all__ = ["Redis", "RedisKeyStore", "RedisRunStore", "ReplyError", "Script", "open_redis"]
