"""The shared run store: workflow runs in Redis, so that every router process sharing it
(``state.redis_url``) can show, watch, cancel and resume any run.

Implements :class:`~engine.stores.runs.RunStore` with the rules the embedded store keeps:

* **Atomic steps.** Every write that must happen whole is one Lua script
  (:mod:`.run_scripts`): a commit writes the run's fields, its ops and its event, and gives
  the event the next ``seq`` (the length of the run's event list) in one step; a create sets
  the tenant's idempotency key (``SET`` if absent) and adds the run in one step; a claim
  takes a run only if its owner and lease are still what the claimant saw. A read of one run
  is one ``HGETALL`` of its hash: never half before and half after a commit.
* **Leases.** A run's hash names its owner and lease end; each owner has a set of the runs it
  holds, which :meth:`~RedisRunStore.renew` walks. Whether an owner is alive is the caller's
  to say (``alive``), as for SQLite.
* **Keys.** ``llmr:run:{<run_id>}:record`` and ``:events``; per tenant
  ``llmr:run:{t:<hash>}:list`` (by creation time) and ``:idem:<hash>``; owners'
  ``llmr:run:{o:<owner>}:held``; and the indexes ``llmr:run:{index}:all|open|ended``.
  Memoized answers: ``llmr:memo:{<memo key>}:answer``, indexed by expiry in
  ``llmr:memo:{index}:expiry``. Tenants and idempotency keys appear hashed only. Scripts
  name every key they touch; some touch several hash tags, so this is for one Redis server
  (or a replicated primary), not Redis Cluster.
* **Errors.** Redis down, slow (``state.redis_timeout_ms``) or refusing a command is
  :class:`~engine.errors.StoreUnavailable` at once: a submission is answered 503
  ``store_unavailable``, a run in progress stalls and resumes when Redis is back
  (``engine.runtime.runs``); chat completions never touch this store.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import orjson

from engine.core.workflow.runs import OpState, RunChange, RunEvent, RunRecord, RunSpec
from engine.errors import NotFound, StoreUnavailable

from ..runs import Memo
from . import run_scripts as scripts
from .client import Redis
from .resp import Arg, Reply, ReplyError

__all__ = ["RedisRunStore"]

T = TypeVar("T")

_FIELDS = ("started_at", "cost_usd", "final_output", "error", "cancelled_by", "result",
           "starts")
_OPEN = ("queued", "running")
_PAGE = 100  # runs read per round trip when a listing filters by status
_ALL = "llmr:run:{index}:all"  # every run by creation time
_OPEN_INDEX = "llmr:run:{index}:open"  # unfinished runs by creation time: claim candidates
_ENDED = "llmr:run:{index}:ended"  # runs with an end time, by it: expiry candidates
_MEMO_INDEX = "llmr:memo:{index}:expiry"


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


def _record_key(run_id: str) -> str:
    return f"llmr:run:{{{run_id}}}:record"


def _events_key(run_id: str) -> str:
    return f"llmr:run:{{{run_id}}}:events"


def _tenant_key(tenant: str) -> str:
    return f"llmr:run:{{t:{_digest(tenant)}}}:list"


def _idem_key(tenant: str, key: str) -> str:
    return f"llmr:run:{{t:{_digest(tenant)}}}:idem:{_digest(key)}"


def _held_key(owner: str) -> str:
    return f"llmr:run:{{o:{owner}}}:held"


def _memo_key(key: str) -> str:
    return f"llmr:memo:{{{key}}}:answer"


def _json(value: Any) -> bytes:
    return orjson.dumps(value)


def _items(reply: Reply) -> list[Reply]:
    assert isinstance(reply, list), reply
    return reply


def _bytes(reply: Reply) -> bytes:
    assert isinstance(reply, bytes), reply
    return reply


def _texts(reply: Reply) -> list[str]:
    return [_bytes(item).decode() for item in _items(reply)]


class RedisRunStore:
    """Runs in the Redis of :class:`~engine.runtime.shared.Shared` (whose lifetime the client
    has: :meth:`close` leaves it open)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._error: str | None = None

    # ---- plumbing ---------------------------------------------------------------------------

    async def _do(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` (Redis calls), turning Redis failures into StoreUnavailable and keeping
        the last outcome for :meth:`health`."""
        try:
            result = await fn()
        except StoreUnavailable as exc:
            self._error = f"run store: {exc.message}"
            raise StoreUnavailable(self._error) from None
        except ReplyError as exc:
            self._error = f"run store: Redis refused a command ({exc})"
            raise StoreUnavailable(self._error) from None
        self._error = None
        return result

    async def _pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Reply]:
        if not commands:
            return []
        replies = await self.redis.pipeline(commands)
        for reply in replies:
            if isinstance(reply, ReplyError):
                raise reply
        return replies

    # ---- RunStore ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Nothing to open: a Redis that is down now is not an error here (the runs wait for
        it, and ``health`` says so)."""
        try:
            await self._do(lambda: self.redis.call("PING"))
        except StoreUnavailable:
            pass

    async def close(self) -> None:
        pass

    def health(self) -> dict[str, Any]:
        error = self._error
        if error is None and not self.redis.up:
            error = f"run store: {self.redis.health().get('error') or 'Redis is not connected'}"
        state = {"status": "ok"} if error is None else {"status": "error", "error": error}
        return state | {"kind": "redis", "url": self.redis.address.describe()}

    async def create(self, record: RunRecord, *, owner: str | None, lease_sec: float,
                     now: float) -> tuple[RunRecord, bool]:
        tenant, key = record.spec.tenant, record.idempotency_key
        own = _record_key(record.run_id)
        keys = [own, _tenant_key(tenant), _ALL, _OPEN_INDEX,
                _held_key(owner) if owner is not None else own,
                _idem_key(tenant, key) if key is not None else own]
        args: list[Arg] = [record.run_id, _json(record.created_at),
                           int(record.status in _OPEN), int(owner is not None),
                           int(key is not None)]
        args += _hash_pairs(record, owner=owner,
                            lease_until=now + lease_sec if owner is not None else 0.0)

        async def write() -> tuple[RunRecord, bool]:
            done = await self.redis.run(scripts.CREATE, keys, args)
            if done == 1:
                return record, True
            assert isinstance(done, bytes)
            replies = await self._pipeline([["HGETALL", _record_key(done.decode())]])
            existing = _parse(replies[0])
            if existing is None:
                raise StoreUnavailable(f"the idempotency key names run {done.decode()}, "
                                       "which is gone")
            return existing, False

        result: tuple[RunRecord, bool] = await self._do(write)
        return result

    async def get(self, run_id: str, *, tenant: str | None) -> RunRecord | None:
        reply = await self._do(lambda: self.redis.call("HGETALL", _record_key(run_id)))
        record = _parse(reply)
        if record is None or (tenant is not None and record.spec.tenant != tenant):
            return None
        return record

    async def list(self, *, tenant: str | None, status: str | None,
                   limit: int) -> Sequence[RunRecord]:
        """Newest first from the tenant's index (every run's, for the router itself); with
        ``status``, read a page at a time and filtered, so a rare status among many runs
        costs a walk through them."""
        index = _ALL if tenant is None else _tenant_key(tenant)
        page = limit if status is None else max(limit, _PAGE)

        async def read() -> list[RunRecord]:
            found: list[RunRecord] = []
            start = 0
            while len(found) < limit:
                ids = _texts(await self.redis.call("ZREVRANGE", index, start,
                                                   start + page - 1))
                if not ids:
                    break
                replies = await self._pipeline([["HGETALL", _record_key(i)] for i in ids])
                for reply in replies:
                    record = _parse(reply)
                    if record is None or (tenant is not None and record.spec.tenant != tenant):
                        continue
                    if status is None or record.status == status:
                        found.append(record)
                if len(ids) < page:
                    break
                start += page
            return found[:limit]

        result: list[RunRecord] = await self._do(read)
        return result

    async def commit(self, run_id: str, change: RunChange, *, now: float) -> int:
        pairs: list[Arg] = []
        for name, value in change.fields.items():
            if name in _FIELDS:
                pairs += [f"f:{name}", _json(value)]
        if "finished_at" in change.fields:
            pairs += ["finished_at", _json(change.fields["finished_at"])]
        for name, op in change.ops.items():
            pairs += [f"op:{name}", _json(op.to_json())]
        event = b"" if change.event is None else _json(
            [change.event[0], change.event[1], now])
        args: list[Arg] = [run_id, change.status or "", int("finished_at" in change.fields),
                           event, *pairs]
        keys = [_record_key(run_id), _events_key(run_id), _OPEN_INDEX, _ENDED]
        seq = await self._do(lambda: self.redis.run(scripts.COMMIT, keys, args))
        if seq == -1:
            raise NotFound(f"no workflow run {run_id!r}")
        assert isinstance(seq, int)
        return seq

    async def events(self, run_id: str, *, after: int, limit: int) -> Sequence[RunEvent]:
        items = await self._do(lambda: self.redis.call(
            "LRANGE", _events_key(run_id), after, after + limit - 1))
        events = []
        for seq, item in enumerate(_items(items), start=after + 1):
            name, data, _at = orjson.loads(_bytes(item))
            events.append(RunEvent(seq, name, data))
        return events

    async def claim(self, *, owner: str, lease_sec: float, now: float,
                    alive: Callable[[str], bool], limit: int) -> Sequence[RunRecord]:
        """Read the unfinished runs' owners and leases, judge them here (``alive`` is a call
        of this process), then take each chosen run with a script that checks nothing
        changed meanwhile: of two claimants, one wins."""

        async def take() -> list[RunRecord]:
            run_ids = _texts(await self.redis.call("ZRANGE", _OPEN_INDEX, 0, -1))
            seen = await self._pipeline([["HMGET", _record_key(r), "status", "owner",
                                          "lease_until"] for r in run_ids])
            chosen: list[tuple[str, str, bool]] = []
            for run_id, reply in zip(run_ids, seen, strict=True):
                state, held_by, lease = _items(reply)
                if state is None or _bytes(state).decode() not in _OPEN:
                    continue
                held = _bytes(held_by).decode()
                if held == owner:
                    continue
                dead = bool(held) and not alive(held)
                if held and not dead and float(_bytes(lease)) >= now:
                    continue
                chosen.append((run_id, held, dead))
            taken: list[RunRecord] = []
            until = _json(now + lease_sec)
            while chosen and len(taken) < limit:
                batch, chosen = chosen[:limit - len(taken)], chosen[limit - len(taken):]
                replies = await self._pipeline([
                    ["EVALSHA", scripts.CLAIM.sha, 3, _record_key(run_id), _held_key(owner),
                     _held_key(held) if held else _record_key(run_id),
                     run_id, held, int(dead), owner, _json(now), until]
                    for run_id, held, dead in batch])
                taken += [r for r in map(_parse, replies) if r is not None]
            return taken

        await self._load(scripts.CLAIM)
        result: list[RunRecord] = await self._do(take)
        return result

    async def _load(self, script: scripts.Script) -> None:
        """Make sure Redis knows ``script`` before it is sent by digest in a pipeline."""
        await self._do(lambda: self.redis.call("SCRIPT", "LOAD", script.source))

    async def _held(self, owner: str, script: scripts.Script, *args: Arg) -> None:
        async def run() -> None:
            run_ids = _texts(await self.redis.call("SMEMBERS", _held_key(owner)))
            if run_ids or script is scripts.RELEASE:
                await self.redis.run(script, [_held_key(owner), *map(_record_key, run_ids)],
                                     [owner, *args, *run_ids])

        await self._do(run)

    async def renew(self, *, owner: str, lease_sec: float, now: float) -> None:
        await self._held(owner, scripts.RENEW, _json(now + lease_sec))

    async def release(self, *, owner: str) -> None:
        await self._held(owner, scripts.RELEASE)

    async def request_cancel(self, run_id: str, *, tenant: str | None,
                             by: Mapping[str, Any]) -> RunRecord | None:
        args: list[Arg] = [int(tenant is not None), tenant or "", _json(dict(by))]
        reply = await self._do(lambda: self.redis.run(scripts.REQUEST_CANCEL,
                                                      [_record_key(run_id)], args))
        return _parse(reply)

    async def cancel_requests(self, *, owner: str) -> Sequence[tuple[str, Mapping[str, Any]]]:
        async def read() -> list[tuple[str, Mapping[str, Any]]]:
            run_ids = sorted(_texts(await self.redis.call("SMEMBERS", _held_key(owner))))
            replies = await self._pipeline([["HMGET", _record_key(r), "status", "owner",
                                             "cancel_by"] for r in run_ids])
            asked = []
            for run_id, reply in zip(run_ids, replies, strict=True):
                state, held_by, by = _items(reply)
                if (state is not None and _bytes(state).decode() in _OPEN
                        and held_by == owner.encode() and by not in (None, b"null")):
                    asked.append((run_id, orjson.loads(_bytes(by))))
            return asked

        result: list[tuple[str, Mapping[str, Any]]] = await self._do(read)
        return result

    async def memo_get(self, key: str, *, now: float) -> Memo | None:
        reply = await self._do(lambda: self.redis.call("GET", _memo_key(key)))
        if reply is None:
            return None
        data = orjson.loads(_bytes(reply))
        if data.pop("expires_at") <= now:
            return None
        return Memo(**data)

    async def memo_put(self, key: str, memo: Memo, *, expires_at: float) -> None:
        """Kept with its expiry time (the caller's clock) and indexed by it for
        :meth:`expire`; Redis also drops it by itself then, if that time is still ahead."""
        value = {name: getattr(memo, name) for name in memo.__slots__}
        commands: list[list[Arg]] = [
            ["SET", _memo_key(key), _json(value | {"expires_at": expires_at})],
            ["ZADD", _MEMO_INDEX, _json(expires_at), key],
        ]
        if expires_at > time.time():
            commands.append(["PEXPIREAT", _memo_key(key), int(expires_at * 1000)])
        await self._do(lambda: self._pipeline(commands))

    async def tidy(self) -> None:
        """Nothing to do: Redis keeps its own house."""

    async def expire(self, *, finished_before: float, now: float) -> int:
        async def sweep() -> int:
            gone = 0
            offset = 0
            while True:
                run_ids = _texts(await self.redis.call(
                    "ZRANGEBYSCORE", _ENDED, "-inf", f"({finished_before!r}", "LIMIT", offset,
                    500))
                if not run_ids:
                    break
                found = await self._pipeline([["HMGET", _record_key(r), "tenant", "idem",
                                               "owner"] for r in run_ids])
                commands: list[list[Arg]] = []
                for run_id, reply in zip(run_ids, found, strict=True):
                    tenant, idem, owner = _items(reply)
                    own = _record_key(run_id)
                    idem_key = orjson.loads(_bytes(idem)) if idem is not None else None
                    tenant_text = _bytes(tenant).decode() if tenant is not None else ""
                    commands.append([
                        "EVALSHA", scripts.EXPIRE.sha, 8, own, _events_key(run_id),
                        _tenant_key(tenant_text), _ALL, _ENDED, _OPEN_INDEX,
                        _idem_key(tenant_text, idem_key) if idem_key is not None else own,
                        _held_key(_bytes(owner).decode()) if owner else own,
                        run_id, _json(finished_before)])
                went = sum(r == 1 for r in await self._pipeline(commands))
                gone += went
                offset += len(run_ids) - went  # what stayed (not finished after all)
            memos = _texts(await self.redis.call("ZRANGEBYSCORE", _MEMO_INDEX, "-inf",
                                                 _json(now)))
            if memos:
                await self._pipeline([["DEL", *map(_memo_key, memos)],
                                      ["ZREM", _MEMO_INDEX, *memos]])
            return gone

        await self._load(scripts.EXPIRE)
        result: int = await self._do(sweep)
        return result


def _hash_pairs(record: RunRecord, *, owner: str | None, lease_until: float) -> list[Arg]:
    pairs: list[Arg] = [
        "run_id", record.run_id, "tenant", record.spec.tenant,
        "idem", _json(record.idempotency_key), "status", record.status,
        "created_at", _json(record.created_at), "finished_at", _json(record.finished_at),
        "owner", owner or "", "lease_until", _json(lease_until), "cancel_by", b"null",
        "spec", _json(record.spec.to_json()), "ops", _json(list(record.ops)),
    ]
    for name in _FIELDS:
        pairs += [f"f:{name}", _json(getattr(record, name))]
    for name, op in record.ops.items():
        pairs += [f"op:{name}", _json(op.to_json())]
    return pairs


def _parse(reply: Reply) -> RunRecord | None:
    """A run from its hash as ``HGETALL`` (or a script) returns it; ``None`` if empty."""
    if not reply:
        return None
    items = iter(_items(reply))
    data = {_bytes(k).decode(): _bytes(v) for k, v in zip(items, items, strict=True)}
    ops = {name: OpState.from_json(orjson.loads(data[f"op:{name}"]))
           for name in orjson.loads(data["ops"])}
    fields = {name: orjson.loads(data[f"f:{name}"]) for name in _FIELDS}
    return RunRecord(run_id=data["run_id"].decode(),
                     spec=RunSpec.from_json(orjson.loads(data["spec"])),
                     created_at=orjson.loads(data["created_at"]),
                     status=data["status"].decode(), ops=ops,
                     finished_at=orjson.loads(data["finished_at"]),
                     idempotency_key=orjson.loads(data["idem"]), **fields)
