"""OpenTelemetry traces: a span per chat request (a child of the client's ``traceparent``)
and per workflow op, with the routing decision; the W3C ``traceparent`` passed upstream; and
exporting configured from ``OTEL_*`` variables. Spans are recorded in memory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support_routing import model_entry, open_router_client

from engine.runtime.tracing import (
    _ENABLED,
    configure_tracing,
    inject_trace,
    install_provider,
    tracing_enabled,
)
from engine.testing.fake_upstream import FakeUpstream

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_PARENT = "00f067aa0ba902b7"


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
    workflow = "name: pair\nops:\n  a: {prompt: 'A.'}\n  b: {prompt: 'B.', input_ops: [a]}\n"
    async with open_router_client([model_entry(fake_upstream, "m", tier=1)]) as client:
        done = await client.request("POST", "/v1/workflows",
                                    json={"input": "x", "workflow": workflow})
        assert done.status_code == 200, done.text
    ops = {s.name: s for s in spans.get_finished_spans() if s.name.startswith("workflow op")}
    assert set(ops) == {"workflow op a", "workflow op b"}
    attributes = dict(ops["workflow op b"].attributes or {})
    assert attributes["llm_router.workflow"] == "pair"
    assert attributes["llm_router.model"] == "m" and attributes["llm_router.attempts"] == 1
    sent = {r.body["messages"][-1]["content"][:2]: r.headers["traceparent"]
            for r in fake_upstream.requests("m")}
    assert sent["B."].split("-")[2] == format(ops["workflow op b"].context.span_id, "016x")


def test_nothing_is_traced_unless_asked(
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    assert not tracing_enabled()
    assert inject_trace({"a": "b"}) == {"a": "b"}
    assert configure_tracing({}) is False
    assert configure_tracing({"OTEL_TRACES_EXPORTER": "none",
                              "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}) is False
