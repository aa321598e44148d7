"""Where a cost per unit grows with size: the router's work against the size of what it handles.

Usage: .venv/bin/python bench/scaling.py [DIMENSION ...] [--max-size N] [--port P --fake-port Q]

For each dimension, the same operation at growing sizes (10, 100, 1,000, 10,000 units, or
the dimension's own), best of a few repeats, and a table: size, total milliseconds, and
microseconds per unit. A per-unit cost that grows with size is a finding: something in the
path is super-linear. The chat, workflow and listing dimensions go through the whole router
over HTTP (the app as ``llm-router`` serves it, the cache on, the access line written to a
throwaway stream) against the fake upstream from ``engine.testing``, all in this process, so
their totals include the client's and the fake's own (linear) work; the cache, dedup, the
stream codecs and ``load_workflow`` are called in process.

Dimensions (default: all): ``messages`` (a conversation's length, both client protocols),
``tools`` (tool definitions with JSON schemas) and ``tool_history`` (tool calls and results in
the history), both client protocols; ``answer`` (a non-stream answer's size, each upstream
protocol to each client protocol, stored in the cache); ``tool_stream`` (one streamed tool
call of N argument deltas over HTTP, and in process: each upstream protocol's decoder, the
encoders of both client protocols, the result); ``workflow`` (``load_workflow`` in process
with its peak memory, then over HTTP a dry run, a run, and GETs of the finished run and its
events, for a fan and a chain of N ops); ``listings`` (``/metrics``, ``/stats``,
``/v1/backends``, ``/stats/recent``, ``/v1/models`` with N models, and after requests from N
tenants); ``cache`` (the semantic cache at N entries: stores, evicting stores, lookups);
``dedup`` (one stream and N followers through the gateway, and a flight's N followers
leaving it). ``--port`` and ``--fake-port`` (default: free ports) are where the router and
the fake upstream listen; ``--max-size`` caps the sizes.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import make_config, open_router

from engine.core.config import Config
from engine.testing import open_fake_upstream
from engine.testing.fake_upstream import Behaviour, FakeUpstream, ToolCall

SIZES = (10, 100, 1_000, 10_000)
_WORDS = ("the quick brown fox jumps over a lazy dog while seven owls count "
          "prime numbers under the pale northern moon").split()


def sentence(i: int, words: int = 20) -> str:
    """``words`` words, distinct per ``i`` (so no two messages are alike)."""
    return " ".join(_WORDS[(i * 7 + j) % len(_WORDS)] for j in range(words - 1)) + f" n{i}"


def table(title: str, unit: str, rows: Sequence[tuple[int, float]], *,
          per: str | None = None) -> None:
    """Size, total ms and µs per unit (``per``: the µs of one operation, named so, instead:
    the rows' seconds are already per operation)."""
    one = per or {"entries": "entry", "KiB": "KiB"}.get(unit, unit.rstrip("s"))
    print(f"\n{title}\n| {unit} | total ms | µs per {one} |\n|---:|---:|---:|")
    for size, seconds in rows:
        print(f"| {size:,} | {seconds * 1000:,.2f} | "
              f"{seconds * 1e6 / (1 if per else size):,.2f} |")
    sys.stdout.flush()


async def best_of(run: Callable[[], Awaitable[object]], size: int, budget: int = 40_000
                  ) -> float:
    """The fastest of a few runs (more for small sizes), in seconds."""
    repeats = max(3, min(30, budget // max(size, 1)))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        await run()
        best = min(best, time.perf_counter() - start)
    return best


def peak_mib(run: Callable[[], object]) -> float:
    """The peak of memory allocated while ``run`` runs (tracemalloc), in MiB."""
    import tracemalloc

    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def sync_best_of(run: Callable[[], object], size: int, budget: int = 40_000) -> float:
    repeats = max(3, min(30, budget // max(size, 1)))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


# ---- the router over HTTP ----------------------------------------------------------------


def router_config(fake: FakeUpstream, *, cache: bool, models: int = 0) -> Config:
    """Two backends at the fake (``oa`` OpenAI tier 1, ``an`` Anthropic tier 2) and
    ``models`` more, the cache on or off, bodies up to 256 MiB."""
    listed = [
        {"name": "oa", "provider": "openai", "model": "oa", "tier": 1, "api_key": "k",
         "base_url": fake.base_url("oa", "openai"),
         "cost_per_1k_in": 0.001, "cost_per_1k_out": 0.002},
        {"name": "an", "provider": "anthropic", "model": "an", "tier": 2, "api_key": "k",
         "base_url": fake.base_url("an", "anthropic"),
         "cost_per_1k_in": 0.003, "cost_per_1k_out": 0.015},
    ]
    listed += [{"name": f"extra{i}", "provider": "openai", "model": f"extra{i}",
                "tier": 1 + i % 3, "api_key": "k", "base_url": fake.base_url(f"x{i}", "openai"),
                "cost_per_1k_in": 0.001, "cost_per_1k_out": 0.002} for i in range(models)]
    return make_config({
        "models": listed,
        "cache": {"enabled": cache, "max_entry_bytes": 64 * 1024 * 1024,
                  "max_bytes": 512 * 1024 * 1024},
        "server": {"max_body_bytes": 256 * 1024 * 1024},
    })


def access_to_file() -> None:
    """The access line formatted and written, as in production (to a throwaway file)."""
    log = logging.getLogger("llm_router.access")
    log.setLevel(logging.INFO)
    log.addHandler(logging.StreamHandler(io.StringIO()))
    log.propagate = False
    logging.getLogger("llm_router").setLevel(logging.WARNING)


class Chat:
    """POSTs to the router, checking the status. Each body's ``NONCE`` becomes a number of
    its own, so that no request is answered from the cache or joins another's flight."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client, self.url = client, url
        self.serial = 0

    async def post(self, path: str, body: dict[str, Any] | bytes) -> bytes:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        self.serial += 1
        data = data.replace(b"NONCE", b"%d" % self.serial)
        headers = {"content-type": "application/json", "authorization": "Bearer k",
                   "x-api-key": "k", "anthropic-version": "2023-06-01"}
        response = await self.client.post(self.url + path, content=data, headers=headers)
        if response.status_code != 200:
            raise SystemExit(f"{path}: {response.status_code} {response.text[:300]}")
        return response.content


def conversation(n: int, protocol: str) -> list[dict[str, Any]]:
    """``n`` messages alternating user and assistant, ending with a user's."""
    out = []
    for i in range(n):
        role = "user" if (n - 1 - i) % 2 == 0 else "assistant"
        out.append({"role": role, "content": sentence(i)})
    out[-1]["content"] += " NONCE"
    return out


def chat_body(protocol: str, model: str, messages: list[dict[str, Any]], **more: Any
              ) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": messages, **more}
    if protocol == "anthropic":
        body.setdefault("max_tokens", 64)
    return body


def path_of(protocol: str) -> str:
    return "/v1/chat/completions" if protocol == "openai" else "/v1/messages"


def schema(i: int) -> dict[str, Any]:
    """A realistic tool's JSON schema: nested objects, enums, arrays, descriptions."""
    return {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": f"What to look up for tool {i}."},
            "limit": {"type": "integer", "minimum": 1, "maximum": 100},
            "mode": {"type": "string", "enum": ["fast", "thorough", "exact"]},
            "filters": {"type": "array", "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "value": {"type": "string"}},
                "required": ["field", "value"]}},
        },
        "required": ["query"],
    }


def tools(n: int, protocol: str) -> list[dict[str, Any]]:
    if protocol == "openai":
        return [{"type": "function", "function": {
            "name": f"tool_{i}", "description": sentence(i, 12), "parameters": schema(i)}}
            for i in range(n)]
    return [{"name": f"tool_{i}", "description": sentence(i, 12), "input_schema": schema(i)}
            for i in range(n)]


def tool_history(n: int, protocol: str) -> list[dict[str, Any]]:
    """A user's question, then ``n`` rounds of an assistant's tool call and its result, and a
    last user message."""
    out: list[dict[str, Any]] = [{"role": "user", "content": sentence(0)}]
    for i in range(n):
        arguments = {"query": sentence(i, 8), "limit": i % 50 + 1}
        if protocol == "openai":
            out.append({"role": "assistant", "content": None, "tool_calls": [{
                "id": f"call_{i}", "type": "function",
                "function": {"name": "lookup", "arguments": orjson.dumps(arguments).decode()}}]})
            out.append({"role": "tool", "tool_call_id": f"call_{i}", "content": sentence(i)})
        else:
            out.append({"role": "assistant", "content": [
                {"type": "tool_use", "id": f"toolu_{i}", "name": "lookup", "input": arguments}]})
            out.append({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": f"toolu_{i}", "content": sentence(i)}]})
    out.append({"role": "user", "content": "and so? NONCE"})
    return out


def lookup_tool(protocol: str) -> list[dict[str, Any]]:
    if protocol == "openai":
        return [{"type": "function", "function": {"name": "lookup", "parameters": schema(0)}}]
    return [{"name": "lookup", "input_schema": schema(0)}]


async def chat_dimensions(args: argparse.Namespace, which: set[str]) -> None:
    access_to_file()
    sizes = [s for s in SIZES if s <= args.max_size]
    async with open_fake_upstream(port=args.fake_port, default=Behaviour(text="ok")) as fake, \
            open_router(router_config(fake, cache=True), args.port) as router, \
            httpx.AsyncClient(timeout=600) as client:
        chat = Chat(client, router.v1[: -len("/v1")])

        for protocol in ("openai", "anthropic"):
            path = path_of(protocol)
            if "messages" in which:
                rows = []
                for n in sizes:
                    body = chat_body(protocol, "auto", conversation(n, protocol))
                    rows.append((n, await best_of(lambda b=body, p=path: chat.post(
                        p, b), n)))
                table(f"messages: a conversation of N messages, model auto, {protocol} client",
                      "messages", rows)
            if "tools" in which:
                rows = []
                for n in [s for s in (1, 10, 100, 500) if s <= args.max_size]:
                    body = chat_body(protocol, "auto", conversation(3, protocol),
                                     tools=tools(n, protocol))
                    rows.append((n, await best_of(lambda b=body, p=path: chat.post(
                        p, b), n, 4_000)))
                table(f"tools: N tool definitions with JSON schemas, {protocol} client",
                      "tools", rows)
            if "tool_history" in which:
                rows = []
                for n in [s for s in SIZES if s <= min(args.max_size, 5_000)]:
                    body = chat_body(protocol, "auto", tool_history(n, protocol),
                                     tools=lookup_tool(protocol))
                    rows.append((n, await best_of(lambda b=body, p=path: chat.post(
                        p, b), n)))
                table(f"tool_history: N tool calls and results in the history, {protocol} "
                      "client", "calls", rows)

        if "answer" in which:
            for protocol, backend in (("openai", "oa"), ("anthropic", "an"),
                                      ("openai", "an"), ("anthropic", "oa")):
                rows = []
                path = path_of(protocol)
                for kib in (1, 32, 1024, 8 * 1024, 32 * 1024):
                    text = ("lorem ipsum dolor sit amet " * (kib * 1024 // 27 + 1))[: kib * 1024]
                    fake.set_default(backend, Behaviour(text=text))

                    body = chat_body(protocol, backend, [
                        {"role": "user", "content": "question NONCE"}])
                    rows.append((kib, await best_of(lambda b=body, p=path: chat.post(
                        p, b), kib, 4_000)))
                fake.clear_default(backend)
                table(f"answer: a non-stream answer of N KiB, {backend} upstream, {protocol} "
                      "client, cache on (stored)", "KiB", rows)

        if "tool_stream" in which:
            for protocol, backend in (("openai", "oa"), ("anthropic", "an"),
                                      ("openai", "an"), ("anthropic", "oa")):
                rows = []
                path = path_of(protocol)
                for n in [s for s in SIZES if s <= args.max_size]:
                    # The fake cuts the arguments' JSON into 8-character deltas.
                    arguments = {"text": "x" * (8 * n - 11)}
                    fake.set_default(backend, Behaviour(tool_call=ToolCall("lookup", arguments)))
                    body = chat_body(protocol, backend, [{"role": "user", "content": "go NONCE"}],
                                     tools=lookup_tool(protocol), stream=True)
                    rows.append((n, await best_of(lambda b=body, p=path: chat.post(
                        p, b), n)))
                fake.clear_default(backend)
                table(f"tool_stream: a streamed tool call of N argument deltas, {backend} "
                      f"upstream, {protocol} client", "deltas", rows)



# ---- workflows, listings and tenants over HTTP ----------------------------------------------


def workflow_yaml(n: int, shape: str) -> str:
    """``n`` ops: a ``chain`` (each reads the one before) or a ``fan`` (``n - 1`` ops that
    read the input, and one that reads them all)."""
    lines = [f"name: scale-{shape}-{n}", "ops:"]
    for i in range(n):
        lines.append(f"  op{i}:")
        if shape == "chain" and i:
            lines += [f"    prompt: 'step {i} of {{{{ ops.op{i - 1}.output }}}}'",
                      f"    input_ops: [op{i - 1}]"]
        elif shape == "fan" and i == n - 1 and n > 1:
            lines += ["    prompt: 'merge {{ input }}'", "    input_ops: [" +
                      ", ".join(f"op{j}" for j in range(n - 1)) + "]"]
        else:
            lines.append(f"    prompt: 'part {i} of {{{{ input }}}}'")
        lines.append("    max_tokens: 16")
    return "\n".join(lines) + "\n"


async def http_dimensions(args: argparse.Namespace, which: set[str]) -> None:
    access_to_file()
    async with open_fake_upstream(port=args.fake_port, default=Behaviour(text="ok")) as fake, \
            httpx.AsyncClient(timeout=600) as client:
        if "workflow" in which:
            await workflow_dimension(args, fake, client)
        if "listings" in which:
            await listing_dimension(args, fake, client)


async def workflow_dimension(args: argparse.Namespace, fake: FakeUpstream,
                             client: httpx.AsyncClient) -> None:
    config = router_config(fake, cache=False)
    config = make_config({**config.model_dump(mode="json", exclude={"learned", "state"}),
                          "workflows": {"max_ops": 10_000, "max_depth": 10_000,
                                        "max_yaml_bytes": 16 * 1024 * 1024,
                                        "max_concurrency": 64}})
    async with open_router(config, args.port) as router:
        chat = Chat(client, router.url)
        for shape in ("fan", "chain"):
            dry, run, record, events = [], [], [], []
            for n in [s for s in (10, 100, 1_000, 2_000) if s <= args.max_size]:
                text = workflow_yaml(n, shape)
                dry.append((n, await best_of(lambda t=text: chat.post(
                    "/v1/workflows", {"workflow": t, "dry_run": True}), n, 2_000)))
                start = time.perf_counter()
                answer = orjson.loads(await chat.post(
                    "/v1/workflows", {"workflow": text, "input": "go"}))
                run.append((n, time.perf_counter() - start))
                run_id = answer.get("run_id") or answer.get("id")
                url = f"{router.v1}/workflows/runs/{run_id}"

                async def get(url: str) -> None:
                    response = await client.get(url, headers={"authorization": "Bearer k"})
                    assert response.status_code == 200, response.text[:300]
                record.append((n, await best_of(lambda u=url: get(u), n, 2_000)))
                events.append((n, await best_of(lambda u=url + "/events": get(u), n, 2_000)))
            table(f"workflow ({shape}): a dry run (parse, plan, estimate) of N ops", "ops", dry)
            table(f"workflow ({shape}): a run of N ops against the fake", "ops", run)
            table(f"workflow ({shape}): GET of the finished run's record", "ops", record)
            table(f"workflow ({shape}): GET of the finished run's events", "ops", events)


def workflow_load_dimension(args: argparse.Namespace) -> None:
    """``load_workflow`` in process: the HTTP path keeps what it compiled, so only a
    workflow's first submission pays for it, and a best-of over HTTP measures the rest."""
    from engine.core.config import WorkflowLimits
    from engine.core.workflow.spec import load_workflow

    limits = WorkflowLimits(max_ops=10_000, max_depth=10_000,
                            max_yaml_bytes=16 * 1024 * 1024)
    for shape in ("fan", "chain"):
        rows = []
        for n in [s for s in (10, 100, 1_000, 2_000, 4_000) if s <= max(args.max_size, 4_000)]:
            text = workflow_yaml(n, shape)
            rows.append((n, sync_best_of(lambda t=text: load_workflow(
                t, limits=limits, templates_dir=None), n, 2_000)))
        table(f"workflow ({shape}): load_workflow of N ops (parse, check, compile, plan)",
              "ops", rows)
        peaks = []
        for n in (1_000, 2_000, 4_000):
            text = workflow_yaml(n, shape)
            peak = peak_mib(lambda t=text: load_workflow(t, limits=limits, templates_dir=None))
            peaks.append(f"{n:,} ops {peak:.1f} MiB")
        print("peak traced memory of one load:", ", ".join(peaks))


async def listing_dimension(args: argparse.Namespace, fake: FakeUpstream,
                            client: httpx.AsyncClient) -> None:
    paths = ("/metrics", "/stats", "/v1/backends", "/stats/recent", "/v1/models")

    async def get(url: str) -> None:
        response = await client.get(url, headers={"authorization": "Bearer k"})
        assert response.status_code == 200, response.text[:300]

    rows: dict[str, list[tuple[int, float]]] = {p: [] for p in paths}
    for models in [s for s in (10, 100, 1_000) if s <= args.max_size]:
        config = router_config(fake, cache=False, models=models)
        async with open_router(config, args.port) as router:
            chat = Chat(client, router.url)
            for i in range(models):  # one request to each model: its stats and metrics
                await chat.post("/v1/chat/completions", {
                    "model": f"extra{i}", "messages": [{"role": "user", "content": "hi NONCE"}]})
            for path in paths:
                rows[path].append((models, await best_of(lambda u=router.url + path: get(u),
                                                         models, 2_000)))
    for path in paths:
        table(f"listings: GET {path} with N models (each called once)", "models", rows[path])

    rows = {p: [] for p in paths}
    for tenants in [s for s in (10, 100, 1_000) if s <= args.max_size]:
        async with open_router(router_config(fake, cache=True), args.port) as router:
            for i in range(tenants):  # a request from each tenant (a client key of its own)
                response = await client.post(router.v1 + "/chat/completions", json={
                    "model": "oa", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"authorization": f"Bearer tenant-{i}"})
                assert response.status_code == 200
            for path in paths:
                rows[path].append((tenants, await best_of(lambda u=router.url + path: get(u),
                                                          tenants, 2_000)))
    for path in paths:
        table(f"listings: GET {path} after requests from N tenants", "tenants", rows[path])


# ---- in process: the semantic cache, dedup, the stream codecs ----------------------------


def cache_dimension(args: argparse.Namespace) -> None:
    from engine.core.cache.key import request_key
    from engine.core.cache.responses import ResponseCache
    from engine.core.cache.semantic import SemanticMatcher
    from engine.messages import ChatRequest, Message, TextPart, new_chat_result, new_text_part

    matcher = SemanticMatcher()
    result = new_chat_result(content=(new_text_part("an answer"),))
    store_rows, evict_rows, miss_rows, hit_rows = [], [], [], []
    for n in [s for s in (1_000, 10_000, 100_000) if s <= max(args.max_size, 100_000)]:
        texts = [f"{sentence(i, 12)} question {i}?" for i in range(n)]
        keys = [request_key(ChatRequest(messages=(Message("user", (TextPart(t),)),)),
                            tenant="", target="oa") for t in texts]
        cache = ResponseCache(matcher=matcher, max_entries=n, max_bytes=1 << 40,
                              max_entry_bytes=1 << 20, ttl=1e9, threshold=0.85)
        prepared = [cache.prepare(t) for t in texts]  # fingerprints: not the cache's size
        start = time.perf_counter()
        for key, p in zip(keys, prepared, strict=True):
            cache.store(key, result, model="oa", tier=1, cost_usd=0.0, reference_usd=0.0,
                        now=0.0, prepared=p)
        store_rows.append((n, time.perf_counter() - start))
        # 2,000 more (or N), into the full cache: each store evicts the least recently used
        more = [f"{sentence(i, 12)} another {i}?" for i in range(min(n, 2_000))]
        more_keys = [request_key(ChatRequest(messages=(Message("user", (TextPart(t),)),)),
                                 tenant="", target="oa") for t in more]
        more_prepared = [cache.prepare(t) for t in more]
        start = time.perf_counter()
        for key, p in zip(more_keys, more_prepared, strict=True):
            cache.store(key, result, model="oa", tier=1, cost_usd=0.0, reference_usd=0.0,
                        now=0.0, prepared=p)
        evict_rows.append((n, (time.perf_counter() - start) / len(more)))
        probes = 500
        misses = [f"an unrelated question about {i} moons and {i * 3} owls" for i in range(probes)]
        miss_keys = [request_key(ChatRequest(messages=(Message("user", (TextPart(t),)),)),
                                 tenant="", target="oa") for t in misses]
        miss_prepared = [cache.prepare(t) for t in misses]
        start = time.perf_counter()
        for key, p in zip(miss_keys, miss_prepared, strict=True):
            cache.lookup(key, 0.0, prepared=p)
        miss_rows.append((n, (time.perf_counter() - start) / probes))
        start = time.perf_counter()
        for key, p in zip(more_keys[-probes:], more_prepared[-probes:], strict=True):
            assert cache.lookup(key, 0.0, prepared=p) is not None
        hit_rows.append((n, (time.perf_counter() - start) / probes))
    table("cache: N stores into an empty cache of N entries", "entries", store_rows)
    table("cache: a store into a full cache of N entries (it evicts one; 2,000 such, or N)",
          "entries", evict_rows, per="store")
    table("cache: a lookup that misses, in a cache of N entries", "entries", miss_rows,
          per="lookup")
    table("cache: a lookup that hits exactly, in a cache of N entries", "entries", hit_rows,
          per="lookup")


def stream_codec_dimension(args: argparse.Namespace) -> None:
    """One streamed tool call of N argument deltas, in process: each upstream protocol's
    decoder fed the stream in 64 KiB reads, the events relayed to each client protocol's
    encoder, and the result built (what the cache and the stats take)."""
    from engine.messages import ResultBuilder
    from engine.wire.anthropic.response import AnthropicStreamDecoder
    from engine.wire.anthropic.response import StreamEncoder as AnthropicEncoder
    from engine.wire.openai.response import OpenAIStreamDecoder
    from engine.wire.openai.response import StreamEncoder as OpenAIEncoder

    def openai_stream(n: int) -> bytes:
        def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return b"data: " + orjson.dumps({"id": "c", "object": "chat.completion.chunk",
                                              "created": 0, "model": "m", "choices": [
                {"index": 0, "delta": delta, "finish_reason": finish}]}) + b"\n\n"
        head = event({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1",
                      "type": "function", "function": {"name": "lookup", "arguments": ""}}]})
        body = b"".join(event({"tool_calls": [{"index": 0, "function": {
            "arguments": f'"x{i % 10}y",'}}]}) for i in range(n))
        return head + body + event({}, "tool_calls") + b"data: [DONE]\n\n"

    def anthropic_stream(n: int) -> bytes:
        def event(name: str, data: dict[str, Any]) -> bytes:
            return b"event: %s\ndata: %s\n\n" % (name.encode(), orjson.dumps(data))
        out = [event("message_start", {"type": "message_start", "message": {
            "id": "m", "type": "message", "role": "assistant", "model": "m", "content": [],
            "stop_reason": None, "usage": {"input_tokens": 1, "output_tokens": 0}}}),
            event("content_block_start", {"type": "content_block_start", "index": 0,
                  "content_block": {"type": "tool_use", "id": "toolu_1", "name": "lookup",
                                    "input": {}}})]
        out += [event("content_block_delta", {"type": "content_block_delta", "index": 0,
                      "delta": {"type": "input_json_delta", "partial_json": f'"x{i % 10}y",'}})
                for i in range(n)]
        out += [event("content_block_stop", {"type": "content_block_stop", "index": 0}),
                event("message_delta", {"type": "message_delta", "delta": {
                    "stop_reason": "tool_use"}, "usage": {"output_tokens": n}}),
                event("message_stop", {"type": "message_stop"})]
        return b"".join(out)

    for name, make, decoder in (("openai", openai_stream, OpenAIStreamDecoder),
                                ("anthropic", anthropic_stream, AnthropicStreamDecoder)):
        rows = []
        for n in (10, 100, 1_000, 10_000, 100_000):
            body = make(n)

            def run(body: bytes = body, decoder: Any = decoder) -> None:
                decode = decoder()
                built = ResultBuilder()
                to_openai = OpenAIEncoder(id="c", model="m", created=0, include_usage=True)
                to_anthropic = AnthropicEncoder(id="m", model="m", input_tokens=1)
                for at in range(0, len(body), 65536):
                    events = decode.feed(body[at: at + 65536])
                    if events:
                        built.add(events)
                        to_openai.encode_many(events)
                        to_anthropic.encode_many(events)
                built.add(decode.close())
                built.result()
            rows.append((n, sync_best_of(run, n, 200_000)))
        table(f"tool_stream in process: a {name} stream's tool call of N argument deltas "
              "(decode, relay to both client protocols, build the result)", "deltas", rows)


async def dedup_dimension(args: argparse.Namespace) -> None:
    from harness import one_model_config

    from engine.messages import ChatRequest, Message, TextPart
    from engine.runtime import RunContext, open_gateway
    from engine.runtime.models import Models

    rows = []
    async with open_fake_upstream(port=args.fake_port) as fake:
        folder = Path(tempfile.mkdtemp(prefix="llmr-bench-"))
        config = one_model_config(fake.base_url("m", "openai"), folder)
        # 40 words, 5 ms apart: every follower joins before the first word is out
        fake.set_default("m", Behaviour(text=" ".join(sentence(i, 2) for i in range(20)),
                                        chunk_delay=0.005))
        async with open_gateway(config, models=Models()) as gateway:
            for n in [s for s in (1, 10, 100, 1_000, 3_000) if s <= max(args.max_size, 3_000)]:
                best = float("inf")
                for attempt in range(3):
                    request = ChatRequest(messages=(Message("user", (TextPart(
                        f"question {n} {attempt}"),)),))
                    ctx = RunContext(tenant="bench")
                    start = time.process_time()

                    async def read(request: ChatRequest = request,
                                   ctx: RunContext = ctx) -> None:
                        stream = await gateway.open_stream(request, ctx)
                        async for _ in stream:
                            pass
                    async with trio.open_nursery() as nursery:
                        for _ in range(n + 1):
                            nursery.start_soon(read)
                    best = min(best, time.process_time() - start)
                rows.append((n, best))
        print(f"upstream calls: {len(fake.requests('m'))} for "
              f"{3 * len(rows)} groups")
    table("dedup: CPU of one stream and N followers (all in this process, the fake's "
          "included)", "followers", rows)

    from engine.runtime.dedup import Flight

    def leaving(n: int) -> float:
        """Seconds for ``n`` followers and the leader to leave a finished flight of 40 items
        that each has taken."""
        one = Flight(buffer_bytes=1 << 20)
        listeners = [one.join(leader=not i) for i in range(n + 1)]
        for i in range(40):
            one.items.append(i)
            one._ends.append(i + 1)
        one.published = 40
        one._finish(result="done")
        for listener in listeners:  # what take() does, without awaiting
            listener.next, listener.taken = 40, 40
        start = time.perf_counter()
        for listener in listeners:
            listener.leave()
        return time.perf_counter() - start
    rows = [(n, min(leaving(n) for _ in range(5))) for n in (10, 100, 1_000, 10_000)]
    table("dedup: a finished flight's N followers leaving (the flight alone)", "followers",
          rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dimensions", nargs="*")
    parser.add_argument("--max-size", type=int, default=10_000)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fake-port", type=int, default=0)
    args = parser.parse_args()
    chat = {"messages", "tools", "tool_history", "answer", "tool_stream"}
    which = set(args.dimensions) or chat | {"workflow", "cache", "dedup", "listings"}
    print(f"Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    if which & chat:
        trio.run(chat_dimensions, args, which & chat)
    if "workflow" in which:
        workflow_load_dimension(args)
    if which & {"workflow", "listings"}:
        trio.run(http_dimensions, args, which)
    if "cache" in which:
        cache_dimension(args)
    if "tool_stream" in which:
        stream_codec_dimension(args)
    if "dedup" in which:
        trio.run(dedup_dimension, args)


if __name__ == "__main__":
    main()
