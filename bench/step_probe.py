"""Run ``llm-router`` with every trio task step timed (a debugging probe, not the product).

    python bench/step_probe.py OUT.json [--over MS] [--early SECONDS] -- --config router.yaml \
        --addr 127.0.0.1:4192

A trio instrument times each task step (``before_task_step`` to ``after_task_step``: wall
time, the thread's CPU time, and its page faults and context switches from
``getrusage(RUSAGE_THREAD)``: an involuntary switch is preemption, so a step whose wall time
is far above its CPU time with one was waiting for the core, not working). A step over
``--over`` milliseconds (6 unless set; every step over 0.3 ms in the first ``--early``
seconds) is recorded with when it ran (seconds since ``trio.run`` began, and the monotonic
clock, which ``perf record -k CLOCK_MONOTONIC`` shares), its task, where the task resumed and
where it yielded (its coroutine stacks). A watchdog thread samples the event loop thread's
Python stack every half millisecond while a step has lasted over 0.5 ms
(``STEP_PROBE_SAMPLES=0`` turns it off: it shares the router's core, so it adds switches;
it needs the GIL, so C code that holds it shows as one sample when it lets go). Also
recorded: upstream connections opened (``PooledTransport._connect``, start and duration),
jobs handed to trio's worker threads (and whether a new thread had to start), and modules
first imported while serving. Everything is written to OUT.json when the router exits.
"""

from __future__ import annotations

import collections
import json
import os
import resource
import sys
import threading
import time
from types import FrameType
from typing import Any

import trio

_steps: list[dict[str, Any]] = []
_connects: list[dict[str, Any]] = []
_imports: list[dict[str, Any]] = []
_threads: list[dict[str, Any]] = []
_state: dict[str, Any] = {"t0": time.perf_counter(), "over": 0.006, "early": 0.0,
                          "step": None}


def _coro_stack(task: trio.lowlevel.Task) -> list[str]:
    out = []
    for frame, lineno in task.iter_await_frames():
        out.append(f"{frame.f_code.co_filename.split('site-packages/')[-1]}:{lineno} "
                   f"{frame.f_code.co_name}")
    return out[-14:]


def _frame_stack(frame: FrameType | None) -> str:
    parts = []
    while frame is not None:
        parts.append(f"{frame.f_code.co_filename.split('/')[-1]}:{frame.f_lineno}"
                     f":{frame.f_code.co_name}")
        frame = frame.f_back
    return " < ".join(parts[:12])


def _usage_delta(before: Any) -> dict[str, float]:
    """The thread's page faults and context switches during the step: an involuntary switch
    is preemption by another thread or process, a voluntary one a wait (the GIL, a lock,
    I/O), a major fault a read from disk."""
    after = resource.getrusage(resource.RUSAGE_THREAD)
    return {name: getattr(after, name) - getattr(before, name)
            for name in ("ru_minflt", "ru_majflt", "ru_nvcsw", "ru_nivcsw")}


class StepProbe(trio.abc.Instrument):
    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        _state["modules"] = len(sys.modules)
        _state["usage"] = resource.getrusage(resource.RUSAGE_THREAD)
        _state["step"] = (time.perf_counter(), time.thread_time(), task, _coro_stack(task), [])

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        step = _state["step"]
        _state["step"] = None
        if step is None:
            return
        began, cpu, _, start, samples = step
        now = time.perf_counter()
        if len(sys.modules) != _state["modules"]:
            known = _state.setdefault("known", set())
            new = sorted(set(sys.modules) - known)
            known.update(new)
            _imports.append({"at": began - _state["t0"], "ms": (now - began) * 1000,
                             "task": task.name, "modules": new,
                             "yielded_at": _coro_stack(task)[-6:]})
        early = began - _state["t0"] < _state["early"]
        if now - began > (0.0003 if early else _state["over"]):
            _steps.append({
                "at": began - _state["t0"], "clock": began, "ms": (now - began) * 1000,
                "cpu_ms": (time.thread_time() - cpu) * 1000, "task": task.name,
                "resumed_at": start, "yielded_at": _coro_stack(task),
                "samples": collections.Counter(samples).most_common(12),
                "usage": _usage_delta(_state["usage"]),
            })


def _watchdog(loop_thread: int) -> None:
    while True:
        time.sleep(0.0005)
        step = _state["step"]
        if step is not None and time.perf_counter() - step[0] > 0.0005:
            frame = sys._current_frames().get(loop_thread)
            step[4].append(_frame_stack(frame))


def _wrap_connect() -> None:
    from engine.runtime import transport

    original = transport.PooledTransport._connect

    async def _connect(self: Any, origin: Any, timeout: Any) -> Any:
        began = time.perf_counter()
        try:
            return await original(self, origin, timeout)
        finally:
            _connects.append({"at": began - _state["t0"], "origin": repr(origin),
                              "ms": (time.perf_counter() - began) * 1000})

    transport.PooledTransport._connect = _connect  # type: ignore[method-assign]

    from trio import _threads as trio_threads
    from trio._core import _thread_cache

    cache = _thread_cache.THREAD_CACHE
    start = trio_threads.start_thread_soon

    def start_thread_soon(*args: Any, **kwargs: Any) -> Any:
        new_thread = not cache._idle_workers
        began = time.perf_counter()
        try:
            return start(*args, **kwargs)
        finally:
            _threads.append({"at": began - _state["t0"], "new": new_thread,
                             "ms": (time.perf_counter() - began) * 1000,
                             "where": _coro_stack(trio.lowlevel.current_task())[-4:]})

    trio_threads.start_thread_soon = start_thread_soon  # type: ignore[assignment]


def main() -> int:
    out, rest = sys.argv[1], sys.argv[2:]
    if rest and rest[0] == "--over":
        _state["over"] = float(rest[1]) / 1000
        rest = rest[2:]
    if rest and rest[0] == "--early":
        _state["early"] = float(rest[1])
        rest = rest[2:]
    rest = [arg for arg in rest if arg != "--"]
    original_run = trio.run

    def run(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("instruments", []).append(StepProbe())
        _state["t0"] = time.perf_counter()
        _state["known"] = set(sys.modules)
        return original_run(*args, **kwargs)

    trio.run = run  # type: ignore[assignment]
    _wrap_connect()
    if os.environ.get("STEP_PROBE_SAMPLES", "1") == "1":
        threading.Thread(target=_watchdog, args=(threading.get_ident(),),
                         daemon=True).start()
    from api.cli.main import main as router_main

    try:
        return router_main(rest)
    finally:
        with open(out, "w") as f:
            json.dump({"steps": _steps, "connects": _connects, "threads": _threads,
                       "imports": _imports}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
