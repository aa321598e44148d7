"""Memory-channel sends and receives that pass trio's scheduler only when they must wait.

``MemorySendChannel.send`` and ``MemoryReceiveChannel.receive`` are checkpoints: each yields
to the scheduler, a full pass of trio's run loop, even when the channel has room or an item
is waiting. A chat stream moves each batch of events through two channels, and a request's
body reaches the app through one. These try the non-blocking call first and wait (a real
checkpoint) only when it would block; the exceptions are the channel's own.

They are not checkpoints when the channel answers at once: a loop built on them must wait
elsewhere in every round, as a relay does when it waits for the upstream's next bytes.
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
    except trio.WouldBlock:
        await channel.send(item)


async def receive(channel: trio.MemoryReceiveChannel[_T]) -> _T:
    """``await channel.receive()``, without a pass of the scheduler when an item waits."""
    try:
        return channel.receive_nowait()
    except trio.WouldBlock:
        return await channel.receive()
