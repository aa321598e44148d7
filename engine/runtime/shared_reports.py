"""Feedback on a request another router process answered (``--workers``, or several routers
on one Redis): forwarded to that process, whose answer is the caller's.

Only the process that answered a request remembers how it routed it (the decision, and the
trained router's reading of it, which online learning learns from), and a client cannot pick
the process its ``POST /v1/feedback`` reaches. A request id starts with the tag of the
process that made it (``engine.core.request_ids``), so a process given a report on another
tag's request:

1. checks that the tag's process is alive: each process renews ``llmr:reports:{<tag>}:alive``
   every second, and it expires :data:`ALIVE_SEC` after the last renewal (with
   ``llmr:reports:{<tag>}:seen``, which outlives it by :data:`SEEN_SEC`);
2. appends the report to the stream ``llmr:reports:{<tag>}:inbox``, with the key to answer on
   (the inbox expires :data:`INBOX_SEC` after its last report, and goes with its process when
   it stops, so processes that came and went leave no keys behind);
3. waits up to :data:`WAIT_SEC` for the answer on that key (a list, polled).

The owner follows its inbox (on the process's stream tail), files each report as if it had
been sent to it, and pushes its answer there: the JSON it would have answered, or its error's
code and message (kept :data:`ANSWER_SEC`). A tag no live process holds (the process stopped,
and what it remembered is gone with it) is a 404, as for any request the router no longer
remembers. With Redis down, 503: the report may still be known. An owner that does not
answer in time (its Redis connection broke, or it is overloaded) is a 503 too: the outcome is
unknown, since it may still file the report when it catches up. So is an owner that went
silent without saying it was leaving (paused, or killed) within :data:`SEEN_SEC`: from
outside the two look the same, the report is not filed, and a retry reaches a process that
goes on. A process that stops deletes both keys, so its reports are 404s at once.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
import trio

from engine.core.request_ids import TAG, tag_of
from engine.errors import NotFound, RouterError, StoreUnavailable, echo
from engine.stores.redis import Script
from engine.stores.redis.tail import StreamEntry

from .policy import FeedbackReport
from .shared import PREFIX, Shared

__all__ = ["ALIVE_SEC", "ANSWER_SEC", "INBOX_SEC", "SEEN_SEC", "WAIT_SEC", "SharedReports"]

log = logging.getLogger("llm_router")

ALIVE_SEC = 3.0
SEEN_SEC = 30.0
ANSWER_SEC = 30
INBOX_SEC = 600
WAIT_SEC = 5.0
_RENEW_SEC = 1.0
_RETRY_SEC = 0.1
_INBOX_KEPT = 1000

File = Callable[[FeedbackReport], Awaitable[Mapping[str, Any]]]


def _key(tag: str, part: str) -> str:
    return f"{PREFIX}reports:{{{tag}}}:{part}"  # one hash slot per process


def _errors(base: type[RouterError] = RouterError) -> dict[str, type[RouterError]]:
    """Every error of the tree by its code (an answer's error is raised here as it was
    there: filing a report raises only errors made from a message and a param)."""
    found = {base.code: base}
    for sub in base.__subclasses__():
        found = _errors(sub) | found
    return found


class SharedReports:
    """``file`` files a report in this process (the gateway's own, never forwarding)."""

    def __init__(self, shared: Shared, file: File, *, tag: str = TAG) -> None:
        self.redis = shared.redis
        self._shared = shared
        self._file = file
        self.tag = tag
        self._errors = _errors()
        self._nursery: trio.Nursery | None = None

    def owner(self, request_id: str | None) -> str | None:
        """The tag of the process that answered ``request_id``, when that is another process
        (so may be asked); else None."""
        tag = None if request_id is None else tag_of(request_id)
        return None if tag is None or tag == self.tag else tag

    async def run(self) -> None:
        """Answer the reports forwarded here, and say this process is alive, until cancelled.

        It says so only once it follows its inbox from the inbox's newest entry: a report
        sent once it is alive is never missed."""
        inbox, alive, seen = (_key(self.tag, part) for part in ("inbox", "alive", "seen"))
        while True:
            try:
                since = await self._shared.last_id(inbox)
                break
            except StoreUnavailable:
                await trio.sleep(_RETRY_SEC)  # Redis not reached yet (starting, or down)
        try:
            async with trio.open_nursery() as self._nursery:
                self._shared.tail.follow(inbox, self._on_reports, since=since)
                await self._stay_alive(alive, seen)
        finally:  # stopping: reports on this process's requests are 404s from now on
            self._shared.tail.unfollow(inbox)
            with trio.CancelScope(shield=True), trio.move_on_after(self.redis.timeout):
                try:
                    await self.redis.call("DEL", alive, seen, inbox)
                except StoreUnavailable:
                    pass  # it expires

    async def _stay_alive(self, alive: str, seen: str) -> None:
        while True:
            try:
                await self.redis.pipeline([["PSETEX", alive, int(ALIVE_SEC * 1000), "1"],
                                           ["PSETEX", seen, int(SEEN_SEC * 1000), "1"]])
                await trio.sleep(_RENEW_SEC)
            except StoreUnavailable:
                # Renewed once Redis answers; meanwhile nothing is forwarded here.
                await trio.sleep(_RETRY_SEC)

    async def forward(self, tag: str, report: FeedbackReport) -> Mapping[str, Any]:
        """File ``report`` (on a request of ``tag``'s process) there; its answer.

        Raises:
            NotFound: no live process holds ``tag``.
            StoreUnavailable: Redis is down or slow, or the owner went silent (the report
                was not filed), or the owner did not answer in time (it may still file it).
            RouterError: the owner's error (the one it would have answered).
        """
        answer_key = f"{_key(tag, 'answer')}:{secrets.token_hex(8)}"
        body = orjson.dumps({"quality": report.quality, "request_id": report.request_id,
                             "other_quality": report.other_quality,
                             "reporter": report.reporter})
        sent = await self.redis.run(
            _SEND, [_key(tag, part) for part in ("alive", "inbox", "seen")],
            [body, answer_key, _INBOX_KEPT, INBOX_SEC])
        if sent == _SILENT:
            raise StoreUnavailable(
                f"the router process that answered request_id {echo(report.request_id)} has "
                f"not been heard from for over {ALIVE_SEC:g} s (paused, or stopped without "
                "saying so); the report was not filed: retry")
        if sent != _SENT:
            raise _forgotten(report)
        # Polled: filing takes ~10-20 ms (the feedback database, calibration), and a poll is
        # one small round trip, cheaper than a connection of its own to block on.
        waited, pause = 0.0, 0.001
        while waited < WAIT_SEC:
            raw = await self.redis.call("LPOP", answer_key)
            if raw is not None:
                assert isinstance(raw, bytes)
                return self._read(raw, report)
            await trio.sleep(pause)
            waited += pause
            pause = min(pause * 2, 0.005)
        log.warning("feedback on %s: the process that answered it (tag %s) did not answer "
                    "within %g s", report.request_id, tag, WAIT_SEC)
        raise StoreUnavailable(
            f"the router process that answered request_id {echo(report.request_id)} did not "
            f"answer within {WAIT_SEC:g} s; it may still file the report")

    def _read(self, raw: bytes, report: FeedbackReport) -> Mapping[str, Any]:
        answer = orjson.loads(raw)
        if "error" not in answer:
            result: Mapping[str, Any] = answer["ok"]
            return result
        error = self._errors.get(answer["error"], RouterError)
        param = answer.get("param")
        raise error(str(answer["message"]), param=None if param is None else str(param))

    async def _on_reports(self, entries: list[StreamEntry]) -> None:
        """Each report is filed in a task of its own: the stream tail that delivers them
        serves every shared store, and filing one takes 10 ms or more."""
        assert self._nursery is not None  # followed only while ``run`` holds it
        for entry in entries:
            self._nursery.start_soon(self._answer, entry)

    async def _answer(self, entry: StreamEntry) -> None:
        try:
            raw = orjson.loads(entry.fields[b"report"])
            answer_key = entry.fields[b"answer"].decode()
            report = FeedbackReport(
                float(raw["quality"]), request_id=str(raw["request_id"]),
                other_quality=(None if raw["other_quality"] is None
                               else float(raw["other_quality"])),
                reporter=None if raw["reporter"] is None else str(raw["reporter"]))
        except (KeyError, ValueError, TypeError):
            log.warning("a forwarded feedback report could not be read: dropped")
            return
        try:
            answer: dict[str, Any] = {"ok": dict(await self._file(report))}
        except RouterError as exc:
            answer = {"error": exc.code, "message": exc.message, "param": exc.param}
        except Exception:  # a defect must not end the server, whose nursery this runs in
            log.exception("filing a forwarded feedback report on %s", report.request_id)
            answer = {"error": RouterError.code, "message": "internal error", "param": None}
        try:
            await self.redis.pipeline([["RPUSH", answer_key, orjson.dumps(answer)],
                                       ["EXPIRE", answer_key, ANSWER_SEC]])
        except StoreUnavailable:
            pass  # the sender gives up and answers 503; the report was filed


def _forgotten(report: FeedbackReport) -> NotFound:
    return NotFound(f"unknown or expired request_id {echo(report.request_id)}: the router "
                    "process that answered it is no longer running, or does not remember it",
                    param="request_id")


# Appends a report to a live process's inbox (which then lives ARGV[4] seconds more): 1; else
# 2 when the tag's process went silent lately, 0 when no process holds the tag (nothing is
# written for a process that is not alive).
_SENT, _SILENT = 1, 2
_SEND = Script("""
if redis.call('EXISTS', KEYS[1]) == 0 then
  if redis.call('EXISTS', KEYS[3]) == 1 then return 2 end
  return 0
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'report', ARGV[1], 'answer', ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
""")
