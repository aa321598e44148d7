"""Socket reads and writes that skip the scheduler when the kernel answers at once, and the
channel sends and receives that do the same: over real sockets and channels, the paths that
must wait, the deadlines and the ends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from engine.runtime import channels
from engine.runtime.socket_io import receive_some, send_all


@asynccontextmanager
async def _pair() -> AsyncIterator[tuple[trio.SocketStream, trio.SocketStream]]:
    a, b = trio.socket.socketpair()
    left, right = trio.SocketStream(a), trio.SocketStream(b)
    try:
        yield left, right
    finally:
        await left.aclose()
        await right.aclose()


async def _read_all(stream: trio.SocketStream, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        chunk = await receive_some(stream, 65536)
        assert chunk, "the stream ended early"
        got += chunk
        await trio.sleep(0)  # a slow reader: the writer's buffer fills
    return bytes(got)


async def test_a_write_larger_than_the_kernel_buffer_waits_and_arrives_whole() -> None:
    async with _pair() as (left, right):
        data = bytes(range(256)) * 32768  # 8 MiB: far more than a socket buffer
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_all, left, data)
            assert await _read_all(right, len(data)) == data


async def test_a_read_that_waits_gets_the_bytes_written_later() -> None:
    async with _pair() as (left, right), trio.open_nursery() as nursery:
        async def later() -> None:
            await trio.sleep(0.05)
            await send_all(left, b"hello")

        nursery.start_soon(later)
        assert await receive_some(right, 100) == b"hello"


async def test_a_read_or_a_write_past_its_deadline_is_too_slow() -> None:
    async with _pair() as (left, right):
        with pytest.raises(trio.TooSlowError):
            await receive_some(right, 100, deadline=trio.current_time() + 0.05)
        # Nobody reads: the buffer fills, then the deadline passes.
        with pytest.raises(trio.TooSlowError):
            await send_all(left, b"x" * (64 << 20), deadline=trio.current_time() + 0.1)


async def test_the_end_of_the_stream_and_a_closed_stream() -> None:
    async with _pair() as (left, right):
        await left.aclose()
        assert await receive_some(right, 100) == b""
        with pytest.raises(trio.ClosedResourceError):
            await send_all(left, b"late")
        with pytest.raises(trio.ClosedResourceError):
            await receive_some(left, 100)


async def test_a_read_waiting_when_its_stream_is_closed_fails_as_closed() -> None:
    async with _pair() as (_left, right), trio.open_nursery() as nursery:
        async def close_soon() -> None:
            await trio.sleep(0.05)
            await right.aclose()

        nursery.start_soon(close_soon)
        with pytest.raises(trio.ClosedResourceError):
            await receive_some(right, 100)


async def test_a_write_to_a_reset_connection_is_broken() -> None:
    async with _pair() as (left, right):
        await right.aclose()
        with pytest.raises(trio.BrokenResourceError):
            for _ in range(100):  # the first write may still be taken by the kernel
                await send_all(left, b"x" * 65536)


async def test_channel_sends_wait_for_room_and_receives_for_items() -> None:
    put, take = trio.open_memory_channel[int](1)
    await channels.send(put, 1)  # room: no wait
    async with trio.open_nursery() as nursery:
        nursery.start_soon(channels.send, put, 2)  # full: waits for the receive below
        await trio.testing.wait_all_tasks_blocked()
        assert await channels.receive(take) == 1
        assert await channels.receive(take) == 2
        nursery.start_soon(channels.receive, take)  # empty: waits for the send below
        await trio.testing.wait_all_tasks_blocked()
        await channels.send(put, 3)
    await put.aclose()
    with pytest.raises(trio.EndOfChannel):
        await channels.receive(take)
