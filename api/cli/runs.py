"""``llm-router workflow status|watch|cancel|runs``: a router's durable runs, by their id.

::

    llm-router workflow status RUN_ID [--json]
    llm-router workflow watch RUN_ID
    llm-router workflow cancel RUN_ID [--reason TEXT] [--json]
    llm-router workflow runs [--status STATUS] [--limit N] [--json]

each with ``--server URL`` and ``--api-key KEY``, as ``workflow run``. ``watch`` shows the
run's progress as ``workflow run`` does (the events so far, then live ones) and, like it,
reconnects when the connection drops: :func:`follow_run` asks for the events after the last
one shown (``Last-Event-ID``), so no line is shown twice.

Exit status: 0 done (for ``watch``: the run succeeded); 1 the run failed, or the router
could not be reached or answered a 5xx; 2 the router refused the request (an unknown run,
a run that has already ended for ``cancel``); 3 the run was cancelled (``watch``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .failure import EXIT_FAILED, EXIT_INTERRUPTED, CommandFailed
from .header_args import header_text
from .progress import Event, Follower, Progress, preview

if TYPE_CHECKING:
    from .remote import Router

__all__ = ["COMMANDS", "DEFAULT_SERVER", "add_router_options", "add_run_commands",
           "describe_run", "follow_run", "runs_table"]

DEFAULT_SERVER = "http://127.0.0.1:8080"
RECONNECT_PATIENCE_SEC = 60.0  # a restarted router resumes its runs within seconds
_STEADY_SEC = 5.0  # a stream open this long was a working connection, even with no event

Opener = Callable[[], AbstractContextManager[Iterator[Event]]]


def add_router_options(parser: argparse.ArgumentParser) -> None:
    """``--server`` and ``--api-key``, for each command that calls a router."""
    parser.add_argument("--server", default=DEFAULT_SERVER,
                        help=f"the router's URL (default {DEFAULT_SERVER})")
    parser.add_argument("--api-key", default=None, type=header_text(),
                        help="a client key, if the router wants one")


def add_run_commands(actions: Any) -> None:
    """Add ``status``, ``watch``, ``cancel`` and ``runs`` to ``workflow``'s subcommands."""
    run_help = "the run's id (run_...), as `workflow run` and `workflow runs` show it"
    status = actions.add_parser("status", help="show a run: its state, each op, its output")
    status.add_argument("run_id", metavar="RUN_ID", help=run_help)
    status.add_argument("--json", action="store_true", help="print the run's record as JSON")
    watch = actions.add_parser("watch", help="follow a run's progress until it ends")
    watch.add_argument("run_id", metavar="RUN_ID", help=run_help)
    cancel = actions.add_parser("cancel", help="cancel a queued or running run")
    cancel.add_argument("run_id", metavar="RUN_ID", help=run_help)
    cancel.add_argument("--reason", default=None, help="why, kept in the run's record")
    cancel.add_argument("--json", action="store_true", help="print the run's record as JSON")
    listing = actions.add_parser("runs", help="list recent runs, newest first")
    listing.add_argument("--status", default=None,
                         help="only runs in this state: queued, running, succeeded, failed "
                              "or cancelled")
    listing.add_argument("--limit", type=int, default=None,
                         help="at most this many (1 to 1000; the router's default is 20)")
    listing.add_argument("--json", action="store_true", help="print the router's answer as JSON")
    for parser in (status, watch, cancel, listing):
        add_router_options(parser)


def _run_path(run_id: str) -> str:
    return f"/v1/workflows/runs/{quote(run_id, safe='')}"


def _status(args: argparse.Namespace) -> int:
    from .remote import json_of, open_router

    with open_router(args.server, args.api_key) as router:
        record = json_of(router.call("GET", _run_path(args.run_id)))
    print(json.dumps(record, indent=2) if args.json else describe_run(record))
    return 0


def _watch(args: argparse.Namespace) -> int:
    from .remote import open_router

    follower = Follower(Progress(sys.stderr), run_id=args.run_id)
    with open_router(args.server, args.api_key) as router:
        return follow_run(router, follower,
                          partial(router.events, "GET", _run_path(args.run_id) + "/events"))


