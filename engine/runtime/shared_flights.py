"""In-flight dedup across router processes, through Redis (``state.redis_url``).

Each process dedups locally first (``engine.runtime.dedup``): identical requests in one
process join one local flight. The local flight's leader then *claims* the flight in Redis,
in one bounded round trip (the only one on a request's path): one script that runs ::

    SET llmr:flight:{<key hex>}:lead <token> NX GET PX <lease>

and, when the lead is held already, marks the flight *followed*
(``llmr:flight:{<key hex>}:followed``, set to the holder's token for as long as the lead
lives). The key is the hex of the local flight key (the tenant and the whole request, so
tenants never share a flight); ``<token>`` is random per claim.

* **Won** (the reply is nil): this process calls the upstream. A leader writes for its
  followers only, and it has none until one announces itself in its claim, so a flight
  nobody follows writes nothing but the release of its lead. At the end, the release is one
  script: while nobody marked the flight followed, it deletes the lead (a follower that
  claims after that finds no lead and leads itself); when the flight is marked, it keeps
  the lead, and a second script appends the final record (the result, or the error: only
  then encoded) to the stream ``llmr:flight:{<key hex>}:events:<token>`` and releases the
  lead, at once. A *stream* flight's followers need its events as they come: while nobody
  follows, it holds what it publishes (the head, then each batch of events) and looks for
  a follower's mark every :data:`LOOK_SEC`; once it finds one it appends what it held, then
  each batch as it comes. A follower's first events thus wait at most that long (not the
  second until the next renewal), and a stream nobody follows costs a ``GET`` per
  :data:`LOOK_SEC` per process, not a write per batch. Past :data:`BACKLOG_BYTES` held, a
  stream writes them and the rest as it comes, followed or not (the release then deletes
  them). Everything is written by the process's one writer task (:meth:`SharedFlights.run`,
  in the gateway's background nursery), in order per flight, each pass in one pipeline; the
  same task renews the lease of every lead this process holds once a second, and looks
  for followers, in one pipeline. A followed flight's stream expires ten seconds after the
  end.
* **Lost** (the reply is the holder's token): this process *follows* the holder's events
  stream from its beginning (the process's one stream tail, ``XREAD BLOCK``, serves every
  followed flight) and publishes each entry into its local flight as if it came from an
  upstream, then returns the leader's result or raises its error. Callers see
  ``X-LLM-Router-Dedup: FOLLOWER``. Its claim has marked the flight followed before it reads
  anything, so the leader's release cannot miss it.

A leader that dies stops renewing; a follower that hears nothing checks the lead key each
second, so within the lease plus a second it finds the lead gone (or someone else's) with no
final record. A leader whose every client left writes a ``gone`` record instead (its
upstream call is cancelled) when it is followed, which followers see at once. Either way a
follower that has published nothing yet claims the flight again (and leads, or follows the
new leader); one whose client already received part of a stream ends it with an error, never
with a second answer spliced onto the first.

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
from engine.stores.redis.resp import Arg, ReplyError
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
# How often a leading stream nobody follows yet looks for a follower: a follower's first
# events wait this long at most. Past BACKLOG_BYTES (upstream bytes) held for a follower that
# may never come, a stream writes them, and the rest as it comes, followed or not.
LOOK_SEC = 0.05
BACKLOG_BYTES = 1 << 20

# The claim: the lead, or (held already) the flight marked followed for as long as the lead
# lives, and the holder's token. KEYS: lead, followed.
_CLAIM = Script("""local holder = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'GET', 'PX', ARGV[2])
if not holder then return false end
local left = redis.call('PTTL', KEYS[1])
if left > 0 then redis.call('PSETEX', KEYS[2], left, holder) end
return holder""")
# Renew the lease (and the mark, and the stream) if it is still ours: 1, or 0 when it lapsed
# (someone may lead now). KEYS: lead, followed, events.
_RENEW = Script("""if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
redis.call('PEXPIRE', KEYS[3], ARGV[3]) return 1""")
# The end of a flight: 1 when it is followed (the lead kept, for :data:`_FINISH`), else the
# lead released if still ours, with a stream's events nobody will read (0), or -1 when it
# lapsed. KEYS: lead, followed, events. One script, so a follower either
# marked the flight before (and gets the final record) or claims after (and finds no lead).
_RELEASE = Script("""if redis.call('GET', KEYS[2]) == ARGV[1] then return 1 end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('DEL', KEYS[1], KEYS[3]) return 0""")
# A followed flight's final record, then the lead (and its mark) released if still ours, at
# once: a follower that finds the lead gone finds the final record too.
_FINISH = Script("""redis.call('XADD', KEYS[3], '*', 't', ARGV[2], 'd', ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end return 1""")

_LEASE_MS = int(LEASE_SEC * 1000)
_KEEP_MS = int(KEEP_SEC * 1000)


class _LeaderLost(Exception):
    """The flight's leader died or gave up before its final record."""


def _id(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


class _Lead:
    """A flight this process leads: what is still to be written for it, by the writer task."""

    __slots__ = ("backlog", "events", "final", "followed", "keys", "pending", "renewed",
                 "token", "writing")

    def __init__(self, base: str, token: str, renewed: float) -> None:
        self.token = token
        self.events = f"{base}:events:{token}"
        self.keys = (base + ":lead", base + ":followed", self.events)
        self.pending: list[tuple[Any, int]] = []  # a stream's items (and sizes) not written
        self.backlog = 0  # their upstream bytes, while nobody follows
        self.writing = False  # a stream's items go to Redis as they come
        self.final: tuple[bytes, Any] | None = None  # (kind, the result or error) once done
        self.followed = False  # a follower announced itself: the final record is written
        self.renewed = renewed  # when the lease was last set (claim or renewal) was sent

    def final_record(self) -> bytes:
        assert self.final is not None
        kind, done = self.final
        return (encode_result(done) if kind == RESULT else encode_error(done) if kind == ERROR
                else b"")


class SharedFlights:
    """Runs a local flight's upstream call once across processes (see the module docstring).
    :meth:`run` must run (in the gateway's background nursery) for leads to be written."""

    def __init__(self, redis: Redis, tail: StreamTail) -> None:
        self._redis = redis
        self._tail = tail
        self._leads: dict[str, _Lead] = {}  # by token: the flights this process leads
        self._due: dict[str, _Lead] = {}  # those of them with something to write
        self._unfollowed = 0  # leading streams holding items for a follower yet to come
        self._wake = trio.Event()
        self._refused = False  # Redis refused a flight claim: said once in the log

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
            claimed = trio.current_time()
            try:
                holder = await self._redis.run(_CLAIM, [base + ":lead", base + ":followed"],
                                               [token, _LEASE_MS])
            except StoreUnavailable:
                break
            except ReplyError as exc:  # SET ... NX GET needs Redis 7
                if not self._refused:
                    self._refused = True
                    log.warning("Redis refused a flight claim (%s): in-flight dedup is per "
                                "process only", exc)
                break
            if holder is None:
                return await self._lead(_Lead(base, token, claimed), run, relay)
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

    async def _lead(self, lead: _Lead, run: RunFlight, publish: Publish) -> Any:
        self._leads[lead.token] = lead

        async def sharing(item: Any, size: int) -> float:
            if lead.final is None and lead.token in self._leads:
                lead.pending.append((item, size))
                if lead.writing:
                    self._due[lead.token] = lead
                    self._wake.set()
                else:
                    if not lead.backlog:
                        self._unfollowed += 1
                        self._wake.set()  # it looks for followers from now on
                    lead.backlog += size or 1
                    if lead.backlog > BACKLOG_BYTES:
                        self._write_from_now(lead)
            return await publish(item, size)

        try:
            done = await run(sharing)
        except RouterError as exc:
            self._end(lead, ERROR, exc)
            raise
        except BaseException:
            self._end(lead, GONE, None)  # cancelled (every client left), or a bug
            raise
        if isinstance(done, NodeResult):
            self._end(lead, RESULT, done)
        else:
            self._end(lead, GONE, None)
        return done

    def _end(self, lead: _Lead, kind: bytes, done: Any) -> None:
        if lead.final is None:
            lead.final = (kind, done)
            if lead.token in self._leads:
                self._due[lead.token] = lead
                self._wake.set()

    def _write_from_now(self, lead: _Lead) -> None:
        """A stream's items go to Redis from now on: those held first, then as they come."""
        if not lead.writing:
            lead.writing = True
            if lead.backlog:
                self._unfollowed -= 1
            self._due[lead.token] = lead
            self._wake.set()

    def _drop(self, lead: _Lead) -> None:
        """Stop sharing ``lead`` (done, lapsed, or its writes failed)."""
        if self._leads.pop(lead.token, None) is not None and lead.backlog and not lead.writing:
            self._unfollowed -= 1

    async def run(self) -> None:
        """The process's one writer of the flights it leads. Each pass, in one pipeline:
        the new items of the streams that are followed, the release of the leads that ended
        (and the final record of the followed ones); every :data:`LOOK_SEC`, while some
        stream holds items for nobody yet, whether a follower announced itself; once a
        second, the lease of every lead. A lead whose writes fail stops sharing: a stream
        with a gap would hand followers a partial answer, one that stops makes them see the
        leader lost."""
        renew_at = trio.current_time() + RENEW_SEC
        look_at: float | None = None  # while some stream holds items for nobody yet
        while True:
            if not self._unfollowed:
                look_at = None
            elif look_at is None:
                look_at = trio.current_time() + LOOK_SEC
            with trio.move_on_at(renew_at if look_at is None else min(renew_at, look_at)):
                await self._wake.wait()
            self._wake = trio.Event()
            now = trio.current_time()
            renew = now >= renew_at
            if renew:
                renew_at = now + RENEW_SEC
            look = look_at is not None and now >= look_at
            if look:
                look_at = now + LOOK_SEC
            if self._due or ((renew or look) and self._leads):
                await self._write(now if renew else None, look)

    async def _write(self, renew: float | None, look: bool) -> None:
        commands: list[list[Arg]] = []
        # Per lead written: its script (if any), its arguments, and where its commands end.
        parts: list[tuple[_Lead, Script | None, list[Arg], int]] = []
        leads, self._due = (self._leads if renew is not None or look else self._due), {}
        for lead in list(leads.values()):
            if lead.token not in self._leads:
                continue  # stopped sharing since: a gap would hand followers a partial answer
            start = len(commands)
            if lead.writing and lead.pending:
                for item, size in lead.pending:
                    kind, data = encode_item(item, size)
                    commands.append(["XADD", lead.events, "*", "t", kind, "d", data])
                lead.pending = []
                commands.append(["PEXPIRE", lead.events, _LEASE_MS + _KEEP_MS])
            script: Script | None = None
            args: list[Arg] = []
            if lead.final is not None and lead.followed:
                if lead.pending:  # held for a follower found at the release: written first
                    self._write_from_now(lead)
                    continue
                script, args = _FINISH, [lead.token, lead.final[0], lead.final_record(),
                                         _KEEP_MS]
            elif lead.final is not None:
                script, args = _RELEASE, [lead.token]
            elif renew is not None and renew - lead.renewed >= RENEW_SEC / 2:
                script, args = _RENEW, [lead.token, _LEASE_MS, _LEASE_MS + _KEEP_MS]
                lead.renewed = renew
            elif look and lead.backlog and not lead.writing:
                commands.append(["GET", lead.keys[1]])  # a follower's mark?
            if script is not None:
                commands.append(["EVALSHA", script.sha, 3, *lead.keys, *args])
            if len(commands) > start:
                parts.append((lead, script, args, len(commands)))
        if not commands:
            return
        try:
            replies = await self._redis.pipeline(commands)
        except StoreUnavailable:
            for lead, *_ in parts:
                self._drop(lead)
            return
        begin = 0
        for lead, script, args, end in parts:
            mine, begin = replies[begin:end], end
            if (script is not None and isinstance(mine[-1], ReplyError)
                    and mine[-1].kind == "NOSCRIPT"):  # loaded once per Redis start
                try:
                    mine[-1] = await self._redis.run(script, lead.keys, args)
                except ReplyError as exc:
                    mine[-1] = exc
                except StoreUnavailable:
                    self._drop(lead)
                    continue
            if any(isinstance(r, ReplyError) for r in mine):
                log.warning("sharing a flight through Redis: %s",
                            next(r for r in mine if isinstance(r, ReplyError)))
                self._drop(lead)
            elif script is None:
                if mine[-1] == lead.token.encode():  # followed: what it holds, then live
                    lead.followed = True
                    self._write_from_now(lead)
            elif script is _RELEASE and mine[-1] == 1:
                lead.followed = True  # its final record goes in the next pass
                self._due[lead.token] = lead
                self._wake.set()
            elif script in (_RELEASE, _FINISH) or (script is _RENEW and mine[-1] == 0):
                self._drop(lead)  # done, or the lease lapsed

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
