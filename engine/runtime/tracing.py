"""OpenTelemetry traces (the optional extra ``llm-router[otel]``): the one seam to the
OpenTelemetry packages.

* A span per HTTP chat or workflow request (``api.http.access`` opens and ends it; a
  client's own ``traceparent`` makes it a child of the client's trace), a span per start of a
  workflow run (:func:`run_span`) and, under it, a span per workflow op; the chat and op
  spans carry the routing decision (``llm_router.*`` attributes).
* A run is parented explicitly, not by the task it happens to run in: it runs in the
  gateway's background nursery, outlives the request that submitted it and may be resumed
  by another process after a restart. The submitting request's span context is recorded
  with the run as a W3C ``traceparent`` (``RunSpec.traceparent``, in the run store), and
  every start of the run, the first and each resume, opens its run span as a *child* of it.
  A child rather than a new trace with a link: the run is the work the client asked for in
  that trace, and a trace backend finds every start of it, and every op and upstream call,
  by the client's trace id, where a link would leave the resumed part in a trace of its own
  that nobody searches for. A resumed run's span simply starts after its parent ended (as
  a message consumer's does); ``llm_router.run.start`` tells the starts apart.
* Every upstream call carries the W3C ``traceparent`` of the span it was made in, so a
  provider or a proxy that traces sees the router's span as its parent. Flights inherit the
  request's context (trio copies a task's context into the tasks it starts).
* Exporting is set up the standard way, from ``OTEL_*`` environment variables
  (:func:`configure_tracing`, once per process at start-up): nothing is traced unless
  ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``) or ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set; ``OTEL_SERVICE_NAME`` defaults to
  ``llm-router``, and ``OTEL_TRACES_SAMPLER``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_BSP_*``
  and the OTLP exporter's own variables are read by the SDK itself.

Without the packages, or with nothing configured, every function here is a no-op costing an
attribute test. OpenTelemetry keeps its tracer provider as a process-wide global by design
(instrumented libraries find it there, and it can be set once); this module mirrors it in
``_installed`` because asking OpenTelemetry for it costs microseconds a call (it reads the
environment each time while none is set).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

__all__ = ["RequestSpan", "configure_tracing", "end_run_span", "inject_trace",
           "install_provider", "op_span", "request_span", "run_span", "served_attributes",
           "tracing_enabled"]

log = logging.getLogger("llm_router")

try:
    from opentelemetry import propagate, trace
except ImportError:  # the [otel] extra is not installed
    trace = None  # type: ignore[assignment]

_NAME = "llm_router"
_ENABLED = "llm_router_tracing"  # an attribute set on the provider this module installed


class _Installed:
    provider: Any = None


_installed = _Installed()


def configure_tracing(environ: Mapping[str, str] = os.environ) -> bool:
    """Install an SDK tracer provider exporting as the ``OTEL_*`` variables say; whether
    traces are now recorded. Logs why not when they are asked for and cannot be."""
    exporter_names = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = (environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    if exporter_names in ("", "none") and not (endpoint and exporter_names != "none"):
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        log.warning("OTEL_* tracing is configured but the OpenTelemetry SDK is not installed "
                    "(pip install 'llm-router[otel]'); not tracing")
        return False
    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME",
                                                            "llm-router")})
    provider = TracerProvider(resource=resource)
    for name in (exporter_names or "otlp").split(","):
        name = name.strip()
        if name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif name == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
            except ImportError:
                log.warning("OTEL_TRACES_EXPORTER=otlp needs opentelemetry-exporter-otlp-"
                            "proto-http (pip install 'llm-router[otel]'); not exporting")
                continue
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif name != "none":
            log.warning("OTEL_TRACES_EXPORTER=%s is not one this router knows (otlp, "
                        "console, none); ignored", name)
    install_provider(provider)
    return True


def install_provider(provider: Any) -> None:
    """Make ``provider`` (an SDK ``TracerProvider``) the one spans go to (tests hand theirs
    an in-memory exporter)."""
    assert trace is not None
    setattr(provider, _ENABLED, True)
    trace.set_tracer_provider(provider)
    _installed.provider = provider


def tracing_enabled() -> bool:
    provider = _installed.provider
    return provider is not None and getattr(provider, _ENABLED, False)


class RequestSpan:
    """A request's span: current where :meth:`current` says (the gateway's work, and the
    tasks it starts, are its children), ended by :meth:`end` (a stream's body outlives its
    handler)."""

    __slots__ = ("span",)

    def __init__(self, span: Any) -> None:
        self.span = span

    @contextmanager
    def current(self) -> Iterator[None]:
        with trace.use_span(self.span, end_on_exit=False, record_exception=False,
                            set_status_on_exception=False):
            yield

    def traceparent(self) -> str | None:
        """This span's context as a W3C ``traceparent`` (what a run records, to be parented
        by it in whichever process runs it; its sampled flag travels with it)."""
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(self.span))
        return carrier.get("traceparent")

    def end(self, attributes: Mapping[str, Any], *, error: str | None = None) -> None:
        self.span.set_attributes({k: v for k, v in attributes.items() if v is not None})
        if error is not None:
            self.span.set_status(trace.Status(trace.StatusCode.ERROR, error))
        self.span.end()


def request_span(name: str, headers: Any) -> RequestSpan | None:
    """Open a server span for an HTTP request (a child of the client's ``traceparent`` if it
    sent one; ``headers``: the request's, anything with ``items()``); None when not tracing."""
    if not tracing_enabled():
        return None
    parent = propagate.extract({k.lower(): v for k, v in headers.items()})
    return RequestSpan(trace.get_tracer(_NAME).start_span(name, context=parent,
                                                          kind=trace.SpanKind.SERVER))


@contextmanager
def run_span(name: str, attributes: Mapping[str, Any], *,
             traceparent: str | None) -> Iterator[Any]:
    """A span around one start of a workflow run, current inside (its ops' spans are its
    children), a child of ``traceparent`` (the submitting request's, kept with the run; a
    new trace without one); None inside when not tracing. Set its outcome on what this
    yields. A cancellation (a shutdown leaving the run to resume) is not an error here."""
    if not tracing_enabled():
        yield None
        return
    parent = propagate.extract({"traceparent": traceparent} if traceparent else {})
    with trace.get_tracer(_NAME).start_as_current_span(
            name, context=parent, kind=trace.SpanKind.INTERNAL,
            attributes={k: v for k, v in attributes.items() if v is not None},
            record_exception=False, set_status_on_exception=False) as span:
        yield span


def end_run_span(span: Any, *, status: str, cost_usd: float, error: str | None) -> None:
    """Set a run span's outcome: the run's status as this start left it (``running`` or
    ``queued``: the process stopped, and a later start resumes it), its cost so far, and an
    error status if it failed."""
    span.set_attributes({"llm_router.run.status": status,
                         "llm_router.cost_usd": round(cost_usd, 8)})
    if status == "failed":
        span.set_status(trace.Status(trace.StatusCode.ERROR, error or "the run failed"))


@contextmanager
def op_span(name: str, attributes: Mapping[str, Any]) -> Iterator[Any]:
    """A span around one workflow op (None inside when not tracing); set its outcome's
    attributes on what this yields."""
    if not tracing_enabled():
        yield None
        return
    with trace.get_tracer(_NAME).start_as_current_span(
            name, kind=trace.SpanKind.INTERNAL,
            attributes={k: v for k, v in attributes.items() if v is not None}) as span:
        yield span


def served_attributes(served: Any, attempts: int | None = None) -> dict[str, Any]:
    """A span's attributes for the routing decision of a ``Served`` (None values left out)."""
    attributes = {
        "llm_router.model": served.model, "llm_router.tier": served.tier,
        "llm_router.router": served.router, "llm_router.score": served.score,
        "llm_router.cache": served.cache, "llm_router.dedup": served.dedup,
        "llm_router.attempts": served.attempts if attempts is None else attempts,
    }
    return {k: v for k, v in attributes.items() if v is not None}


def inject_trace(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` with the current span's ``traceparent`` (a copy), or as they are."""
    if not tracing_enabled():
        return headers
    headers = dict(headers)
    propagate.inject(headers)
    return headers
