"""Calls to upstream providers over HTTP: the one seam between httpx and the router.

A provider codec (``engine.wire.providers``) says what to send and how to read the answer; this
module sends it through the router's connection pool
(:class:`~engine.runtime.transport.PooledTransport`), applies the model's deadlines, and turns
every httpx exception and every upstream error status into the router's error tree:

==============================  ==========================  ================================
what happened                   error                       pool verdict
==============================  ==========================  ================================
connection refused / reset      UpstreamUnreachable         ``unreachable`` (down)
connect, first byte, idle       UpstreamTimeout             ``timeout`` (degraded)
429                             UpstreamRateLimited         ``rate_limited`` (Retry-After)
400, 413, 422                   UpstreamRejected            ``rejected`` (the request's fault)
401, 403, 404, 5xx, bad body    UpstreamError               ``server_error`` (degraded)
no free connection in time      UpstreamBusy                none: the router's own limit
==============================  ==========================  ================================

Deadlines: ``connect_sec`` bounds the TCP/TLS connect, ``first_byte_sec`` the wait for the
response head and, for streams, the first event, ``idle_sec`` every wait between stream chunks.
The total deadline belongs to the caller (the executor).

Everything an upstream sends reaches the router through here, so this is also where secrets
are kept out (``engine.core.redact``): upstream error text becomes one short scrubbed line (the
status, the provider's error type, its message) before any error carries it to a client, the
pool's ``detail`` or a log, and answers, streamed or not, have every configured secret hidden.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import trio

from engine.core.redact import Redactor, StreamRedactor, without_userinfo
from engine.errors import (
    UpstreamBusy,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from engine.messages import Finish

from .tracing import inject_trace
from .transport import PooledTransport, UpstreamResponse

if TYPE_CHECKING:
    from engine.core.config import ModelConfig
    from engine.messages import ChatRequest, ChatResult, Event
    from engine.wire.base import Provider, StreamDecoder

__all__ = ["UpstreamClient", "UpstreamStream", "failure_kind"]

_MAX_ERROR_BODY = 64 * 1024
_MAX_BODY = 64 * 1024 * 1024
#: A stream's bytes read without a complete event past this fail it: a provider's events are
#: kilobytes; an upstream sending one that never ends must not hold the router's memory.
_MAX_EVENT_BYTES = 16 * 1024 * 1024
_DRAIN_SEC = 0.5  # reading a finished stream's body to its end


# What every upstream request carries besides its codec's headers (what ``httpx.AsyncClient``
# would have added): the router decodes gzip and deflate answers.
_DEFAULT_HEADERS = (
    (b"accept", b"*/*"),
    (b"accept-encoding", b"gzip, deflate"),
    (b"user-agent", b"llm-router"),
)
_DEFAULTS = tuple((name.decode(), (name, value)) for name, value in _DEFAULT_HEADERS)


#: The share of a stream's first_byte_sec it may wait for a free connection, at most.
_POOL_SHARE = 0.9


@functools.lru_cache(maxsize=1024)
def _url(url: str) -> httpx.URL:
    """``url`` parsed (``httpx.URL`` is immutable): a config's few upstream URLs are parsed
    once, not once per call."""
    return httpx.URL(url)


@functools.lru_cache(maxsize=256)
def _timeouts(connect: float | None, read: float | None, write: float | None,
              pool: float | None) -> Mapping[str, float | None]:
    """httpx's ``timeout`` extension (read-only, shared by every call with these values)."""
    return MappingProxyType(httpx.Timeout(connect=connect, read=read, write=write,
                                          pool=pool).as_dict())


def _head(url: httpx.URL, headers: Mapping[str, str], body: bytes
          ) -> list[tuple[bytes, bytes]]:
    """The header lines ``httpx.Request`` would send, in its order: ``Host``, the codec's
    headers, ``Content-Length``, then the defaults the codec did not set."""
    names = {name.lower() for name in headers}
    lines = [(name.encode("ascii"), value.encode("ascii")) for name, value in headers.items()]
    auto = []
    if "host" not in names and url.host:
        auto.append((b"Host", url.netloc))
    if "content-length" not in names and "transfer-encoding" not in names:
        if body:
            lines.append((b"Content-Length", str(len(body)).encode("ascii")))
        else:
            auto.append((b"Content-Length", b"0"))
    lines = auto + lines if auto else lines
    lines.extend(line for name, line in _DEFAULTS if name not in names)
    return lines


def failure_kind(error: UpstreamError) -> str:
    """The pool verdict for ``error`` (see the module table)."""
    if isinstance(error, UpstreamUnreachable):
        return "unreachable"
    if isinstance(error, UpstreamTimeout):
        return "timeout"
    if isinstance(error, UpstreamRateLimited):
        return "rate_limited"
    if isinstance(error, UpstreamRejected):
        return "rejected"
    return "server_error"


def _summarized(error: UpstreamError, redactor: Redactor, backend: str) -> UpstreamError:
    """``error`` (raised by a codec, from what the upstream sent) with its message made one
    short scrubbed line naming the backend."""
    message = f"{backend}: {redactor.summarize(error.message)}"
    error.message, error.args, error.backend = message, (message,), backend
    return error


