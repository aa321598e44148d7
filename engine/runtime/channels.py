"""Memory-channel sends and receives that pass trio's scheduler only when they must wait.

``MemorySendChannel.send`` and ``MemoryReceiveChannel.receive`` are checkpoints: each yields
to the scheduler, a full pass of trio's run loop, even when the channel has room or an item
is waiting. A chat stream moves each batch of events through two channels, and a request's
body reaches the app through one. These try the non-blocking call first and wait (a real
checkpoint) only when it would block; the exceptions are the channel's own.

They are not checkpoints when the channel answers at once: a loop built on them must wait
elsewhere in every round, as a relay does when it waits for the upstream's next bytes.

The wait is outside the ``except`` block on purpose: awaited inside it, the caught
``WouldBlock`` (its traceback, the frames that traceback holds) would stay alive for as long as
the task waits, which for an open stream is most of its life, and every collection would walk
it; an exception raised during the wait would also carry it as its ``__context__``.
"""

from __future__ import annotations

from typing import TypeVar

import trio

__all__ = ["receive", "send"]

_T = TypeVar("_T")


async def send(channel: trio.MemorySendChannel[_T], item: _T) -> None:
    """``await channel.send(item)``, without a pass of the scheduler when there is room."""
    try:
        channel.send_nowait(item)
        return
    except trio.WouldBlock:
        pass
    await channel.send(item)


async def receive(channel: trio.MemoryReceiveChannel[_T]) -> _T:
    """``await channel.receive()``, without a pass of the scheduler when an item waits."""
    try:
        return channel.receive_nowait()
    except trio.WouldBlock:
        pass
    return await channel.receive()
