"""What ``GET /metrics`` and the access log cost: per request, and per scrape.

Usage: .venv/bin/python bench/metrics_cost.py [--requests 200000] [--rounds 5] [--redis]

1. The request path. Everything a chat request does for observability, on the real objects
   of a running gateway: the :class:`Exchange` made when the request comes in, ``Observer.chat``
   (the in-flight gauge) and ``Observer.parsed`` (the tracing check), the status noted as it
   leaves, ``Observer.finish`` (its labels, one counter increment, two histogram observations,
   the gauge back down), timed per request over ``--requests`` requests, in alternating rounds
   against the same loop doing nothing (the "without" figure). Measured twice: with the access
   line off (metrics alone, what ``/metrics`` costs a request) and on, written by a real
   ``logging`` handler to ``/dev/null`` (text format).
2. A scrape: ``Gateway.metrics_snapshot`` and ``render_metrics`` over totals the size of a
   busy router (every label combination of 8 models x 2 protocols x 2 cache outcomes x 6
   statuses, 8 backends x 4 outcomes, 20 workflows x 3 statuses), and with ``--redis`` the
   same through a ``redis-server`` started here (the ``SUM`` script over 4 processes' hashes).
3. Tracing while off (no ``OTEL_*`` set): the check an upstream call makes.

Prints Markdown.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import redis_server

from api.http.access import Exchange, Observer, access_log
from api.http.metrics import render_metrics
from engine.core import Redactor
from engine.core.config import parse_config
from engine.messages import ChatRequest, Message, TextPart, Usage
from engine.runtime import Gateway, Served, open_gateway
from engine.runtime.models import Models
from engine.runtime.tracing import inject_trace

MODELS = [f"model-{i}" for i in range(8)]


def make_config(folder: Path, redis_url: str | None) -> object:
    state: dict[str, object] = {"path": str(folder / "state.db")}
    if redis_url is not None:
        state["redis_url"] = redis_url
    return parse_config(yaml.safe_dump({
        "models": [{"name": name, "provider": "openai", "model": name, "tier": 1 + i % 2,
                    "base_url": "http://127.0.0.1:9/v1", "api_key": "k",
                    "cost_per_1k_in": 0.001, "cost_per_1k_out": 0.002}
                   for i, name in enumerate(MODELS)],
        "cache": {"enabled": False},
        "learned": {"model": None, "feedback_db": str(folder / "feedback.db")},
        "state": state,
    }), environ={})


def request_path(gateway: Gateway, observer: Observer, n: int) -> float:
    """Seconds per request for the observability hooks of ``n`` chat requests."""
    ask = ChatRequest(messages=(Message("user", (TextPart("hello"),)),), model="auto")
    served = Served(model=MODELS[0], tier=1, score=12, router="heuristic")
    usage = Usage(input_tokens=10, output_tokens=20)
    start = time.perf_counter()
    for _ in range(n):
        exchange = Exchange()
        observer.chat(exchange, gateway, protocol="openai")
        observer.parsed(exchange, request=ask, key=None, headers={})
        exchange.served, exchange.usage, exchange.cost_usd = served, usage, 0.0001
        exchange.status = 200
        exchange.mark_first_byte()
        observer.finish(exchange, gateway, method="POST", path="/v1/chat/completions",
                        request_id="0123456789abcdef01234567")
    return (time.perf_counter() - start) / n


def tracing_off(n: int) -> float:
    """Seconds per request for what tracing costs while off: the server span's check (made
    inside ``Observer.chat``, so already in ``request_path``) and the upstream call's."""
    headers = {"content-type": "application/json"}
    start = time.perf_counter()
    for _ in range(n):
        inject_trace(headers)
    return (time.perf_counter() - start) / n


