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
bytes in every round). Any stream other than a plain ``trio.SocketStream`` (TLS) goes through
its own methods.
"""

from __future__ import annotations

import os

import trio

__all__ = ["receive_some", "send_all"]


async def send_all(stream: trio.abc.SendStream, data: bytes) -> None:
    """``stream.send_all(data)``, without a pass of the scheduler when the kernel takes all of
    ``data`` at once."""
    if type(stream) is not trio.SocketStream:
        await stream.send_all(data)
        return
    fd = stream.socket.fileno()
    if fd < 0:
        raise trio.ClosedResourceError("the connection was closed")
    try:
        sent = os.write(fd, data)
    except BlockingIOError:
        sent = 0
    except OSError as exc:
        raise trio.BrokenResourceError(f"socket write failed: {exc}") from exc
    if sent < len(data):  # the kernel's buffer is full: wait for room, the stream's way
        await stream.send_all(memoryview(data)[sent:])


async def receive_some(stream: trio.abc.ReceiveStream, max_bytes: int) -> bytes:
    """``stream.receive_some(max_bytes)``, without a pass of the scheduler when bytes are
    waiting. ``b""`` at the end of the stream."""
    if type(stream) is not trio.SocketStream:
        return bytes(await stream.receive_some(max_bytes))
    socket = stream.socket
    while True:
        fd = socket.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the connection was closed")
        try:
            return os.read(fd, max_bytes)
        except BlockingIOError:
            pass
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket read failed: {exc}") from exc
        await trio.lowlevel.wait_readable(socket)
