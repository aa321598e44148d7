"""A Redis client for trio: one pipelined connection, short bounded timeouts, and a clear
up/down state that the shared stores consult before they lean on Redis.

Written here rather than taken from a library: the general-purpose clients measured on this
code's hot path (a cache or dedup check on every request) cost 0.4-1 ms per command under
trio, where one socket written and read in order costs about 0.07 ms (BENCHMARKS.md).

* Every command goes over one connection; replies come back in the order the commands were
  written, so concurrent callers share the socket without waiting for each other's round
  trips (a reader task hands each reply to its caller).
* A command that takes longer than ``timeout`` (default 0.25 s; time this process stood
  still, or spent with its event loop saturated, does not count: :func:`_stood_still`), a
  refused connection or a broken socket
  marks Redis **down**: the connection is dropped, callers get
  :class:`~engine.errors.StoreUnavailable` at once (no waiting) until the next attempt, a
  backoff of 0.5 s doubling to 5 s later. The first command that then succeeds marks it
  **up** again, and the ``on_up`` hooks run (each store resynchronises there).
* Only background work (the heartbeat's ``PING``, the stream tail: ``probe=True``) opens a
  connection; a request's command with none open fails at once rather than wait to connect.
* Blocking reads (``XREAD BLOCK``) use a connection of their own: :meth:`Redis.dedicated`.

The URL's password never appears in a message or in :meth:`Redis.health`.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import trio

from engine.core.redis_address import RedisAddress
from engine.errors import StoreUnavailable

from .resp import NEED_DATA, Arg, Parser, Reply, ReplyError, encode

__all__ = ["Redis", "RedisAddress", "Script", "open_redis"]

log = logging.getLogger("llm_router.redis")

_BACKOFF_FIRST, _BACKOFF_MAX = 0.5, 5.0
# How many times a command whose deadline passed while this process stood still, or while
# its event loop was saturated, waits its timeout again (:func:`_stood_still`): a bound, so
# that a process whose event loop is late on every turn still finds out that Redis is gone
# (after at most 9 timeouts: 2.25 s at the default 0.25 s).
_STOOD_STILL_WAITS = 8


@dataclass(frozen=True)
class Script:
    """A Lua script, sent by its SHA1 (``EVALSHA``) and loaded on first ``NOSCRIPT``."""

    source: str

    @cached_property  # sent with every call: hashed once
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()


class _Slot:
    __slots__ = ("done", "reply")

    def __init__(self) -> None:
        self.reply: Reply | BaseException = None
        self.done = trio.Event()


class _Connection:
    """One socket. A command is queued at once (its slot for the reader, its bytes for the
    writer task, in the same order); the writer task sends whatever is queued in one write,
    and the reader task fills the slots as replies arrive."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.waiting: deque[_Slot] = deque()
        self.outgoing: list[bytes] = []
        self.queued = trio.Event()
        self.broken: BaseException | None = None

    def send(self, commands: Sequence[Sequence[Arg]]) -> list[_Slot]:
        """Queue ``commands`` for the writer; their slots, queued for the reader in the order
        their bytes will be written.

        A queued slot takes the next reply, so a slot must never be queued for bytes that will
        not be written: every later caller on the connection would get the reply meant for
        the one before it. Queueing never waits, so a caller cannot be cancelled half-way
        through it: once queued, its bytes are written, and a caller that has left by the
        time its reply comes leaves the reply in its slot. A caller never waits for another's
        write either, which under a saturated event loop (each scheduling round as long as
        every task's work) would cost it a round per caller ahead of it."""
        if self.broken is not None:
            raise self.broken
        payload = b"".join(encode(c) for c in commands)
        slots = [_Slot() for _ in commands]
        self.waiting.extend(slots)
        self.outgoing.append(payload)
        self.queued.set()
        return slots

    async def write_commands(self) -> None:
        """The writer task: send what is queued, all of it at once, until the connection
        fails (a write that stops part-way leaves an unknown part of it written, so the
        connection is failed and the next command finds Redis anew)."""
        try:
            while self.broken is None:
                await self.queued.wait()
                self.queued = trio.Event()
                if self.broken is not None:
                    return
                if not self.outgoing:
                    continue
                payload = b"".join(self.outgoing)
                self.outgoing.clear()
                await self.stream.send_all(payload)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.fail(trio.BrokenResourceError(f"a write to Redis stopped part-way: {exc}"))
        except BaseException:
            self.fail(trio.BrokenResourceError("a write to Redis stopped part-way"))
            raise

    async def read_replies(self) -> None:
        parser = Parser()
        try:
            while True:
                data = await self.stream.receive_some(1 << 16)
                if not data:
                    raise trio.BrokenResourceError("Redis closed the connection")
                parser.feed(data)
                while (reply := parser.next()) is not NEED_DATA:
                    slot = self.waiting.popleft()
                    slot.reply = reply  # type: ignore[assignment]
                    slot.done.set()
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ValueError,
                IndexError) as exc:
            self.fail(exc)
            # Nobody else closes a socket Redis broke: the next command makes a new one.
            await _close(self.stream)

    def fail(self, exc: BaseException) -> None:
        if self.broken is None:
            self.broken = exc
        self.outgoing.clear()
        self.queued.set()  # the writer ends
        while self.waiting:
            slot = self.waiting.popleft()
            slot.reply = exc
            slot.done.set()


