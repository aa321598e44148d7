"""For ``bench/llm-router-totals`` (on ``PYTHONPATH`` when ``LLMR_TOTALS_GAP`` is set, so
that ``--workers`` workers get it too): the shortest time between two shared-totals writes
of this process, ``engine.runtime.shared_totals.MIN_GAP_SEC``, set to ``LLMR_TOTALS_GAP``
seconds. A benchmark's patch, for comparing with the gap before the write-on-count (0.25 s);
the shipped constant is not changed."""

import os

if os.environ.get("LLMR_TOTALS_GAP"):
    import engine.runtime.shared_totals as _totals

    _totals.MIN_GAP_SEC = float(os.environ["LLMR_TOTALS_GAP"])
