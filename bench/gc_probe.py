"""Run ``llm-router`` with every garbage collection timed (used by bench/gc_pauses.sh).

    python bench/gc_probe.py OUT.json -- --config router.yaml --addr 127.0.0.1:4192

A ``gc.callbacks`` hook times each collection (generation, wall and CPU duration, objects
collected and uncollectable; the CPU time is the figure a loaded machine does not inflate); the
list is written to OUT.json when the router exits (SIGTERM stops it gracefully). ``--saveall``
also keeps what the collector found (``gc.DEBUG_SAVEALL``) and writes the commonest types of it,
which is where reference cycles come from. ``--census`` records, before each full collection,
each generation's size and the largest containers in the oldest (what the collection is about to
walk). ``--threshold=A,B,C`` sets the collector's thresholds first (``gc.set_threshold``), to
compare settings.
"""

from __future__ import annotations

import collections
import gc
import json
import sys
import time
import traceback
from typing import Any

_started: dict[int, tuple[float, float]] = {}
_events: list[dict[str, Any]] = []
_census: list[dict[str, Any]] = []
_options = {"census": False}


def _take_census() -> None:
    """What a full collection is about to walk: each generation's size, and the largest
    containers among the oldest (a big dict or list costs a walk over every item)."""
    sizes = []
    types: collections.Counter[str] = collections.Counter()
    for obj in gc.get_objects(2):
        types[f"{type(obj).__module__}.{type(obj).__qualname__}"] += 1
        try:
            size = len(obj)
        except TypeError:
            continue
        sizes.append((size, f"{type(obj).__module__}.{type(obj).__qualname__}"))
    sizes.sort(reverse=True)
    _census.append({"at": time.monotonic(),
                    "tracked": [len(gc.get_objects(g)) for g in (0, 1, 2)],
                    "largest": sizes[:8], "types": types.most_common(30),
                    "stack": traceback.format_stack(limit=8)[:-2]})


def _timed(phase: str, info: dict[str, Any]) -> None:
    generation = info["generation"]
    if phase == "start":
        if generation == 2 and _options["census"] and gc.get_freeze_count() > 0:
            _take_census()
        _started[generation] = (time.perf_counter(), time.thread_time())
        return
    begun = _started.pop(generation, None)
    if begun is not None:
        _events.append({
            "at": time.monotonic(),
            "generation": generation,
            "ms": (time.perf_counter() - begun[0]) * 1000,
            "cpu_ms": (time.thread_time() - begun[1]) * 1000,
            "collected": info["collected"],
            "uncollectable": info["uncollectable"],
            # The server freezes start-up's heap once it listens: a collection before that
            # belongs to start-up (imports, loading models), not to serving.
            "serving": gc.get_freeze_count() > 0,
        })


def _garbage_types() -> list[tuple[str, int]]:
    counts = collections.Counter(
        f"{type(obj).__module__}.{type(obj).__qualname__}" for obj in gc.garbage
    )
    return counts.most_common(40)


def main() -> int:
    out, rest = sys.argv[1], sys.argv[2:]
    saveall = "--saveall" in rest
    _options["census"] = "--census" in rest
    rest = [arg for arg in rest if arg not in ("--saveall", "--census", "--")]
    for arg in [arg for arg in rest if arg.startswith("--threshold=")]:
        gc.set_threshold(*(int(n) for n in arg.split("=", 1)[1].split(",")))
        rest.remove(arg)
    if saveall:
        gc.set_debug(gc.DEBUG_SAVEALL)
    gc.callbacks.append(_timed)
    from api.cli.main import main as router_main

    try:
        return router_main(rest)
    finally:
        gc.callbacks.remove(_timed)
        report: dict[str, Any] = {
            "collections": _events,
            "freeze_count": gc.get_freeze_count(),
            "tracked": [len(gc.get_objects(generation)) for generation in (0, 1, 2)],
            "oldest_types": collections.Counter(
                f"{type(obj).__module__}.{type(obj).__qualname__}"
                for obj in gc.get_objects(2)
            ).most_common(25),
        }
        if _census:
            report["census"] = _census
        if saveall:
            report["garbage"] = len(gc.garbage)
            report["garbage_types"] = _garbage_types()
        with open(out, "w") as f:
            json.dump(report, f)


if __name__ == "__main__":
    sys.exit(main())
