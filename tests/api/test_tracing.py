"""OpenTelemetry traces: a span per chat request (a child of the client's ``traceparent``)
and per workflow op, with the routing decision; the W3C ``traceparent`` passed upstream; and
exporting configured from ``OTEL_*`` variables. Spans are recorded in memory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support_routing import model_entry, open_router_client, wait_for
from workflow_cases import CHAIN

from engine.runtime.tracing import (
    _ENABLED,
    configure_tracing,
    inject_trace,
    install_provider,
    tracing_enabled,
)
from engine.testing.fake_upstream import Behaviour, FakeUpstream

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_PARENT = "00f067aa0ba902b7"
CLIENT = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"}
ASYNC = {"prefer": "respond-async"}
PAIR = "name: pair\nops:\n  a: {prompt: 'A.'}\n  b: {prompt: 'B.', input_ops: [a]}\n"


def named(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name == name]


async def finished(spans: InMemorySpanExporter, name: str, *, count: int = 1) -> bool:
    """Whether ``count`` spans called ``name`` have ended (a run's span ends just after its
    last step is recorded, so a client may see the run finished a moment before)."""
    return len(named(spans, name)) >= count


def span_id(span: ReadableSpan) -> str:
    return format(span.context.span_id, "016x")


def parent_of(span: ReadableSpan) -> str | None:
    return None if span.parent is None else format(span.parent.span_id, "016x")


@pytest.fixture(scope="session")
def provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    """The process's one tracer provider (OpenTelemetry's global can be set once)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    install_provider(provider)
    setattr(provider, _ENABLED, False)
    return provider, exporter


@pytest.fixture
def spans(provider: tuple[TracerProvider, InMemorySpanExporter]
          ) -> Iterator[InMemorySpanExporter]:
    """Tracing on for one test (off again after it, for the rest of the suite)."""
    sdk, exporter = provider
    exporter.clear()
    setattr(sdk, _ENABLED, True)
    try:
        yield exporter
    finally:
        setattr(sdk, _ENABLED, False)


