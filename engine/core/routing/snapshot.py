"""The online state's snapshot: what scores comparisons for the floors. Sans-IO, numpy only.

Every :data:`~engine.core.routing.floor.BLOCK` comparisons the online state
(:mod:`engine.core.routing.online`) keeps a snapshot of itself, and until the next one the
floors score each comparison with it (:mod:`engine.core.routing.floor`, "One state per
pair"). Scoring reads the correction (its weights, and its floor's opening, ``gate``), the
fitted mix and its opening (``mix``, ``mix_gate``) and the regions' leaders and sums; nothing
else. So that is all a snapshot keeps and saves: not the AdaGrad sums, the losses, the
counters, or the mix's window of comparisons (the mix's fit itself is a handful of numbers),
and the regions' leaders are saved as their count of the live state's, which only ever grow.
The state is saved with every feedback report (to Redis, when shared); after 300
comparisons of a replay its snapshot took 3.6 KB of the saved 66 KB, where a whole state
took 31 KB of 93 KB (BENCHMARKS.md, "Comparisons graded by a judge, and a stricter floor").
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .mix import Mix
from .regions import Regions

__all__ = ["Snapshot"]


@dataclass(frozen=True, slots=True, eq=False)
class Snapshot:
    """What scores the floors' comparisons until the next snapshot: the correction's
    ``weights`` (one per input and a bias last) and how much of it applied (``gate``), the
    fitted ``mix`` and how much of it applied (``mix_gate``), and the ``regions``' leaders and
    sums (:meth:`Regions.scoring <engine.core.routing.regions.Regions.scoring>`), as they
    stood when it was taken."""

    weights: np.ndarray
    gate: float = 0.0
    mix: Mix | None = None
    mix_gate: float = 0.0
    regions: Regions | None = None

    def to_dict(self, leaders: np.ndarray | None = None) -> dict[str, Any]:
        """JSON-ready; ``leaders``: the live state's regions' leaders, saved beside it (the
        snapshot's are saved as their count when they are the first rows of those)."""
        data = np.ascontiguousarray(self.weights, "<f8").tobytes()
        return {
            "weights": base64.b64encode(data).decode("ascii"),
            "gate": self.gate, "mix_gate": self.mix_gate,
            **({"mix": self.mix.to_dict()} if self.mix is not None else {}),
            **({"regions": self.regions.scoring_dict(leaders)}
               if self.regions is not None else {}),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], leaders: np.ndarray | None = None) -> Snapshot:
        """:meth:`to_dict` read back, with the same live ``leaders``.

        Raises: ValueError (or KeyError, TypeError) on a damaged snapshot."""
        weights = np.frombuffer(base64.b64decode(raw["weights"]), "<f8").astype(np.float64)
        gate, mix_gate = float(raw["gate"]), float(raw["mix_gate"])
        if not (0.0 <= gate <= 1.0 and 0.0 <= mix_gate <= 1.0):
            raise ValueError("damaged online state: frozen")
        return cls(weights, gate, Mix.from_dict(raw["mix"]) if "mix" in raw else None,
                   mix_gate,
                   Regions.scoring_from_dict(raw["regions"], leaders)
                   if "regions" in raw else None)
