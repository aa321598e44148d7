"""Support for tests that load the router: where the CPU went, on the event loop's thread or
in worker threads (a request doing heavy work on the loop stalls every other one).

The router runs in the test's own trio loop (``router_harness``), so a test's task runs on the
loop's thread and ``time.thread_time()`` there counts everything the loop did meanwhile: the
router's, the fake upstream's and the test client's steps. CPU time, not wall time: a loaded
machine gives every thread a smaller share of the CPU but leaves unchanged how much CPU the
work takes, so the split is the same on a busy CI machine as on an idle one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["CpuSplit", "cpu_split"]


@dataclass
class CpuSplit:
    """CPU seconds spent while a block ran: by the event loop's thread, and by the whole
    process (the loop and every worker thread)."""

    loop: float = 0.0
    process: float = 0.0


@contextmanager
def cpu_split() -> Iterator[CpuSplit]:
    """Measure the block's :class:`CpuSplit`. Enter it in a test's task (on the loop's thread);
    the numbers are set when the block ends."""
    split = CpuSplit()
    loop, process = time.thread_time(), time.process_time()
    try:
        yield split
    finally:
        split.loop = time.thread_time() - loop
        split.process = time.process_time() - process