def _cancel(args: argparse.Namespace) -> int:
    from .remote import json_of, open_router

    body = {"reason": args.reason} if args.reason is not None else None
    with open_router(args.server, args.api_key) as router:
        record = json_of(router.call("POST", _run_path(args.run_id) + "/cancel", body=body))
    print(json.dumps(record, indent=2) if args.json else describe_run(record))
    if record.get("status") != "cancelled":
        print(f"llm-router: another router process holds {args.run_id}; it stops the run "
              "within about a second", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    from .remote import json_of, open_router

    params = {"status": args.status, "limit": args.limit}
    with open_router(args.server, args.api_key) as router:
        page = json_of(router.call("GET", "/v1/workflows/runs",
                                   params={k: v for k, v in params.items() if v is not None}))
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    runs = page.get("data", [])
    print(runs_table(runs) if runs else f"no {args.status + ' ' if args.status else ''}runs")
    if page.get("has_more"):
        print(f"llm-router: there are more than the {len(runs)} shown; raise --limit to see "
              "more", file=sys.stderr)
    return 0


COMMANDS: Mapping[str, Callable[[argparse.Namespace], int]] = {
    "status": _status, "watch": _watch, "cancel": _cancel, "runs": _list}


# ---- following a run -----------------------------------------------------------------------


def follow_run(router: Router, follower: Follower, first: Opener, *,
               patience: float = RECONNECT_PATIENCE_SEC) -> int:
    """Show a run's events until it ends; its exit status.

    ``first`` opens the first stream: ``workflow run``'s POST, or the run's events. When a
    stream that was open drops, or ends before the run does, the run's events are asked for
    again after the last one shown, until ``patience`` seconds pass in which no stream
    brought an event or stayed open a while. A first stream that cannot be opened fails at
    once: nothing suggests that the router is coming back.

    Raises:
        CommandFailed: the run failed or was cancelled, the router refused, or it could not
            be reached (again).
    """
    from .remote import RouterUnavailable

    opener, opened, lost_at = first, False, None
    try:
        while True:
            shown, opened_at = follower.last_id, None
            try:
                with opener() as events:
                    opened, opened_at = True, time.monotonic()
                    for event in events:
                        status = follower.feed(event)
                        if status is not None:
                            return status
                why = "the router ended the stream before the run ended"
            except RouterUnavailable as exc:
                if not opened or follower.run_id is None:
                    raise
                why = exc.message
            if follower.run_id is None:
                raise CommandFailed("the router closed the stream before the run started",
                                    EXIT_FAILED)
            now = time.monotonic()
            if follower.last_id > shown or (
                    opened_at is not None and now - opened_at >= _STEADY_SEC):
                lost_at = None  # that stream served: this is a new loss, not the same one
            if lost_at is None:
                lost_at = now
                print(f"llm-router: {why}; reconnecting, to resume after event "
                      f"{follower.last_id}", file=sys.stderr, flush=True)
            elif now - lost_at >= patience:
                raise CommandFailed(f"{why}; gave up reconnecting after {patience:.0f} s "
                                    f"(the run goes on: llm-router workflow watch "
                                    f"{follower.run_id})", EXIT_FAILED)
            time.sleep(0.2 if now == lost_at else 1.0)
            opener = partial(router.events, "GET", _run_path(follower.run_id) + "/events",
                             after=follower.last_id)
    except KeyboardInterrupt:
        if follower.run_id is None:
            raise
        raise CommandFailed(f"interrupted; run {follower.run_id} goes on (llm-router workflow "
                            f"watch {follower.run_id}, or cancel it)", EXIT_INTERRUPTED
                            ) from None


# ---- rendering -----------------------------------------------------------------------------


def describe_run(record: Mapping[str, Any]) -> str:
    """A run's record as ``workflow status`` prints it: its fields, a line per op, and its
    final output last."""
    lines = [f"run:       {record.get('run_id')}",
             f"workflow:  {record.get('workflow') or '-'}",
             f"status:    {record.get('status')}"]
    starts = record.get("starts") or 0
    for key in ("created_at", "started_at", "finished_at"):
        if record.get(key):
            note = f" (start {starts}: resumed)" if key == "started_at" and starts > 1 else ""
            lines.append(f"{key.removesuffix('_at') + ':':<10} {record[key]}{note}")
    lines.append(f"cost:      ${record.get('cost_usd') or 0:.6f}")
    ops = record.get("ops") or {}
    if ops:
        lines.append("ops:")
        lines += ["  " + row for row in _aligned([_op_row(name, op) for name, op in ops.items()])]
    by = record.get("cancelled_by")
    if isinstance(by, dict):
        lines.append(f"cancelled: by request {by.get('request_id')} at {by.get('at')}"
                     + (f": {by['reason']}" if by.get("reason") else ""))
    error = record.get("error")
    if isinstance(error, dict):
        lines.append(f"error:     {error.get('code') or error.get('type')}: "
                     f"{error.get('message')}")
    if record.get("final_output") is not None:
        lines += ["final output:", str(record["final_output"])]
    return "\n".join(lines)


def _op_row(name: str, op: Any) -> list[str]:
    if not isinstance(op, dict):  # a listing's entry: the status alone
        return [name, str(op)]
    where = (f"{op['model']} (tier {op.get('tier')})" if op.get("model") else
             f"tier {op['tier']}" if op.get("tier") is not None else "")
    notes = []
    if op.get("cache") not in (None, "MISS"):
        notes.append(f"cache {op['cache']}")
    if (op.get("attempts") or 0) > 1:
        notes.append(f"{op['attempts']} attempts")
    if op.get("reason"):
        notes.append(str(op["reason"]).replace("_", " "))
    if op.get("error"):
        notes.append(preview(str(op["error"]), 120))
    return [name, str(op.get("status")), where,
            f"${op['cost_usd']:.6f}" if "cost_usd" in op else "",
            f"{op['ms']:.0f} ms" if "ms" in op else "", "; ".join(notes)]


def runs_table(runs: list[Mapping[str, Any]]) -> str:
    """Runs as ``workflow runs`` prints them: one line each, under a header.

    >>> print(runs_table([{"run_id": "run_1", "status": "failed", "workflow": None,
    ...                    "ops": {"a": "succeeded", "b": "failed"}, "cost_usd": 0.0012,
    ...                    "created_at": "2026-12-04T15:00:00Z"}]))
    RUN    STATUS  WORKFLOW  OPS DONE  COST       CREATED
    run_1  failed  -         1/2       $0.001200  2026-12-04T15:00:00Z
    """
    rows = [["RUN", "STATUS", "WORKFLOW", "OPS DONE", "COST", "CREATED"]]
    for run in runs:
        ops = run.get("ops") or {}
        done = sum(1 for status in ops.values() if status == "succeeded")
        rows.append([str(run.get("run_id")), str(run.get("status")),
                     str(run.get("workflow") or "-"), f"{done}/{len(ops)}",
                     f"${run.get('cost_usd') or 0:.6f}", str(run.get("created_at") or "-")])
    return "\n".join(_aligned(rows))


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows if i < len(row))
              for i in range(max(len(row) for row in rows))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)
                      ).rstrip() for row in rows]
