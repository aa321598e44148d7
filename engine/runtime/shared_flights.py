"""In-flight dedup across router processes, through Redis (``state.redis_url``).

Each process dedups locally first (``engine.runtime.dedup``): identical requests in one
process join one local flight. The local flight's leader then *claims* the flight in Redis,
in one bounded round trip (the only one on a request's path)::

    SET llmr:flight:{<key hex>}:lead <token> NX GET PX <lease>

The key is the hex of the local flight key (the tenant and the whole request, so tenants
never share a flight); ``<token>`` is random per claim.

* **Won** (the reply is nil): this process calls the upstream. What its flight publishes
  (the head, then each batch of stream events) and then a final record (the result, or the
  error) are appended, in order, to the stream ``llmr:flight:{<key hex>}:events:<token>`` by a
  writer task in the background; the writer renews the lease every second. The final record
  and the release of the lead key are one script, and the stream expires a few seconds later.
* **Lost** (the reply is the holder's token): this process *follows* the holder's events
  stream from its beginning (the process's one stream tail, ``XREAD BLOCK``, serves every
  followed flight) and publishes each entry into its local flight as if it came from an
  upstream, then returns the leader's result or raises its error. Callers see
  ``X-LLM-Router-Dedup: FOLLOWER``.

A leader that dies stops renewing; a follower that hears nothing checks the lead key each
second, so within the lease plus a second it finds the lead gone (or someone else's) with no
final record. A leader whose every client left writes a ``gone`` record instead (its
upstream call is cancelled), which followers see at once. Either way a follower that has
published nothing yet claims the flight again (and leads, or follows the new leader); one
whose client already received part of a stream ends it with an error, never with a second
answer spliced onto the first.

Redis down or slow: the claim fails fast and the flight runs in this process alone. A leader
whose writes fail stops sharing (its followers then see its lead lapse); a follower that
cannot read Redis takes the call over when it has sent nothing, else gives the leader until
the lease runs out to come back.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

import trio

from engine.errors import RouterError, StoreUnavailable, UpstreamError
from engine.stores.redis import Redis, Script
from engine.stores.redis.resp import ReplyError
from engine.stores.redis.tail import StreamEntry, StreamTail

from .dedup import Publish, RunFlight
from .flight_codec import (
    ERROR,
    EVENTS,
    GONE,
    HEAD,
    RESULT,
    decode_error,
    decode_item,
    decode_result,
    encode_error,
    encode_item,
    encode_result,
)
from .node import NodeResult
from .shared import PREFIX

__all__ = ["SharedFlights"]

log = logging.getLogger("llm_router")

LEASE_SEC = 3.0  # a leader unheard of for this long is taken for dead
RENEW_SEC = 1.0  # how often a leader renews its lease, and a silent follower checks it
KEEP_SEC = 10.0  # how long a finished flight's events stay readable
MAX_CLAIMS = 3  # claims per request: past that (leaders dying in a row), call alone

# Renew the lease if it is still ours: 1, or 0 when it lapsed (someone may lead now).
_RENEW = Script("""if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2]) redis.call('PEXPIRE', KEYS[2], ARGV[3]) return 1
end return 0""")
# The final record, then the lead released if still ours, at once: a follower that finds the
# lead gone finds the final record too.
_FINISH = Script("""redis.call('XADD', KEYS[2], '*', 't', ARGV[2], 'd', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end return 1""")


class _LeaderLost(Exception):
    """The flight's leader died or gave up before its final record."""


def _id(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


class SharedFlights:
    """Runs a local flight's upstream call once across processes (see the module docstring)."""

    def __init__(self, redis: Redis, tail: StreamTail, nursery: trio.Nursery) -> None:
        self._redis = redis
        self._tail = tail
        self._nursery = nursery
        self._refused = False  # Redis refused a claim: said once in the log

    async def fly(self, key: bytes, run: RunFlight, publish: Publish) -> Any:
        """What ``run(publish)`` would return, from whichever process claims it first."""
        base = f"{PREFIX}flight:{{{key.hex()}}}"
        sent = False

        async def relay(item: Any, size: int) -> float:
            nonlocal sent
            sent = True
            return await publish(item, size)

        for _ in range(MAX_CLAIMS):
            token = secrets.token_hex(8)
            try:
                holder = await self._redis.call("SET", base + ":lead", token, "NX", "GET",
                                                "PX", int(LEASE_SEC * 1000))
            except StoreUnavailable:
                break
            except ReplyError as exc:  # SET ... NX GET needs Redis 7
                if not self._refused:
                    self._refused = True
                    log.warning("Redis refused a flight claim (%s): in-flight dedup is per "
                                "process only", exc)
                break
            if holder is None:
                return await self._lead(base, token, run, relay)
            if not isinstance(holder, bytes):
                break
            try:
                return await self._follow(base, holder.decode(), relay, lambda: sent)
            except _LeaderLost:
                if sent:
                    raise UpstreamError(
                        "the router process answering this request (shared with identical "
                        "requests in other processes) stopped before the end of its answer"
                    ) from None
        return await run(publish)

    # ---- leading ----------------------------------------------------------------------------

    async def _lead(self, base: str, token: str, run: RunFlight, publish: Publish) -> Any:
        writer = _Writer(self._redis, base, token)
        self._nursery.start_soon(writer.run)

        async def sharing(item: Any, size: int) -> float:
            writer.add(*encode_item(item, size))
            return await publish(item, size)

        try:
            done = await run(sharing)
        except RouterError as exc:
            writer.finish(ERROR, encode_error(exc))
            raise
        except BaseException:
            writer.finish(GONE, b"")  # cancelled (every client left), or a bug
            raise
        if isinstance(done, NodeResult):
            writer.finish(RESULT, encode_result(done))
        else:
            writer.finish(GONE, b"")
        return done

    # ---- following --------------------------------------------------------------------------

    async def _follow(self, base: str, token: str, publish: Publish,
                      sent: Callable[[], bool]) -> Any:
        events = f"{base}:events:{token}"
        inbox: list[StreamEntry] = []
        arrived = trio.Event()

        async def deliver(entries: list[StreamEntry]) -> None:
            inbox.extend(entries)
            arrived.set()

        last = (0, 0)
        unheard_since: float | None = None  # Redis unreadable since then
        self._tail.follow(events, deliver, since="0")
        try:
            while True:
                with trio.move_on_after(RENEW_SEC):
                    await arrived.wait()
                arrived = trio.Event()
                batch, inbox[:] = list(inbox), []
                for entry in batch:
                    if _id(entry.id) <= last:
                        continue
                    last = _id(entry.id)
                    if (done := await self._take(entry, publish)) is not None:
                        return done
                if batch:
                    continue
                try:
                    holder = await self._redis.call("GET", base + ":lead")
                    unheard_since = None
                except StoreUnavailable:
                    now = trio.current_time()
                    unheard_since = unheard_since if unheard_since is not None else now
                    if sent() and now - unheard_since < LEASE_SEC:
                        continue
                    raise _LeaderLost() from None
                if holder == token.encode():
                    continue
                # The lead is gone: the final record, if any, was written before.
                start = f"({last[0]}-{last[1]}" if last != (0, 0) else "-"
                rest: Any = await self._redis.call("XRANGE", events, start, "+")
                for ident, flat in rest if isinstance(rest, list) else []:
                    last = _id(ident)
                    entry = StreamEntry(ident, dict(zip(flat[::2], flat[1::2], strict=True)))
                    if (done := await self._take(entry, publish)) is not None:
                        return done
                raise _LeaderLost()
        except StoreUnavailable:
            raise _LeaderLost() from None
        finally:
            self._tail.unfollow(events)

    @staticmethod
    async def _take(entry: StreamEntry, publish: Publish) -> NodeResult | None:
        """Publish one entry; the result when it is the final one."""
        kind, data = entry.fields.get(b"t", b""), entry.fields.get(b"d", b"")
        if kind in (HEAD, EVENTS):
            await publish(*decode_item(kind, data))
            return None
        if kind == RESULT:
            return decode_result(data)
        if kind == ERROR:
            raise decode_error(data)
        raise _LeaderLost()  # gone


class _Writer:
    """Appends a leading flight's entries to its events stream, in order, in the background,
    and keeps its lease. It stops at the first failure: a stream with a gap would hand
    followers a partial answer, one that stops makes them see the leader lost."""

    def __init__(self, redis: Redis, base: str, token: str) -> None:
        self._redis = redis
        self._lead = base + ":lead"
        self._events = f"{base}:events:{token}"
        self._token = token
        self._pending: list[tuple[bytes, bytes]] = []
        self._final: tuple[bytes, bytes] | None = None
        self._wake = trio.Event()

    def add(self, kind: bytes, data: bytes) -> None:
        if self._final is None:
            self._pending.append((kind, data))
            self._wake.set()

    def finish(self, kind: bytes, data: bytes) -> None:
        if self._final is None:
            self._final = (kind, data)
            self._wake.set()

    async def run(self) -> None:
        lease_ms = int(LEASE_SEC * 1000)
        keep_ms = int(KEEP_SEC * 1000)
        renewed = trio.current_time()
        try:
            while True:
                with trio.move_on_after(RENEW_SEC):
                    await self._wake.wait()
                self._wake = trio.Event()
                batch, self._pending = self._pending, []
                final = self._final
                commands: list[list[Any]] = [
                    ["XADD", self._events, "*", "t", kind, "d", data] for kind, data in batch]
                if batch:
                    commands.append(["PEXPIRE", self._events, lease_ms + keep_ms])
                renew = final is None and trio.current_time() - renewed >= RENEW_SEC * 0.8
                script: tuple[Script, list[Any]] | None = None
                if renew:
                    script = (_RENEW, [self._token, lease_ms, lease_ms + keep_ms])
                if final is not None:
                    script = (_FINISH, [self._token, final[0], final[1], keep_ms])
                if script is not None:
                    commands.append(["EVALSHA", script[0].sha, 2, self._lead, self._events,
                                     *script[1]])
                if not commands:
                    continue
                replies = await self._redis.pipeline(commands)
                if (script is not None and isinstance(replies[-1], ReplyError)
                        and replies[-1].kind == "NOSCRIPT"):  # loaded once per Redis start
                    replies[-1] = await self._redis.run(script[0], [self._lead, self._events],
                                                        script[1])
                if any(isinstance(r, ReplyError) for r in replies):
                    log.warning("sharing a flight through Redis: %s",
                                next(r for r in replies if isinstance(r, ReplyError)))
                    return
                if renew:
                    renewed = trio.current_time()
                    if replies[-1] == 0:
                        return  # the lease lapsed: followers have moved on
                if final is not None:
                    return
        except StoreUnavailable:
            return