def _retry_after(response: UpstreamResponse) -> float | None:
    value = httpx.Headers(response.headers).get("retry-after")  # values joined, as httpx reads them
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class UpstreamStream:
    """An open upstream SSE stream: ``first`` holds the first events, ``next_batch`` the rest.

    Each batch is every event decoded from one network read, so a burst that arrives together
    is relayed in one write while a slow stream is still relayed chunk by chunk. More than
    16 MiB read without an event fails the stream (:class:`UpstreamError`).
    """

    def __init__(
        self, response: UpstreamResponse, decoder: StreamDecoder, backend: str, *,
        redactor: Redactor,
    ) -> None:
        self._response = response
        self._chunks = response.chunks()
        self._decoder = decoder
        self._backend = backend
        self._redactor = redactor
        self._content: StreamRedactor = redactor.stream()
        self._done = False  # the body has been read to its end
        self._complete = False  # the provider's end-of-stream event has been decoded
        self.first: list[Event] = []
        self.received = 0  # body bytes read so far
        self._unfinished = 0  # bytes read since the last event

    async def next_batch(self) -> list[Event] | None:
        """The next non-empty batch of events, or ``None`` once the stream is complete."""
        while not self._done:
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                self._done = True
                return self._decode(None) or None
            except httpx.TimeoutException:
                raise UpstreamTimeout(
                    "upstream stream stalled (idle timeout)", backend=self._backend
                ) from None
            except httpx.HTTPError as exc:
                raise UpstreamUnreachable(
                    f"upstream stream broke: {type(exc).__name__}", backend=self._backend
                ) from None
            self.received += len(chunk)
            events = self._decode(chunk)
            if events:
                self._complete = type(events[-1]) is Finish
                self._unfinished = 0
                return events
            self._unfinished += len(chunk)
            if self._unfinished > _MAX_EVENT_BYTES:
                raise UpstreamError(
                    f"{self._backend} sent over {_MAX_EVENT_BYTES >> 20} MiB of its stream "
                    "without a complete event", backend=self._backend)
        return None

    def _decode(self, chunk: bytes | None) -> list[Event]:
        """The events in ``chunk`` (``None``: the end of the body), secrets hidden."""
        try:
            events = self._decoder.close() if chunk is None else self._decoder.feed(chunk)
        except UpstreamError as exc:
            raise _summarized(exc, self._redactor, self._backend) from None
        return self._content.events(events) if events else events

    async def aclose(self) -> None:
        """Release the connection, leaving no half-read body behind.

        httpx reads an encoded body through a chain of async generators, and only a read
        finishes them: one abandoned mid-body is left to the garbage collector, which trio
        reports as a ResourceWarning (a plain body's reader is no generator). A complete
        stream is read to its end (the provider ends its body right after the last event);
        any other is closed first, so one last read ends at once.
        """
        with trio.move_on_after(2, shield=True):
            if self._complete and not self._done:
                with trio.move_on_after(_DRAIN_SEC), contextlib.suppress(httpx.HTTPError):
                    async for _ in self._chunks:
                        pass
                    self._done = True
            await self._response.aclose()
            if not self._done:
                with contextlib.suppress(StopAsyncIteration, httpx.HTTPError, httpx.StreamError):
                    await self._chunks.__anext__()


