"""Request ids, and the process each one names.

Every HTTP request gets an id of 24 lower-case hex digits (``X-Request-Id``; a chat answer's
id ends with it). The first eight are the *tag* of the router process that made it, drawn
once when the process starts; the other 16 are drawn per request. Tags are 32 bits so that
processes sharing one Redis do not draw the same one (less than one chance in a million for 64
processes; two that did would answer some reports on each other's requests 404). Feedback names
a request by its id, and only the process that answered remembers how it routed the request:
with several processes (``--workers``, or several routers on one Redis) the tag says which one
to ask (``engine.runtime.shared_reports``).

>>> rid = new_request_id()
>>> len(rid), tag_of(rid) == TAG
(24, True)
>>> tag_of("not an id") is None
True
"""

from __future__ import annotations

import secrets

__all__ = ["TAG", "new_request_id", "tag_of"]

_HEX = frozenset("0123456789abcdef")
#: This process's tag: 8 hex digits (a fresh interpreter, as each worker is, draws its own).
TAG = secrets.token_hex(4)


def new_request_id() -> str:
    """A new request id of this process."""
    return TAG + secrets.token_hex(8)


def tag_of(request_id: str) -> str | None:
    """The tag of the process that made ``request_id``; None for a string no router made."""
    if len(request_id) != 24 or not _HEX.issuperset(request_id):
        return None
    return request_id[:8]