class Redis:
    """Use inside ``async with``-scoped :meth:`open`, which owns the connection's reader."""

    def __init__(self, address: RedisAddress, *, nursery: trio.Nursery, timeout: float = 0.25,
                 connect_timeout: float = 0.5) -> None:
        self.address = address
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._nursery = nursery
        self._conn: _Connection | None = None
        self._connecting = trio.Lock()
        self._up = False
        self._ever_up = False
        self._retry_at = 0.0
        self._backoff = _BACKOFF_FIRST
        self._error: str | None = None
        self._on_up: list[Callable[[], Awaitable[None]]] = []
        self._closed = False

    # ---- state ------------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self._up

    def on_up(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` (in the background) each time Redis comes back after being down."""
        self._on_up.append(hook)

    def health(self) -> dict[str, Any]:
        state: dict[str, Any] = {"status": "ok" if self._up else "down",
                                 "url": self.address.describe()}
        if not self._up and self._error:
            state["error"] = self._error
        return state

    def _mark_down(self, error: str) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.fail(StoreUnavailable(f"Redis at {self.address.describe()}: {error}"))
            self._nursery.start_soon(_close, conn.stream)
        if self._up or self._error is None:
            log.warning("Redis at %s is unavailable (%s); serving from local state",
                        self.address.describe(), error)
        self._up = False
        self._error = error
        self._retry_at = trio.current_time() + self._backoff
        self._backoff = min(self._backoff * 2, _BACKOFF_MAX)

    def _mark_up(self) -> None:
        if self._up:
            return
        was_known = self._ever_up
        self._up, self._ever_up, self._error = True, True, None
        self._backoff = _BACKOFF_FIRST
        if was_known:
            log.warning("Redis at %s is back; resynchronising", self.address.describe())
        for hook in self._on_up:
            self._nursery.start_soon(hook)

    def _unavailable(self) -> StoreUnavailable:
        return StoreUnavailable(
            f"Redis at {self.address.describe()} is unavailable: {self._error or 'not connected'}")

    # ---- connecting -------------------------------------------------------------------------

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and conn.broken is None:
            return conn
        async with self._connecting:
            if self._conn is not None and self._conn.broken is None:
                return self._conn
            if self._closed:
                # A task still running at shutdown (an on-up hook) opens nothing new.
                raise StoreUnavailable("the Redis client was closed")
            if self._conn is not None:  # broken while idle (the reader saw it): close it
                stale, self._conn = self._conn, None
                await _close(stale.stream)
            if trio.current_time() < self._retry_at:
                raise self._unavailable()
            with trio.move_on_after(self.connect_timeout) as scope:
                try:
                    conn = await self._connect()
                except (OSError, trio.BrokenResourceError, ReplyError, ssl.SSLError) as exc:
                    self._mark_down(_describe(exc))
                    raise self._unavailable() from None
            if scope.cancelled_caught or conn is None:
                self._mark_down(f"no connection within {self.connect_timeout:g} s")
                raise self._unavailable()
            if self._closed:
                conn.fail(StoreUnavailable("the Redis client was closed"))
                await _close(conn.stream)
                raise StoreUnavailable("the Redis client was closed")
            self._conn = conn
            return conn

    async def _connect(self) -> _Connection:
        address = self.address
        stream: trio.abc.Stream = await trio.open_tcp_stream(address.host, address.port)
        try:
            return await self._hello(stream)
        except BaseException:
            # Refused, broken or cancelled (the connect timeout) half-way: the socket is
            # closed here, or it would linger until garbage collection.
            await _close(stream)
            raise

    async def _hello(self, stream: trio.abc.Stream) -> _Connection:
        address = self.address
        if address.tls:
            stream = trio.SSLStream(stream, ssl.create_default_context(),
                                    server_hostname=address.host)
            await stream.do_handshake()
        conn = _Connection(stream)
        self._nursery.start_soon(self._read, conn)
        self._nursery.start_soon(conn.write_commands)
        hello: list[list[Arg]] = []
        if address.password is not None:
            hello.append(["AUTH", address.username, address.password] if address.username
                         else ["AUTH", address.password])
        if address.db:
            hello.append(["SELECT", address.db])
        hello.append(["CLIENT", "SETNAME", "llm-router"])
        try:
            for slot in conn.send(hello):
                await slot.done.wait()
                if isinstance(slot.reply, ReplyError):
                    raise slot.reply
                if isinstance(slot.reply, BaseException):
                    raise trio.BrokenResourceError(str(slot.reply))
        except BaseException as exc:
            # Also a Redis that closes the connection while it starts, or the connect
            # timeout: the socket is closed here, not left to the garbage collector.
            conn.fail(exc)
            await _close(conn.stream)
            raise
        return conn

    # ---- commands ---------------------------------------------------------------------------

    async def pipeline(self, commands: Sequence[Sequence[Arg]], *,
                       timeout: float | None = None, probe: bool = False) -> list[Reply]:
        """Send ``commands`` in one write; their replies in order (a failed command's reply
        is its :class:`ReplyError`). Only a ``probe`` (background work: the heartbeat, the
        stream tail) connects when there is no connection; any other call then fails at once,
        so a request never waits for Redis to be found again.

        Raises:
            StoreUnavailable: Redis is down, or did not answer within the timeout.
        """
        conn = self._conn
        if conn is None or conn.broken is not None:
            if not probe or trio.current_time() < self._retry_at:
                raise self._unavailable()
            conn = await self._connection()
        limit = self.timeout if timeout is None else timeout
        try:
            slots = conn.send(commands)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._mark_down(_describe(exc))
            raise self._unavailable() from None
        except StoreUnavailable:
            raise self._unavailable() from None
        deadline = trio.current_time() + limit
        for _ in range(_STOOD_STILL_WAITS + 1):
            with trio.move_on_at(deadline):
                for slot in slots:
                    await slot.done.wait()
                return self._replies(conn, slots)
            if not await _stood_still(slots, deadline, limit):
                break
            if all(slot.done.is_set() for slot in slots):
                return self._replies(conn, slots)
            deadline = trio.current_time() + limit
        if self._conn is conn:  # else it was dropped already: one outage, one backoff step
            self._mark_down(f"no answer within {limit:g} s")
        raise self._unavailable()

    def _replies(self, conn: _Connection, slots: list[_Slot]) -> list[Reply]:
        replies: list[Reply] = []
        for slot in slots:
            if isinstance(slot.reply, BaseException) and not isinstance(slot.reply, ReplyError):
                if self._conn is conn:
                    self._mark_down(_describe(slot.reply))
                raise self._unavailable()
            replies.append(slot.reply)
        # Replies on a connection dropped since (another command timed out on it) say nothing
        # of the next one: marking Redis up now would run the ``on_up`` hooks while there is
        # no connection (their resynchronising fails), and not when there is one again.
        if self._conn is conn:
            self._mark_up()
        return replies

    async def call(self, *command: Arg, timeout: float | None = None,
                   probe: bool = False) -> Reply:
        """One command's reply.

        Raises:
            ReplyError: Redis refused the command.
            StoreUnavailable: Redis is down, or did not answer within the timeout.
        """
        (reply,) = await self.pipeline([command], timeout=timeout, probe=probe)
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    async def run(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Reply:
        """Run a Lua ``script`` (``EVALSHA``, loading it once if Redis does not know it)."""
        command: list[Arg] = [script.sha, len(keys), *keys, *args]
        try:
            return await self.call("EVALSHA", *command)
        except ReplyError as exc:
            if exc.kind != "NOSCRIPT":
                raise
        return await self.call("EVAL", script.source, *command[1:])

    def dedicated(self, *, timeout: float) -> Redis:
        """Another client on a connection of its own, for blocking commands (``XREAD
        BLOCK``): ``timeout`` must exceed the longest block asked for."""
        return Redis(self.address, nursery=self._nursery, timeout=timeout,
                     connect_timeout=self.connect_timeout)

    async def _read(self, conn: _Connection) -> None:
        """The connection's reader; a connection that breaks while in use (Redis restarted,
        the network cut) marks Redis down at once, so it shows in ``/health`` and the
        stores resynchronise when it is back (the ``on_up`` hooks)."""
        await conn.read_replies()
        if self._conn is conn and conn.broken is not None:
            self._mark_down(_describe(conn.broken))

    async def aclose(self) -> None:
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.fail(StoreUnavailable("the Redis client was closed"))
            await _close(conn.stream)


@asynccontextmanager
async def open_redis(address: RedisAddress, *, timeout: float = 0.25,
                     connect_timeout: float = 0.5) -> AsyncIterator[Redis]:
    """A client whose connections live as long as the block, connected on entering if Redis
    answers (a Redis that is down at start is not an error here: see :attr:`Redis.up`)."""
    async with trio.open_nursery() as nursery:
        redis = Redis(address, nursery=nursery, timeout=timeout,
                      connect_timeout=connect_timeout)
        try:
            try:
                await redis.call("PING", probe=True)
            except (StoreUnavailable, ReplyError):
                pass
            yield redis
        finally:
            await redis.aclose()
            nursery.cancel_scope.cancel()


async def _stood_still(slots: list[_Slot], deadline: float, limit: float) -> bool:
    """After ``deadline`` passed with ``slots`` unanswered: whether this process, not Redis,
    is the reason, so that Redis is given its ``limit`` again from now.

    A process that stands still (a GC pause, a frozen VM, SIGSTOP) finds every deadline past
    when it goes on, while Redis's answers wait unread in the socket: the reader is woken by
    them in the same scheduling round as the expired deadlines, and may come after them. A
    process whose event loop is saturated (a core's worth of requests at once) is late the
    same way on every round: a command's round trip (the writer's turn, the reader's, the
    caller's) takes several rounds, each as long as every other task's work.
    Marking Redis down then drops a healthy connection and sends every shared store through
    a reconnection and resynchronisation for nothing. So the reader gets its turns first (two
    rounds: the answers are then in if Redis gave them), and the process is the reason when
    the deadline was seen more than half its timeout late (it stood still past it) or when
    those rounds took more than an eighth of the timeout each (its loop is saturated): what
    Redis has still not answered is waited for once more (up to ``_STOOD_STILL_WAITS``
    times)."""
    started = trio.current_time()
    await trio.lowlevel.checkpoint()
    await trio.lowlevel.checkpoint()
    now = trio.current_time()
    return (all(slot.done.is_set() for slot in slots)
            or now - deadline > limit / 2 or (now - started) / 2 > limit / 8)


async def _close(stream: trio.abc.Stream) -> None:
    with trio.CancelScope(shield=True):
        try:
            await stream.aclose()
        except (OSError, trio.BrokenResourceError):
            pass


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
