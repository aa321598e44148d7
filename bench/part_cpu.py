"""The router's server with each part of a routed request timed in this thread's CPU time: where
a request's CPU goes in the server as it runs, not in a hot loop (``bench/hot_parts.py``), whose
figures are two to five times lower for the same calls (the server's other work runs through the
CPU's caches and branch predictors between two calls of a part).

    python bench/part_cpu.py --config X --addr Y     # as ``llm-router``, timed

The parts are ``bench/miss_instructions.py``'s :data:`PARTS` (its synchronous ones: a
coroutine's time is not its own), each wrapped where it is defined and where it was imported.
``SIGUSR1`` writes what the parts took since the last signal to ``PART_CPU_OUT`` (JSON: per part,
calls and CPU nanoseconds) and starts counting again: ``bench/routed_path.sh`` with ``PARTS=1``
sends one after its warm-up and one after its measured run.

A part's time is inclusive of the parts inside it. Each wrapped call adds two reads of the
thread's CPU clock (``clock_gettime``, a system call: 2-3 µs here), which the enclosing parts
and the request's total include (a routed miss makes about 30 wrapped calls).
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from miss_instructions import PARTS, import_server, serve, wrap_parts

#: part -> [calls, CPU nanoseconds]
_spent: dict[str, list[int]] = {}


def _timed(part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    clock = time.thread_time_ns
    tally = _spent.setdefault(part, [0, 0])

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            tally[0] += 1
            tally[1] += clock() - start

    return wrapper


def install() -> None:
    """Wraps every synchronous function of :data:`PARTS` where it is defined and where it was
    imported (a coroutine's time is not its own)."""
    wrap_parts(PARTS, lambda part, function: None if inspect.iscoroutinefunction(function)
               else _timed(part, function))


def _dump(*_: object) -> None:
    out = {part: {"calls": calls, "cpu_ns": ns} for part, (calls, ns) in _spent.items()}
    Path(os.environ.get("PART_CPU_OUT", "part_cpu.json")).write_text(json.dumps(out))
    for tally in _spent.values():
        tally[:] = [0, 0]


def main() -> None:
    import_server()
    install()
    signal.signal(signal.SIGUSR1, _dump)
    serve()


if __name__ == "__main__":
    main()
