"""Writes and reads on a trio socket stream that skip the scheduler when the kernel answers at once.

trio's ``SocketStream.send_all`` and ``receive_some`` yield to the scheduler after every
successful system call, also when the kernel took the whole write or had the bytes ready: each
is a full pass of trio's run loop, with its ``epoll_wait``, for nothing. A proxied request
makes four such calls (the client's answer, the upstream request, the upstream answer, often
the client's next request), and each pass costs about as much as the call itself.

:func:`send_all` and :func:`receive_some` make the system call first and wait (a real
checkpoint) only when it would block. Errors are the stream's: ``trio.BrokenResourceError``
for a connection the peer reset, ``trio.ClosedResourceError`` for one closed here.

They are not checkpoints when the kernel answers at once: a caller that loops on them must
reach a checkpoint elsewhere (the connection loop and the upstream read both wait for the next
bytes in every round). Nor do they enter a cancel scope then: a deadline applies only to a
call that waits. Any stream other than a plain ``trio.SocketStream`` (TLS) goes through its
own methods.
"""

from __future__ import annotations

import math
import os

import trio

__all__ = ["receive_some", "send_all"]


async def send_all(stream: trio.abc.SendStream, data: bytes, *, deadline: float = math.inf,
                   shield: bool = False) -> None:
    """``stream.send_all(data)``, without a pass of the scheduler when the kernel takes all of
    ``data`` at once. Only a write that must wait gets a cancel scope: ``deadline`` bounds it
    (``trio.TooSlowError`` after), ``shield`` keeps the caller's cancellation out of it.
    """
    sent = 0
    if type(stream) is trio.SocketStream:
        fd = stream.socket.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the connection was closed")
        try:
            sent = os.write(fd, data)
        except BlockingIOError:
            pass
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket write failed: {exc}") from exc
        if sent == len(data):
            return
    # The kernel's buffer is full (or this is TLS): wait for room, the stream's way.
    with trio.CancelScope(deadline=deadline, shield=shield) as scope:
        await stream.send_all(memoryview(data)[sent:] if sent else data)
    if scope.cancelled_caught:
        raise trio.TooSlowError


async def receive_some(stream: trio.abc.ReceiveStream, max_bytes: int, *,
                       deadline: float = math.inf) -> bytes:
    """``stream.receive_some(max_bytes)``, without a pass of the scheduler when bytes are
    waiting; ``b""`` at the end of the stream. Only a read that must wait gets a cancel
    scope: ``deadline`` bounds it (``trio.TooSlowError`` after)."""
    if type(stream) is not trio.SocketStream:
        with trio.CancelScope(deadline=deadline):
            return bytes(await stream.receive_some(max_bytes))
        raise trio.TooSlowError
    data = _read(stream.socket, max_bytes)
    if data is not None:
        return data
    with trio.CancelScope(deadline=deadline):
        while data is None:
            await trio.lowlevel.wait_readable(stream.socket)
            data = _read(stream.socket, max_bytes)
        return data
    raise trio.TooSlowError


def _read(socket: trio.socket.SocketType, max_bytes: int) -> bytes | None:
    """What the kernel has for ``socket`` now (``b""``: the end), or ``None``: nothing yet."""
    fd = socket.fileno()
    if fd < 0:
        raise trio.ClosedResourceError("the connection was closed")
    try:
        return os.read(fd, max_bytes)
    except BlockingIOError:
        return None
    except OSError as exc:
        raise trio.BrokenResourceError(f"socket read failed: {exc}") from exc