async def test_a_chat_span_is_the_parent_of_the_upstream_call(
    fake_upstream: FakeUpstream, spans: InMemorySpanExporter
) -> None:
    async with open_router_client([model_entry(fake_upstream, "m", tier=1)]) as client:
        answer = await client.request("POST", "/v1/chat/completions", json={
            "model": "auto", "messages": [{"role": "user", "content": "hi"}]},
            headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"})
        assert answer.status_code == 200
        streamed, _ = await client.stream_chat("a stream")
        assert streamed.status_code == 200
    chats = [s for s in spans.get_finished_spans() if s.name == "chat openai"]
    assert len(chats) == 2
    first, second = chats
    assert first.kind == trace.SpanKind.SERVER
    assert format(first.context.trace_id, "032x") == CLIENT_TRACE
    assert first.parent is not None and format(first.parent.span_id, "016x") == CLIENT_PARENT
    attributes = dict(first.attributes or {})
    assert {k: attributes[k] for k in ("llm_router.served", "llm_router.tier",
                                       "llm_router.router", "llm_router.cache",
                                       "llm_router.attempts", "http.response.status_code",
                                       "url.path")} == {
        "llm_router.served": "m", "llm_router.tier": 1, "llm_router.router": "heuristic",
        "llm_router.cache": "MISS", "llm_router.attempts": 1,
        "http.response.status_code": 200, "url.path": "/v1/chat/completions"}
    sent = [r.headers["traceparent"] for r in fake_upstream.requests("m")]
    assert sent[0] == f"00-{CLIENT_TRACE}-{format(first.context.span_id, '016x')}-01"
    # The stream's span, a new trace, also reached the upstream call made in the background.
    assert sent[1].split("-")[1:3] == [format(second.context.trace_id, "032x"),
                                       format(second.context.span_id, "016x")]
    assert dict(second.attributes or {})["gen_ai.usage.output_tokens"] > 0


async def test_a_span_per_workflow_op(fake_upstream: FakeUpstream,
                                      spans: InMemorySpanExporter) -> None:
    """The synchronous form: the request's span, the run's under it, the ops' under that."""
    async with open_router_client([model_entry(fake_upstream, "m", tier=1)]) as client:
        done = await client.request("POST", "/v1/workflows",
                                    json={"input": "x", "workflow": PAIR})
        assert done.status_code == 200, done.text
        await wait_for(lambda: finished(spans, "workflow run"))
    ops = {s.name: s for s in spans.get_finished_spans() if s.name.startswith("workflow op")}
    assert set(ops) == {"workflow op a", "workflow op b"}
    attributes = dict(ops["workflow op b"].attributes or {})
    assert attributes["llm_router.workflow"] == "pair"
    assert attributes["llm_router.model"] == "m" and attributes["llm_router.attempts"] == 1
    (submitted,) = named(spans, "workflow submitted")
    (run,) = named(spans, "workflow run")
    assert submitted.kind == trace.SpanKind.SERVER and submitted.parent is None
    assert dict(submitted.attributes or {})["llm_router.run"] == done.json()["run_id"]
    assert parent_of(run) == span_id(submitted)
    assert {parent_of(op) for op in ops.values()} == {span_id(run)}
    assert {op.context.trace_id for op in ops.values()} == {submitted.context.trace_id}
    sent = {r.body["messages"][-1]["content"][:2]: r.headers["traceparent"]
            for r in fake_upstream.requests("m")}
    assert sent["B."].split("-")[2] == span_id(ops["workflow op b"])


async def test_a_run_submitted_async_is_traced_in_the_clients_trace(
    fake_upstream: FakeUpstream, spans: InMemorySpanExporter,
) -> None:
    """The run outlives the request (it runs in the background nursery): its span is still
    the request's child, and each op's upstream call names the op's span."""
    async with open_router_client([model_entry(fake_upstream, "m", tier=1)]) as client:
        submitted = await client.request("POST", "/v1/workflows", headers=CLIENT | ASYNC,
                                         json={"input": "x", "workflow": PAIR})
        assert submitted.status_code == 202, submitted.text
        await wait_for(lambda: finished(spans, "workflow run"))
    (request,) = named(spans, "workflow submitted")
    (run,) = named(spans, "workflow run")
    ops = {s.name: s for s in spans.get_finished_spans() if s.name.startswith("workflow op")}
    everything = [request, run, *ops.values()]
    assert {format(s.context.trace_id, "032x") for s in everything} == {CLIENT_TRACE}
    assert parent_of(request) == CLIENT_PARENT
    assert parent_of(run) == span_id(request)
    assert {name: parent_of(op) for name, op in ops.items()} == {
        "workflow op a": span_id(run), "workflow op b": span_id(run)}
    assert dict(run.attributes or {}) | {"llm_router.cost_usd": 0} == {
        "llm_router.run_id": submitted.json()["run_id"], "llm_router.workflow": "pair",
        "llm_router.run.start": 1, "llm_router.run.status": "succeeded",
        "llm_router.cost_usd": 0}
    for recorded in fake_upstream.requests("m"):
        op = ops[f"workflow op {recorded.body['messages'][-1]['content'][0].lower()}"]
        assert recorded.headers["traceparent"] == f"00-{CLIENT_TRACE}-{span_id(op)}-01"


async def test_a_resumed_run_is_traced_under_the_request_that_submitted_it(
    fake_upstream: FakeUpstream, spans: InMemorySpanExporter, tmp_path: Path,
) -> None:
    """A router stops mid-run; the next one on the same store resumes the run from the
    ``traceparent`` kept with it: its second run span is the submitting request's child too,
    and the ops it runs, and their upstream calls, are in the client's trace."""
    fake = fake_upstream
    models = [model_entry(fake, name, tier=1) for name in ("ma", "mb", "mc")]
    state = {"path": str(tmp_path / "state.db")}
    fake.set_default("mb", Behaviour(hang=True))
    async with open_router_client(models, state=state) as client:
        submitted = await client.request("POST", "/v1/workflows", headers=CLIENT | ASYNC,
                                         json={"input": "x", "workflow": CHAIN})
        assert submitted.status_code == 202, submitted.text

        async def b_called() -> bool:
            return len(fake.requests("mb")) == 1

        await wait_for(b_called)
    fake.clear_default("mb")
    async with open_router_client(models, state=state):
        await wait_for(lambda: finished(spans, "workflow run", count=2))
    (request,) = named(spans, "workflow submitted")
    first, second = sorted(named(spans, "workflow run"), key=lambda s: s.start_time or 0)
    assert [dict(s.attributes or {})["llm_router.run.start"] for s in (first, second)] == [1, 2]
    assert dict(first.attributes or {})["llm_router.run.status"] == "running"
    assert dict(second.attributes or {})["llm_router.run.status"] == "succeeded"
    assert parent_of(first) == parent_of(second) == span_id(request)
    assert {format(s.context.trace_id, "032x") for s in spans.get_finished_spans()} == {
        CLIENT_TRACE}
    resumed = {s.name: s for s in spans.get_finished_spans()
               if s.name.startswith("workflow op") and parent_of(s) == span_id(second)}
    assert set(resumed) == {"workflow op b", "workflow op c"}  # a was done: not run again
    retried = fake.requests("mb")[1].headers["traceparent"]
    assert retried == f"00-{CLIENT_TRACE}-{span_id(resumed['workflow op b'])}-01"


def test_nothing_is_traced_unless_asked(
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    assert not tracing_enabled()
    assert inject_trace({"a": "b"}) == {"a": "b"}
    assert configure_tracing({}) is False
    assert configure_tracing({"OTEL_TRACES_EXPORTER": "none",
                              "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}) is False