class UpstreamClient:
    """Sends canonical requests to one provider model at a time."""

    def __init__(self, transport: PooledTransport, *, redactor: Redactor) -> None:
        """``transport``: the connection pool (its owner runs its idle expiry and closes it).

        Requests go straight to the transport rather than through ``httpx.AsyncClient``: the
        client's per-request work (URL merging, cookie jar, auth and redirect handling) buys a
        proxy nothing, and its response-to-stream wrapper is a reference cycle that left every
        answered request's objects to the cyclic garbage collector.
        """
        self._transport = transport
        self._redactor = redactor

    async def _post(self, url: str, headers: Mapping[str, str], body: bytes,
                    timeouts: Mapping[str, float | None]) -> UpstreamResponse:
        parsed = _url(url)
        return await self._transport.send("POST", parsed, _head(parsed, headers, body), body,
                                          timeouts)

    async def _send(
        self, model: ModelConfig, provider: Provider, request: ChatRequest, *, stream: bool
    ) -> UpstreamResponse:
        call = provider.build_call(
            request, model=model.model, base_url=model.url, api_key=model.api_key, stream=stream
        )
        t = model.timeouts
        # The wait for a free connection (``pool``) is connect_sec; a stream's also ends well
        # inside open_stream's first-byte deadline, so that a full pool is reported as busy
        # (not the backend's fault), never as the backend's timeout.
        pool = min(t.connect_sec, _POOL_SHARE * t.first_byte_sec) if stream else t.connect_sec
        timeouts = _timeouts(t.connect_sec, t.idle_sec if stream else t.first_byte_sec,
                             t.connect_sec, pool)
        try:
            # Non-streaming: the read timeout (first_byte_sec) bounds the wait for the head.
            # Streaming: open_stream's deadline bounds head and first events together.
            response = await self._post(
                call.url, inject_trace(call.headers),  # the W3C traceparent, if tracing
                call.body, timeouts)
        except httpx.PoolTimeout:
            raise UpstreamBusy(
                f"{model.name}: every connection to its host is in use "
                "(upstream.max_connections_per_origin) and none came free in time",
                backend=model.name,
            ) from None
        except httpx.TimeoutException:
            raise UpstreamTimeout(
                f"{model.name} did not answer in time", backend=model.name
            ) from None
        except httpx.HTTPError as exc:
            raise UpstreamUnreachable(
                f"{model.name} is unreachable ({type(exc).__name__})", backend=model.name
            ) from None
        if response.status_code >= 400:
            await self._raise_for_status(model, provider, response)
        return response

    async def _raise_for_status(
        self, model: ModelConfig, provider: Provider, response: UpstreamResponse
    ) -> None:
        status = response.status_code
        body = b""
        try:
            with trio.move_on_after(model.timeouts.idle_sec):
                async for chunk in response.chunks():
                    body += chunk
                    if len(body) > _MAX_ERROR_BODY:
                        break
        except httpx.HTTPError:
            pass
        finally:
            await response.aclose()
        detail = self._redactor.summarize(provider.error_message(status, body))
        message = f"{model.name} answered {status}: {detail}"
        if status == 429:
            raise UpstreamRateLimited(
                message, retry_after=_retry_after(response), backend=model.name
            )
        if status in (400, 413, 422):
            raise UpstreamRejected(message, upstream_status=status, backend=model.name)
        raise UpstreamError(message, upstream_status=status, backend=model.name)

    async def complete(
        self, model: ModelConfig, provider: Provider, request: ChatRequest
    ) -> ChatResult:
        """One non-streaming call."""
        response = await self._send(model, provider, request, stream=False)
        try:
            body = bytearray()
            async for chunk in response.chunks():
                body += chunk
                if len(body) > _MAX_BODY:
                    raise UpstreamError(f"{model.name} sent an oversized answer",
                                        backend=model.name)
        except httpx.TimeoutException:
            raise UpstreamTimeout(f"{model.name} stalled mid-answer", backend=model.name) from None
        except httpx.HTTPError as exc:
            raise UpstreamUnreachable(
                f"{model.name} broke off its answer ({type(exc).__name__})", backend=model.name
            ) from None
        finally:
            # No scope needed: the transport's close never waits unshielded (it hands a
            # finished connection back at once, and closes any other within a second,
            # shielded), so a cancelled caller cannot leave a connection unreleased.
            await response.aclose()
        try:
            result = provider.parse_result(bytes(body))
        except UpstreamError as exc:
            raise _summarized(exc, self._redactor, model.name) from None
        return self._redactor.redact_result(result)

    async def open_stream(
        self, model: ModelConfig, provider: Provider, request: ChatRequest
    ) -> UpstreamStream:
        """Start a streaming call and wait for its first events (within ``first_byte_sec``).

        The caller must ``aclose`` the returned stream.
        """
        stream: UpstreamStream | None = None
        try:
            # One deadline for the response head and the first events: a stream's read
            # timeout is idle_sec, so nothing else bounds an upstream that never answers.
            with trio.fail_after(model.timeouts.first_byte_sec):
                response = await self._send(model, provider, request, stream=True)
                stream = UpstreamStream(response, provider.stream_decoder(), model.name,
                                        redactor=self._redactor)
                first = await stream.next_batch()
        except trio.TooSlowError:
            if stream is not None:
                await stream.aclose()
            raise UpstreamTimeout(
                f"{model.name} sent no first token in time", backend=model.name
            ) from None
        except BaseException:
            if stream is not None:
                await stream.aclose()
            raise
        if not first:
            await stream.aclose()
            raise UpstreamError(f"{model.name} sent an empty stream", backend=model.name)
        stream.first = first
        return stream

    async def post_json(self, url: str, payload: bytes, *, timeout: float,
                        bearer: str | None = None) -> Any:
        """POST a JSON body to an auxiliary service (the routing sidecar, the cache's
        embeddings endpoint) and return the decoded JSON answer; any failure, including a
        deadline, is an ``UpstreamError``. ``bearer`` is sent as ``Authorization: Bearer``."""
        shown = without_userinfo(url)
        headers = {"content-type": "application/json"}
        if bearer:
            headers["authorization"] = f"Bearer {bearer}"
        try:
            with trio.fail_after(timeout):
                response = await self._post(url, headers, payload,
                                            _timeouts(timeout, timeout, timeout, timeout))
                try:
                    body = await response.aread()
                finally:
                    await response.aclose()
        except (trio.TooSlowError, httpx.TimeoutException):
            raise UpstreamTimeout(
                f"{shown} did not answer within {timeout * 1000:.0f} ms"
            ) from None
        except httpx.HTTPError as exc:
            raise UpstreamUnreachable(f"{shown} is unreachable ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise UpstreamError(f"{shown} answered {response.status_code}",
                                upstream_status=response.status_code)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"{shown} answered with invalid JSON") from None
