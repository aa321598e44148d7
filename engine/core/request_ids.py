"""Request ids, and the process each one names.

Every HTTP request gets an id of 24 lower-case hex digits (``X-Request-Id``; a chat answer's
id ends with it). The first six are the *tag* of the router process that made it, drawn once
when the process starts; the other 18 are drawn per request. Feedback names a request by its
id, and only the process that answered remembers how it routed the request: with several
processes (``--workers``, or several routers on one Redis) the tag says which one to ask
(``engine.runtime.shared_reports``).

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
#: This process's tag: 6 hex digits (a fresh interpreter, as each worker is, draws its own).
TAG = secrets.token_hex(3)


def new_request_id() -> str:
    """A new request id of this process."""
    return TAG + secrets.token_hex(9)


def tag_of(request_id: str) -> str | None:
    """The tag of the process that made ``request_id``; None for a string no router made."""
    if len(request_id) != 24 or not _HEX.issuperset(request_id):
        return None
    return request_id[:6]
