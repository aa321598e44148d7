"""The two inbound wire protocols behind one interface, so handlers are written once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from engine.errors import RouterError
from engine.messages import ChatRequest, ChatResult, Event, estimate_tokens
from engine.wire.anthropic import body as anthropic_body
from engine.wire.anthropic import errors as anthropic_errors
from engine.wire.anthropic import request as anthropic_request
from engine.wire.anthropic import response as anthropic_response
from engine.wire.openai import body as openai_body
from engine.wire.openai import errors as openai_errors
from engine.wire.openai import request as openai_request
from engine.wire.openai import response as openai_response
from engine.wire.schema import Fields

__all__ = ["ANTHROPIC", "OPENAI", "Encoder", "WireProtocol"]


class Encoder(Protocol):
    def start(self) -> bytes: ...
    def encode_many(self, events: list[Event]) -> bytes: ...
    def error(self, err: RouterError) -> bytes: ...


@dataclass(frozen=True, slots=True)
class WireProtocol:
    name: str
    id_prefix: str
    parse_request: Callable[[bytes], ChatRequest]
    request_body: Fields  # what parse_request accepts, declared once (engine.wire.schema)
    render_error: Callable[[RouterError], bytes]
    _render: Callable[..., bytes]
    _encoder: Callable[..., Any]

    def render_result(self, result: ChatResult, *, id: str, model: str, created: int) -> bytes:
        if self.name == "openai":
            return self._render(result, id=id, model=model, created=created)
        return self._render(result, id=id, model=model)

    def encoder(self, request: ChatRequest, *, id: str, model: str, created: int) -> Encoder:
        if self.name == "openai":
            return self._encoder(  # type: ignore[no-any-return]
                id=id, model=model, created=created, include_usage=request.include_usage
            )
        input_tokens = estimate_tokens(request.system or "") + sum(
            estimate_tokens(m.text) for m in request.messages
        )
        return self._encoder(id=id, model=model, input_tokens=input_tokens)  # type: ignore[no-any-return]


OPENAI = WireProtocol(
    name="openai",
    id_prefix="chatcmpl-",
    parse_request=openai_request.parse_request,
    request_body=openai_body.REQUEST,
    render_error=openai_errors.render_error,
    _render=openai_response.render_result,
    _encoder=openai_response.StreamEncoder,
)

ANTHROPIC = WireProtocol(
    name="anthropic",
    id_prefix="msg_",
    parse_request=anthropic_request.parse_request,
    request_body=anthropic_body.REQUEST,
    render_error=anthropic_errors.render_error,
    _render=anthropic_response.render_result,
    _encoder=anthropic_response.StreamEncoder,
)
