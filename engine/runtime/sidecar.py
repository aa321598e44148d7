"""An external routing classifier ("sidecar"), asked for a 0-1 "needs the strong model" score.

Wire format (a thin adapter puts a RouteLLM-style router behind it)::

    POST {learned.sidecar_url}
    {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}],
     "prompt": "<last user text>"}
    -> 200 {"score": 0.73}            (or {"p_strong": 0.73}; 0 = the cheapest model will do)

Every call has a hard time budget (``learned.sidecar_timeout_ms``, default 50 ms). On a
timeout, an error or a malformed answer the heuristic decides alone and the failure is
counted; the sidecar's health shows in ``GET /v1/backends``.
"""

from __future__ import annotations

from typing import Any

import orjson
import trio

from engine.core.redact import without_userinfo
from engine.errors import UpstreamError
from engine.messages import ChatRequest

from .upstream import UpstreamClient

__all__ = ["Sidecar", "sidecar_payload"]

_EWMA_ALPHA = 0.2


def sidecar_payload(request: ChatRequest) -> bytes:
    """The conversation as the sidecar receives it (text only)."""
    messages: list[dict[str, str]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    messages.extend({"role": m.role, "content": m.text} for m in request.messages)
    last = next((m.text for m in reversed(request.messages) if m.role == "user"), "")
    return orjson.dumps({"messages": messages, "prompt": last})


class Sidecar:
    def __init__(self, url: str, *, timeout_ms: float, upstream: UpstreamClient) -> None:
        self.url = url
        self.timeout = timeout_ms / 1000.0
        self._upstream = upstream
        self.calls = 0
        self.failures = 0
        self.in_flight = 0
        self.latency_ms: float | None = None
        self.last_error: str | None = None

    async def score(self, request: ChatRequest) -> float | None:
        """The sidecar's score in 0-1, or ``None`` when it failed (counted)."""
        self.calls += 1
        self.in_flight += 1
        started = trio.current_time()
        try:
            answer: Any = await self._upstream.post_json(
                self.url, sidecar_payload(request), timeout=self.timeout
            )
            value = answer.get("score", answer.get("p_strong")) if isinstance(answer, dict) \
                else None
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not 0.0 <= value <= 1.0:
                raise UpstreamError(f"{without_userinfo(self.url)} answered without a 0-1 score")
        except UpstreamError as exc:
            self.failures += 1
            self.last_error = exc.message
            return None
        finally:
            self.in_flight -= 1
        ms = (trio.current_time() - started) * 1000
        self.latency_ms = ms if self.latency_ms is None else (
            self.latency_ms + _EWMA_ALPHA * (ms - self.latency_ms))
        self.last_error = None
        return float(value)

    def snapshot(self) -> dict[str, object]:
        """An entry for ``GET /v1/backends``."""
        status = "healthy" if self.last_error is None else "degraded"
        return {
            "name": "sidecar", "status": status, "in_flight": self.in_flight,
            "latency_ms": round(self.latency_ms) if self.latency_ms is not None else 0,
            "total_requests": self.calls, "kind": "sidecar", "failures": self.failures,
            "detail": self.last_error,
        }
