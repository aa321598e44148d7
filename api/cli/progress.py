"""A workflow run's progress on the command line: its server-sent events read line by line,
with their ids, and one line shown per event.

No network here: :class:`Follower` is what ``workflow run`` and ``workflow watch`` share. It
shows each event once, even when a resumed stream repeats one, and remembers the last event
id, which is where a reconnect resumes (``Last-Event-ID``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from .failure import EXIT_CANCELLED, EXIT_FAILED, CommandFailed

__all__ = ["Event", "Follower", "Progress", "preview", "read_events"]

_PREVIEW_CHARS = 72


class Event(NamedTuple):
    """One server-sent event: its ``id:`` (None without one), its name and its JSON data."""

    id: int | None
    name: str
    data: Any


def read_events(lines: Iterable[str]) -> Iterator[Event]:
    """The events of an SSE body given line by line, as they complete. An event cut off
    before its blank line is not one: a dropped connection loses it, and a resumed stream
    sends it again.

    >>> list(read_events(["id: 1", "event: op_started", 'data: {"op": "a"}', "",
    ...                   ": keep-alive", "", "id: 2", "event: result", "data: {}"]))
    [Event(id=1, name='op_started', data={'op': 'a'})]
    """
    event_id: int | None = None
    name = ""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield Event(event_id, name or "message", _parsed("\n".join(data)))
            event_id, name, data = None, "", []
            continue
        field, _, value = line.partition(":")  # a ":" comment has the field ""
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
        elif field == "id":
            event_id = int(value) if value.isascii() and value.isdigit() else None


def _parsed(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise CommandFailed(f"the router sent an event that is not JSON: {preview(text)}",
                            EXIT_FAILED) from None


def preview(text: str | None, width: int = _PREVIEW_CHARS) -> str:
    """One line of ``text``: whitespace collapsed, cut at ``width`` characters.

    >>> preview("Three r's.\\n\\nStep 1: count them " + "x" * 80, 30)
    "Three r's. Step 1: count th..."
    """
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


class Progress:
    """Writes one line per progress event, each with the time since following began."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.began = time.monotonic()

    def line(self, what: str, op: str, detail: str = "") -> None:
        elapsed = time.monotonic() - self.began
        print(f"[{elapsed:6.1f}s] {what:<8} {op:<16} {detail}".rstrip(), file=self.out,
              flush=True)

    def event(self, name: str, data: dict[str, Any]) -> None:
        op = str(data.get("op", ""))
        if name == "run_started":
            starts, done = data.get("starts", 1), data.get("completed_ops") or []
            detail = "started" if starts <= 1 else f"resumed (start {starts})"
            if done:
                detail += f"; not run again: {', '.join(done)}"
            self.line("run", str(data.get("run_id", "")), detail)
        elif name == "op_started":
            route = f"model {data['model']}" if data.get("model") else (
                f"tier {data['tier']}" if data.get("tier") is not None else "routed by score")
            self.line("started", op, route)
        elif name == "op_finished":
            notes = [f"{data.get('model')} (tier {data.get('tier')})",
                     f"${data.get('cost_usd', 0):.6f}", f"{data.get('ms', 0):.0f} ms"]
            if data.get("cache") in ("HIT", "memo"):
                notes.append("cache hit" if data["cache"] == "HIT" else "memoized")
            if data.get("attempts", 1) > 1:
                notes.append(f"{data['attempts']} attempts")
            self.line("done", op, "  ".join(notes) + f"  | {preview(data.get('output'))}")
        elif name == "op_failed":
            self.line("FAILED", op, str(data.get("error", "")))
        elif name == "op_skipped":
            why = ("not run: the budget (max_cost_usd) is spent"
                   if data.get("reason") == "not_run" else "skipped: an input failed or did "
                   "not run")
            self.line("skipped", op, why)

    def finish(self, result: dict[str, Any]) -> int:
        """Print a finished run's summary, then its final output alone on standard output;
        the exit status."""
        ops = result.get("ops", {})
        done = sum(1 for op in ops.values() if op.get("status") == "done")
        seconds = result.get("total_ms", 0) / 1000
        summary = (f"{result.get('status')}: {done} of {len(ops)} ops in {seconds:.1f} s, "
                   f"${result.get('total_cost_usd', 0):.6f}")
        for key, label in (("failed", "failed"), ("skipped", "skipped"),
                           ("not_run", "not run")):
            if result.get(key):
                summary += f"; {label}: {', '.join(result[key])}"
        print(summary, file=self.out, flush=True)
        final = result.get("final_output")
        if final is not None:
            print(final)
        else:
            print("(no final output: the end ops did not finish)", file=self.out)
        return 0 if result.get("status") == "completed" else EXIT_FAILED


class Follower:
    """Shows one run's events as they come, from one stream or several in turn."""

    def __init__(self, progress: Progress, *, run_id: str | None = None) -> None:
        self.progress = progress
        self.run_id = run_id  # known from the start (watch) or from run_started (run)
        self.last_id = 0  # the last event shown: a reconnect resumes after it

    def feed(self, event: Event) -> int | None:
        """Show ``event``; the exit status once the run has ended, else None.

        Raises:
            CommandFailed: the run failed (exit 1) or was cancelled (exit 3).
        """
        if event.id is not None:
            if event.id <= self.last_id:
                return None  # shown already
            self.last_id = event.id
        data = event.data if isinstance(event.data, dict) else {}
        if event.name == "run_started" and data.get("run_id"):
            self.run_id = str(data["run_id"])
        if event.name == "result":
            return self.progress.finish(data)
        if event.name == "error":
            error = data.get("error")
            if not isinstance(error, dict):
                error = {}
            raise CommandFailed(f"the workflow failed: {error.get('message', event.data)}",
                                EXIT_FAILED)
        if event.name == "cancelled":
            raise CommandFailed(_cancelled(data.get("run_id") or self.run_id,
                                           data.get("cancelled_by")), EXIT_CANCELLED)
        self.progress.event(event.name, data)
        return None


def _cancelled(run_id: str | None, by: Any) -> str:
    """``run R was cancelled at T: reason``, from a ``cancelled_by``."""
    said = f"run {run_id} was cancelled"
    if isinstance(by, dict):
        said += f" at {by['at']}" if by.get("at") else ""
        said += f": {by['reason']}" if by.get("reason") else ""
    return said