def empty_loop(n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        pass
    return (time.perf_counter() - start) / n


def fill(gateway: Gateway) -> None:
    """Totals with the label combinations of a busy router."""
    stats = gateway.stats
    for model in MODELS:
        for protocol in ("openai", "anthropic"):
            for cache in ("hit", "miss"):
                for status in ("200", "400", "429", "502", "503", "504"):
                    stats.record_exchange((protocol, model, "1", cache, status),
                                          seconds=0.2, first_byte_seconds=0.1)
        stats.spent_by_model[model] = 1.0
    for backend in gateway.pool.backends.values():
        backend.outcomes.update(ok=100, server_error=3, timeout=2, rate_limited=1)
    for i in range(20):
        for status in ("succeeded", "failed", "cancelled"):
            stats.record_run(f"workflow-{i}", status)


async def scrape_cost(gateway: Gateway, n: int) -> tuple[float, int]:
    size = 0
    start = time.perf_counter()
    for _ in range(n):
        size = len(render_metrics(await gateway.metrics_snapshot()))
    return (time.perf_counter() - start) / n, size


def p50(xs: list[float]) -> float:
    return statistics.median(xs)


async def measure(args: argparse.Namespace, redis_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = make_config(Path(tmp), redis_url)
        async with open_gateway(config, models=Models()) as gateway:  # type: ignore[arg-type]
            redactor = Redactor.for_config(config)  # type: ignore[arg-type]
            if redis_url is None:
                rows = []
                for access in (False, True):
                    settings: Any = config
                    server = settings.server.model_copy(update={"access_log": access})
                    quiet = settings.model_copy(update={"server": server})
                    observer = Observer(quiet, redactor)
                    hooks, bare = [], []
                    for _ in range(args.rounds):
                        hooks.append(request_path(gateway, observer, args.requests))
                        bare.append(empty_loop(args.requests))
                    rows.append((access, p50(hooks), min(hooks), max(hooks), p50(bare)))
                print("| per chat request | p50 of rounds | best | worst | empty loop |")
                print("|---|---:|---:|---:|---:|")
                for access, mid, best, worst, bare in rows:
                    what = "metrics + access line (text, to /dev/null)" if access else \
                        "metrics alone (access line off)"
                    print(f"| {what} | {mid * 1e6:.2f} µs | {best * 1e6:.2f} µs | "
                          f"{worst * 1e6:.2f} µs | {bare * 1e6:.3f} µs |")
                off = p50([tracing_off(args.requests) for _ in range(args.rounds)])
                print(f"| traceparent check per upstream call, tracing off | {off * 1e6:.2f} µs "
                      "| | | |")
                print()
            gateway.stats.requests.clear()
            fill(gateway)
            if redis_url is not None:
                # Three other processes' worth of totals, as written by SharedTotals.
                from engine.runtime.shared_totals import PROC_PREFIX, PROCS, flatten
                flat = flatten(gateway.stats, gateway.pool)
                for other in ("p1", "p2", "p3"):
                    pairs = [x for k, v in flat.items() for x in (k, repr(v))]
                    await gateway.shared.redis.pipeline([  # type: ignore[union-attr]
                        ["HSET", PROC_PREFIX + other, *pairs], ["SADD", PROCS, other]])
            times, size = [], 0
            for _ in range(args.rounds):
                t, size = await scrape_cost(gateway, 200)
                times.append(t)
            lines = sum(1 for _ in render_metrics(await gateway.metrics_snapshot()).splitlines())
            where = "4 processes through Redis" if redis_url else "one process"
            print(f"| scrape, {where} | {p50(times) * 1e3:.2f} ms p50 of rounds "
                  f"({min(times) * 1e3:.2f}-{max(times) * 1e3:.2f}) | {lines} lines, "
                  f"{size / 1024:.1f} KiB |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis", action="store_true")
    args = parser.parse_args()
    handler = logging.FileHandler("/dev/null")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False
    trio.run(measure, args, None)
    if args.redis:
        with redis_server() as url:
            trio.run(measure, args, url)


if __name__ == "__main__":
    main()
