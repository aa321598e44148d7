"""How often online learning's floors open on comparisons that carry no information, when
they are judged again after every comparison (as the router does). Two cases, 50 seeds each,
for several values of ``engine.core.routing.floor.SURE``:

* **honest null**: fixed scores (two kinds of request, the learned order the reverse of the
  shipped one), targets drawn at random: :func:`~engine.core.routing.floor.lead` judged
  after each of 300 comparisons. Only the statistic's own variance and the repeated looks
  can open it.
* **learning from noise**: the same two kinds fed to ``online.learn`` as comparison reports
  whose two grades are coin flips (a judge that is always guessing); the correction, the mix
  and the per-region levels learn from them and their floors are judged as the product
  judges them, on the scores each had before learning from a report.

    .venv/bin/python bench/floor_null.py

Deterministic (numpy seeds 0-49); a few seconds per setting.
"""

from __future__ import annotations

import numpy as np

from engine.core.routing import floor
from engine.core.routing.learned import DENSE_NAMES
from engine.core.routing.online import OnlineSettings, OnlineState, learn

N = 300
SEEDS = range(50)
DIM = 8
KINDS = (np.eye(DIM)[0], np.eye(DIM)[1])
BELIEF = (-6.0, 2.0)  # the shipped log-odds of the two kinds


def honest(seed: int) -> bool:
    rng = np.random.default_rng(seed)
    kind = np.arange(N) % 2
    before = np.where(kind == 1, BELIEF[1], BELIEF[0])
    after = np.where(kind == 1, BELIEF[0], BELIEF[1]) + 0.01 * rng.standard_normal(N)
    targets = (1 + rng.integers(2, size=N) - rng.integers(2, size=N)) / 2.0
    weights = np.ones(N)
    for m in range(floor.MIN_JUDGED, N + 1):
        ahead, error = floor.lead(before[:m], after[:m], targets[:m], weights[:m])
        if ahead - floor.SURE * error > 0:
            return True
    return False


def learned(seed: int) -> tuple[float, float, float]:
    """The most each floor (correction, mix, regions) opened over the run."""
    rng = np.random.default_rng(seed)
    settings = OnlineSettings()
    state = OnlineState.fresh("m", 1 + len(DENSE_NAMES) + DIM)
    most = [0.0, 0.0, 0.0]
    for i in range(N):
        vector, z = KINDS[i % 2], BELIEF[i % 2]
        inputs = np.concatenate([[0.5 * z], np.zeros(len(DENSE_NAMES)), vector])
        state, _ = learn(state, z, inputs, tier=1, quality=float(rng.integers(2)),
                         other=float(rng.integers(2)), reporter=None, settings=settings)
        gates = (state.gate, state.mix_gate,
                 0.0 if state.regions is None else state.regions.gate)
        most = [max(a, b) for a, b in zip(most, gates, strict=True)]
    return most[0], most[1], most[2]


def main() -> None:
    print("| SURE | honest null: runs that ever opened | learning from noise: runs where a "
          "floor ever opened | of which correction / mix / regions |")
    print("|---:|---:|---:|---|")
    for sure in (2.0, 3.0, 4.0):
        floor.SURE = sure
        opened = sum(honest(seed) for seed in SEEDS)
        runs = [learned(seed) for seed in SEEDS]
        parts = [sum(run[k] > 0 for run in runs) for k in range(3)]
        print(f"| {sure:g} | {opened} of {len(SEEDS)} | "
              f"{sum(any(g > 0 for g in run) for run in runs)} of {len(SEEDS)} | "
              f"{parts[0]} / {parts[1]} / {parts[2]} |", flush=True)


if __name__ == "__main__":
    main()
