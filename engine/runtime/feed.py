"""A feed: a background task's output, taken by a client as it comes.

A chat stream (a :class:`Served` head, then batches of events) is one. (A workflow's progress
is not: it is read from the run store, ``engine.runtime.runs``, so it survives the client and
the process.) The producing task runs in the gateway's background nursery (it must
outlive the handler's first ``await``: the handler returns a response whose body iterates the
feed), under its own cancel scope, and puts items into a channel of at most
:data:`FEED_BUFFER` items. A client that reads slowly slows the producer rather than piling
items up here.

How the task ended travels beside the channel, not in it: a :class:`RouterError` (or an
internal error, logged and reported as one) is set before the channel closes, so the client
gets every item already queued, then the error, however full the channel was; a client that
went away ends the task quietly. ``close()`` cancels the task.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import trio

from engine.errors import RouterError
from engine.messages import Event

from . import channels
from .node import Served

__all__ = ["FEED_BUFFER", "ChatStream", "Feed", "Produce"]

#: Items between a producing task and its client (a chat stream: batches of events).
FEED_BUFFER = 16

_T = TypeVar("_T")

#: What a feed runs: it sends its items to the channel it is given.
Produce = Callable[[trio.MemorySendChannel[Any]], Awaitable[None]]


class Feed(Generic[_T]):
    """Items a background task produces. Iterate for them; a :class:`RouterError` raised
    while iterating is how the task failed, after every item it sent. ``close()`` cancels it.
    """

    __slots__ = ("_error", "_receive", "_scope", "_send")

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[Any](FEED_BUFFER)
        self._scope = trio.CancelScope()
        self._error: RouterError | None = None

    def start(self, nursery: trio.Nursery, produce: Produce) -> None:
        """Run ``produce(send)`` in ``nursery`` (one that outlives the client)."""
        nursery.start_soon(self._run, produce, self._send)

    async def _run(self, produce: Produce, send: trio.MemorySendChannel[Any]) -> None:
        # Runs in a background nursery: it must never raise, or it would take the server down.
        with self._scope:
            try:
                await produce(send)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the client went away
            except RouterError as exc:
                self._error = exc
            except Exception as exc:  # a bug: report it as an internal error, keep serving
                logging.getLogger("llm_router").exception(
                    "internal error while streaming", exc_info=exc
                )
                self._error = RouterError("internal error while streaming")
            finally:
                send.close()  # not ``aclose``: closing waits for nothing

    # An iterator object, not an async generator: a client that leaves mid-stream abandons
    # the iteration, and an abandoned generator is one trio warns about when it is collected.
    def __aiter__(self) -> Feed[_T]:
        return self

    async def __anext__(self) -> _T:
        try:
            item: _T = await channels.receive(self._receive)
        except trio.EndOfChannel:
            raise self._ending() from None
        return item

    def next_ready(self) -> _T:
        """The next item if it is here already, as ``__anext__`` would give it.

        Raises:
            trio.WouldBlock: no item yet (the feed goes on).
            StopAsyncIteration: the feed ended.
            RouterError: how it failed, after every item it sent.
        """
        try:
            item: _T = self._receive.receive_nowait()
        except trio.EndOfChannel:
            raise self._ending() from None
        return item

    def _ending(self) -> BaseException:
        """What iterating raises once every item is taken: how the task failed, if it did."""
        return self._error if self._error is not None else StopAsyncIteration()

    def close(self) -> None:
        """Stop taking items and cancel the task. Safe to call more than once."""
        self._scope.cancel()
        self._receive.close()


class ChatStream(Feed[list[Event]]):
    """A chat stream in flight: ``served`` (who answers it), then batches of events; a
    :class:`RouterError` raised while iterating means the upstream failed after the stream
    started."""

    __slots__ = ("served",)

    served: Served

    async def open(self) -> Served:
        """Wait for the head (the first events are then in hand) and keep it as ``served``.

        Raises:
            RouterError: the stream failed before its head (nothing was streamed).
        """
        try:
            self.served = await channels.receive(self._receive)
        except trio.EndOfChannel:
            raise self._error or RouterError("the stream ended before it started") from None
        except BaseException:
            self.close()  # the caller left first (a client disconnect): nobody will read it
            raise
        return self.served
