"""What a request carries besides its JSON body, declared once and checked here: query
parameters, the headers that change an answer (``Cache-Control``, ``Prefer``,
``Idempotency-Key``, ``Last-Event-ID``), the body-level ``router_cache`` and the cancel body.
``/openapi.json`` (:mod:`.openapi`) shows the same specs."""

from __future__ import annotations

import orjson

from engine.core import RUN_STATUSES
from engine.errors import RequestInvalid, did_you_mean, echo
from engine.wire import ROUTER_CACHE, Fields, Num, Text

__all__ = [
    "AFTER",
    "CANCEL",
    "EVERY_LIMIT",
    "IDEMPOTENCY_KEY",
    "LIMIT",
    "STATUS",
    "TENANT",
    "cache_controls",
    "cancel_reason",
    "event_id",
    "idempotency_key",
    "int_arg",
    "prefers_async",
    "run_status",
]

LIMIT = Num(integer=True, low=1, high=1000, default=20, doc="How many runs, at most.")
AFTER = Num(integer=True, low=0, high=2**62, default=0,
            doc="Replay the events after this id (as Last-Event-ID; the header wins).")
STATUS = Text(values=RUN_STATUSES, doc="Only runs in this status.")
EVERY_LIMIT = Num(integer=True, low=1, high=200, default=20,
                  doc="How many runs, at most (every tenant's: the dashboard's view).")
TENANT = Text(min_length=1, max_length=200,  # the check: app.py reset_cache_thresholds
              doc="A tenant as GET /v1/routing shows it (a digest, or anonymous); absent: "
                  "every tenant.")
IDEMPOTENCY_KEY = Text(min_length=1, max_length=255,
                       doc="Printable ASCII. A repeated submission with the same key returns "
                           "the same run (409 if its body differs).")
_REASON = Text(max_length=500, doc="Kept in the run's record (cancelled_by).")
CANCEL = Fields({"reason": _REASON}, closed=True, doc="Optional: an empty body is no reason.")


_CACHE_FIELD = b'"router_cache"'


def cache_controls(header: str, body: bytes) -> tuple[bool, bool]:
    """(read, write) from ``Cache-Control`` or, for clients that cannot set headers, the
    body's ``"router_cache"`` field (``"no-cache"`` or ``"no-store"``)."""
    directives = {d.strip().lower() for d in header.split(",")} if header else set()
    if _CACHE_FIELD in body:  # cheap test first: almost no request carries it
        try:
            value = orjson.loads(body).get("router_cache")
        except (orjson.JSONDecodeError, AttributeError):
            value = None
        if value is not None and value not in ROUTER_CACHE.values:
            raise RequestInvalid(
                'router_cache must be "no-cache", "no-store" or "default"', param="router_cache"
            )
        if isinstance(value, str):
            directives.add(value)
    if "no-store" in directives:
        return False, False
    return "no-cache" not in directives, True


def prefers_async(header: str) -> bool:
    """Whether a ``Prefer`` header (RFC 7240) asks for ``respond-async``."""
    return any(p.split(";")[0].strip().lower() == "respond-async" for p in header.split(","))


def idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    low, high = IDEMPOTENCY_KEY.min_length, IDEMPOTENCY_KEY.max_length or 0
    if not low <= len(value) <= high or not value.isascii() or not value.isprintable():
        raise RequestInvalid(
            f"Idempotency-Key must be {low} to {high} printable ASCII characters",
            param="Idempotency-Key")
    return value


def int_arg(text: str | None, name: str, spec: Num) -> int:
    """A query parameter declared by ``spec`` (absent: its ``default``)."""
    if text is None:
        return int(spec.default)
    low, high = int(spec.low or 0), int(spec.high or 0)
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise RequestInvalid(f"{name} must be an integer from {low} to {high}, got {echo(text)}",
                             param=name)
    return int(text)


def run_status(text: str | None) -> str | None:
    """The ``status`` query parameter of a runs listing (:data:`STATUS`)."""
    if text is not None and text not in STATUS.values:
        raise RequestInvalid(
            f"status must be one of {', '.join(STATUS.values)}, got {echo(text)}"
            f"{did_you_mean(text, STATUS.values)}", param="status")
    return text


def event_id(text: str) -> int:
    """A ``Last-Event-ID`` header: an event id, within the bounds of ``?after=``
    (:data:`AFTER`)."""
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or int(text) > int(AFTER.high or 0):
        raise RequestInvalid(f"Last-Event-ID must be an event id this router sent (a number), "
                             f"got {echo(text)}", param="Last-Event-ID")
    return int(text)


def cancel_reason(body: bytes) -> str | None:
    """The optional ``{"reason": "..."}`` of a cancel request (:data:`CANCEL`)."""
    if not body.strip():
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RequestInvalid("request body is not valid JSON") from None
    if not isinstance(data, dict) or not CANCEL.names.issuperset(data):
        raise RequestInvalid('a cancel request takes nothing, or {"reason": "..."}')
    reason = data.get("reason")
    limit = _REASON.max_length or 0
    if reason is not None and (not isinstance(reason, str) or len(reason) > limit):
        raise RequestInvalid(f"reason must be a string of at most {limit} characters",
                             param="reason")
    return reason
