"""``GET /metrics``: the router's counters in the Prometheus text format.

Nothing is counted here. The gateway already keeps every total as plain numbers
(``engine.core.Stats``, the backend pool), shared across processes through Redis when
``state.redis_url`` is set; a scrape asks it for one flat snapshot
(:meth:`Gateway.metrics_snapshot`) and a collector renders that with ``prometheus_client``.
The request path pays one counter increment and two histogram observations, and with
``--workers`` or Redis any process's ``/metrics`` shows the sum of all of them.

Label values are bounded: configured model and backend names, tiers, HTTP statuses, error
codes, named workflows (a submitted one counts as ``submitted``); never a request id, a key
or a prompt. docs/observability.md lists every metric.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from engine.core import LATENCY_BUCKETS
from engine.runtime import MetricsSnapshot

__all__ = ["CONTENT_TYPE", "render_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_SEP = "\t"  # between the labels of one flattened name (engine.runtime.shared_totals)
_HEALTH = {"healthy": 1.0, "degraded": 0.5, "down": 0.0}


def render_metrics(snapshot: MetricsSnapshot) -> bytes:
    """The Prometheus text exposition of ``snapshot``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snapshot))
    return generate_latest(registry)


class _Collector:
    def __init__(self, snapshot: MetricsSnapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        totals = self.snapshot.totals
        yield from _labelled(totals)
        for name, key, doc in (
            ("llm_router_request_duration_seconds", "duration",
             "HTTP chat requests' duration, to the last byte of the answer."),
            ("llm_router_time_to_first_byte_seconds", "ttfb",
             "HTTP chat requests' time to the first byte of the answer."),
        ):
            yield _histogram(name, doc, totals, key)
        for name, key, doc in (
            ("llm_router_cache_hits", "cache:hits", "Requests answered from the cache."),
            ("llm_router_cache_misses", "cache:misses", "Cache lookups that found nothing."),
            ("llm_router_dedup_joined", "dedup:joined",
             "Requests that joined an identical request in flight."),
            ("llm_router_failovers", "failovers",
             "Upstream attempts that failed and were retried on another backend."),
        ):
            yield _counter(name, doc, [([], totals.get(key, 0.0))])
        yield _counter("llm_router_tokens", "Tokens billed upstream, by direction.",
                       [(["input"], totals.get("tokens:input", 0.0)),
                        (["output"], totals.get("tokens:output", 0.0))], ["direction"])
        yield from _per_key(totals)
        if "compare_spent_usd" in totals:
            yield _counter("llm_router_comparison_spend_usd",
                           "USD the router's own comparisons spent (both calls; also in "
                           "llm_router_spend_usd_total under their models).",
                           [([], totals["compare_spent_usd"])])
        status = GaugeMetricFamily("llm_router_backend_status",
                                   "Backend health: 1 healthy, 0.5 degraded, 0 down.",
                                   labels=["backend"])
        for backend, health in sorted(self.snapshot.backends.items()):
            status.add_metric([backend], _HEALTH.get(health, 0.0))
        yield status
        for name, key, doc in (
            ("llm_router_in_flight_requests", "gauge:in_flight",
             "HTTP chat requests being answered now."),
            ("llm_router_workflow_runs_queued", "gauge:runs_queued",
             "Workflow runs waiting for a slot (workflows.max_concurrent_runs)."),
            ("llm_router_workflow_runs_running", "gauge:runs_running",
             "Workflow runs executing now."),
            ("llm_router_comparisons_running", "gauge:compare_running",
             "Comparisons the router makes itself under way now (learned.compare)."),
        ):
            if key in totals or key != "gauge:compare_running":
                yield GaugeMetricFamily(name, doc, value=totals.get(key, 0.0))
        yield GaugeMetricFamily(
            "llm_router_metrics_shared",
            "1: these figures are every router process's (through Redis); 0: this "
            "process's alone.", value=1.0 if self.snapshot.scope == "shared" else 0.0)
        if self.snapshot.redis_up is not None:
            yield GaugeMetricFamily("llm_router_redis_up",
                                    "Whether this process reaches Redis (state.redis_url).",
                                    value=1.0 if self.snapshot.redis_up else 0.0)


# Counters whose labels are a flattened name's tail: (prefix, metric, labels, doc).
_LABELLED = (
    ("req:", "llm_router_requests", ["protocol", "model", "tier", "cache", "status"],
     "HTTP chat requests, answered or refused."),
    ("attempt:", "llm_router_upstream_attempts", ["backend", "outcome"],
     "Upstream calls, by backend and outcome (ok, or the failure)."),
    ("spent:", "llm_router_spend", ["model"], "USD spent upstream, by model."),
    ("saved:", "llm_router_saved", ["source"],
     "USD saved against the reference model, by source (routing, cache, dedup)."),
    ("error:", "llm_router_errors", ["code"], "Failed requests and workflow ops, by code."),
    ("run:", "llm_router_workflow_runs", ["workflow", "status"],
     "Workflow runs that ended, by workflow and status."),
    ("compare:", "llm_router_comparisons", ["outcome"],
     "Routed answers sampled for a comparison the router makes itself (learned.compare), "
     "by outcome."),
)


def _labelled(totals: dict[str, float]) -> Iterator[Metric]:
    samples: dict[str, list[tuple[list[str], float]]] = {p: [] for p, *_ in _LABELLED}
    for key, value in totals.items():
        prefix, _, rest = key.partition(":")
        bucket = samples.get(prefix + ":")
        if bucket is not None:
            bucket.append((rest.split(_SEP), value))
    for prefix, name, labels, doc in _LABELLED:
        rows = [(values, v) for values, v in sorted(samples[prefix]) if len(values) == len(labels)]
        yield _counter(name + ("_usd" if prefix in ("spent:", "saved:") else ""), doc, rows,
                       labels)


# Client keys' usage (``key:<id>:<part>``): one series per key the admin API issued, so the
# label stays as bounded as the key list; never the key itself.
_PER_KEY = (
    ("requests", "llm_router_key_requests", "Requests made with each client key."),
    ("spent_usd", "llm_router_key_spend_usd", "USD spent upstream by each client key."),
    ("tokens", "llm_router_key_tokens", "Tokens billed upstream for each client key."),
)


def _per_key(totals: dict[str, float]) -> Iterator[Metric]:
    rows: dict[str, list[tuple[list[str], float]]] = {part: [] for part, *_ in _PER_KEY}
    for name, value in totals.items():
        if name.startswith("key:"):
            key_id, _, part = name[4:].rpartition(":")
            if part in rows:
                rows[part].append(([key_id], value))
    for part, metric, doc in _PER_KEY:
        yield _counter(metric, doc, sorted(rows[part]), ["key_id"])


def _counter(name: str, doc: str, rows: list[tuple[list[str], float]],
             labels: list[str] | None = None) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels or [])
    for values, value in rows:
        family.add_metric(values, value)
    return family


def _histogram(name: str, doc: str, totals: dict[str, float], key: str) -> Any:
    running = 0.0
    buckets = []
    for i, bound in enumerate((*LATENCY_BUCKETS, float("inf"))):
        running += totals.get(f"hist:{key}:{i}", 0.0)
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
    return HistogramMetricFamily(name, doc, buckets=buckets,
                                 sum_value=totals.get(f"hist:{key}:sum", 0.0))
