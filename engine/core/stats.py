"""Cost accounting and request counters behind ``GET /stats``. Pure and synchronous.

Cost is the upstream's reported usage times the model's configured prices. *Saved* is the same
usage priced at the reference model (the most expensive model of the highest tier: what the
caller would have used without a router) minus what was spent (docs/api.md, ``GET /stats``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.messages import Usage

from .config import ModelConfig

__all__ = ["LATENCY_BUCKETS", "Histogram", "Stats", "cost_usd"]

#: Upper bounds (seconds) of the latency histograms' buckets: a cached answer in
#: milliseconds up to a long generation in minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0)


def cost_usd(model: ModelConfig, usage: Usage) -> float:
    """What ``usage`` costs on ``model``, in USD.

    Cached input tokens are priced like any input token: the config has one input price.
    """
    tokens_in = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
    return (
        tokens_in * model.cost_per_1k_in + usage.output_tokens * model.cost_per_1k_out
    ) / 1000.0


@dataclass(slots=True)
class Histogram:
    """Counts of observations per bucket (``counts[i]``: values at most ``bounds[i]``, and
    above the last bound in the last count) and their sum: what a Prometheus histogram shows,
    kept as plain numbers so processes can add theirs up.

    >>> h = Histogram()
    >>> h.observe(0.02); h.observe(0.02); h.observe(500.0)
    >>> h.counts[2], h.counts[-1], h.total
    (2, 1, 500.04)
    """

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value


#: One answered HTTP chat request's labels: protocol, model, tier, cache, status.
RequestLabels = tuple[str, str, str, str, str]


@dataclass(slots=True)
class Stats:
    reference: ModelConfig
    total_requests: int = 0
    spent_usd: float = 0.0
    saved_usd: float = 0.0
    by_model: Counter[str] = field(default_factory=Counter)
    by_tier: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    failovers: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    cache_saved_usd: float = 0.0
    dedup_joined: int = 0
    dedup_saved_usd: float = 0.0
    #: Per client key id: [requests, spent USD, tokens].
    by_key: dict[str, list[float]] = field(default_factory=dict)
    #: What ``GET /metrics`` adds: HTTP chat requests by their labels, their latencies,
    #: spend per model, savings per source (routing, cache, dedup), ended workflow runs per
    #: (workflow, status), and the chat requests being answered now.
    requests: Counter[RequestLabels] = field(default_factory=Counter)
    duration: Histogram = field(default_factory=Histogram)
    first_byte: Histogram = field(default_factory=Histogram)
    spent_by_model: dict[str, float] = field(default_factory=dict)
    saved_by_source: dict[str, float] = field(default_factory=dict)
    workflow_runs: Counter[tuple[str, str]] = field(default_factory=Counter)
    in_flight: int = 0
    #: The comparisons the router made itself (``learned.compare``), by outcome (``sampled``,
    #: ``reported``, ``failed``, ``unreadable``, ``skipped_busy``, ``skipped_budget``), and
    #: what their calls cost.
    comparisons: Counter[str] = field(default_factory=Counter)
    compare_spent_usd: float = 0.0
    #: Called after each count (``None``: nobody is told): how the totals shared with other
    #: processes learn that there is something new to write.
    on_count: Callable[[], None] | None = None

    def _counted(self) -> None:
        if self.on_count is not None:
            self.on_count()

    def record(self, model: ModelConfig, usage: Usage) -> tuple[float, float]:
        """Count one answered request; return its (cost, saving) in USD."""
        cost = cost_usd(model, usage)
        saved = cost_usd(self.reference, usage) - cost
        self.total_requests += 1
        self.spent_usd += cost
        self.saved_usd += saved
        self.by_model[model.name] += 1
        self.by_tier[model.tier] += 1
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.spent_by_model[model.name] = self.spent_by_model.get(model.name, 0.0) + cost
        self._saved("routing", saved)
        self._counted()
        return cost, saved

    def _saved(self, source: str, usd: float) -> None:
        self.saved_by_source[source] = self.saved_by_source.get(source, 0.0) + usd

    def record_cache_hit(self, cost_usd: float, *, reference_usd: float) -> None:
        """A request answered from the cache. It cost nothing, so against the reference model it
        saved the answer's whole reference price (``total_saved_usd``); the cache's own bucket
        holds what the cache saved over making the routed call again (the first call's cost)."""
        self.total_requests += 1
        self.cache_hits += 1
        self.cache_saved_usd += cost_usd
        self.saved_usd += reference_usd
        self._saved("cache", reference_usd)
        self._counted()

    def record_dedup(self, cost_usd: float, *, reference_usd: float) -> None:
        """A request that joined an identical one in flight; saved as for a cache hit."""
        self.total_requests += 1
        self.dedup_joined += 1
        self.dedup_saved_usd += cost_usd
        self.saved_usd += reference_usd
        self._saved("dedup", reference_usd)
        self._counted()

    def record_key(self, key_id: str, *, cost_usd: float, tokens: int) -> None:
        """One request (or workflow op) of a client key, with what it cost the key."""
        row = self.by_key.setdefault(key_id, [0, 0.0, 0])
        row[0] += 1
        row[1] += cost_usd
        row[2] += tokens
        self._counted()

    def record_exchange(self, labels: RequestLabels, *, seconds: float,
                        first_byte_seconds: float) -> None:
        """One HTTP chat request done (answered or refused), with its labels and latencies."""
        self.requests[labels] += 1
        self.duration.observe(seconds)
        self.first_byte.observe(first_byte_seconds)
        self._counted()

    def record_run(self, workflow: str, status: str) -> None:
        """A workflow run ended (``succeeded``, ``failed`` or ``cancelled``)."""
        self.workflow_runs[workflow, status] += 1
        self._counted()

    def record_comparison(self, outcome: str) -> None:
        """One of the router's own comparisons (``learned.compare``) came to ``outcome``."""
        self.comparisons[outcome] += 1
        self._counted()

    def record_error(self, code: str) -> None:
        self.total_requests += 1
        self.errors[code] += 1
        self._counted()

    def snapshot(self) -> dict[str, object]:
        """The documented ``/stats`` fields first, then extras."""
        return {
            "total_requests": self.total_requests,
            "total_saved_usd": round(self.saved_usd, 6),
            "total_spent_usd": round(self.spent_usd, 6),
            "by_model": dict(self.by_model),
            "by_tier": {str(t): n for t, n in sorted(self.by_tier.items())},
            "errors": dict(self.errors),
            "failovers": self.failovers,
            "tokens": {"input": self.input_tokens, "output": self.output_tokens},
            "cache": {
                "hits": self.cache_hits,
                "misses": self.cache_misses,
                "saved_usd": round(self.cache_saved_usd, 6),
            },
            "dedup": {"joined": self.dedup_joined, "saved_usd": round(self.dedup_saved_usd, 6)},
            "by_key": {key: {"requests": int(n), "spent_usd": round(spent, 6),
                             "tokens": int(tokens)}
                       for key, (n, spent, tokens) in sorted(self.by_key.items())},
        }
