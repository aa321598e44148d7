"""The stream codecs' CPU per event, stage by stage: what each stage of a relayed stream
costs, in process CPU time, the best of repeated timed loops.

Usage: .venv/bin/python bench/stream_codecs.py [--events 1000] [--loops 20] [--repeat 7]

A stream's events pass through the SSE decoder, the upstream protocol's stream decoder (into
canonical events), the stream redactor, the result builder and the client protocol's stream
encoder. Each stage is timed alone on a whole stream's input, fed at once (a burst) and
event by event (one event a read, as a live upstream sends them):

* ``sse``: ``SSEDecoder`` on the body;
* ``decode``: the upstream protocol's decoder on the body (its SSE reading included);
  ``decode - sse`` is the decoder's own part;
* ``redact``: ``StreamRedactor.events`` with one configured secret, a batch per event;
* ``build``: ``ResultBuilder.add`` of the events, a batch per event, and its ``result``;
* ``encode``: each client protocol's ``StreamEncoder.encode_many``, a batch per event.

Bodies: the peer harness's OpenAI and Anthropic streams when ``LLM_ROUTER_PEER_BENCH`` names
its folder (44 and 49 events), and generated ones of ``--events`` text deltas (and a tool
call's argument deltas) in each provider's shapes. ``PYTHONPATH`` picks the code measured,
as in bench/ab.sh.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.core.redact import Redactor
from engine.messages import Event, ResultBuilder
from engine.wire.anthropic.response import AnthropicStreamDecoder
from engine.wire.anthropic.response import StreamEncoder as AnthropicEncoder
from engine.wire.openai.response import OpenAIStreamDecoder
from engine.wire.openai.response import StreamEncoder as OpenAIEncoder
from engine.wire.sse import SSEDecoder

_WORDS = ("Benchmarks", " measure", " what", " you", " run,", " not", " what", " you",
          " meant", " to", " run.", " Caf\u00e9", " \"quoted\"", " line\n", " \u2014 ok")


def _sse(data: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return (head + "data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False)
            + "\n\n").encode()


def _openai_chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    """One chat-completion chunk of a stream, in OpenAI's shape."""
    return _sse({"id": "chatcmpl-AbCdEfGhIjKlMnOpQrStUvWxYz012", "object":
                 "chat.completion.chunk", "created": 1732500000, "model":
                 "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_0123456789",
                 "choices": [{"index": 0, "delta": delta, "logprobs": None,
                              "finish_reason": finish}], "usage": None})


def _openai_text(events: int) -> bytes:
    """An OpenAI chat-completion stream of ``events`` text deltas, in OpenAI's shape."""
    body = _openai_chunk({"role": "assistant", "content": "", "refusal": None})
    body += b"".join(_openai_chunk({"content": _WORDS[i % len(_WORDS)]}) for i in range(events))
    return body + _openai_chunk({}, "stop") + b"data: [DONE]\n\n"


def _openai_tool(events: int) -> bytes:
    """An OpenAI stream of one tool call whose arguments come in ``events`` deltas."""
    body = _openai_chunk({"role": "assistant", "content": None, "tool_calls": [{
        "index": 0, "id": "call_abc", "type": "function",
        "function": {"name": "lookup", "arguments": ""}}]})
    body += b"".join(_openai_chunk({"tool_calls": [{"index": 0, "function": {
        "arguments": f'"k{i}":"v",'}}]}) for i in range(events))
    return body + _openai_chunk({}, "tool_calls") + b"data: [DONE]\n\n"


def _anthropic_text(events: int) -> bytes:
    """An Anthropic Messages stream of ``events`` text deltas, in Anthropic's shape."""
    body = _sse({"type": "message_start", "message": {
        "id": "msg_0123456789", "type": "message", "role": "assistant",
        "model": "claude-3-5-haiku-20241022", "content": [], "stop_reason": None,
        "stop_sequence": None, "usage": {"input_tokens": 25, "output_tokens": 1}}},
        "message_start")
    body += _sse({"type": "content_block_start", "index": 0,
                  "content_block": {"type": "text", "text": ""}}, "content_block_start")
    body += b"".join(_sse({"type": "content_block_delta", "index": 0, "delta": {
        "type": "text_delta", "text": _WORDS[i % len(_WORDS)]}}, "content_block_delta")
        for i in range(events))
    body += _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    body += _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn",
                  "stop_sequence": None}, "usage": {"output_tokens": events}},
                 "message_delta")
    return body + _sse({"type": "message_stop"}, "message_stop")


def _anthropic_tool(events: int) -> bytes:
    """An Anthropic stream of one tool use whose input comes in ``events`` deltas."""
    body = _sse({"type": "message_start", "message": {
        "id": "msg_0123456789", "type": "message", "role": "assistant",
        "model": "claude-3-5-haiku-20241022", "content": [], "stop_reason": None,
        "stop_sequence": None, "usage": {"input_tokens": 25, "output_tokens": 1}}},
        "message_start")
    body += _sse({"type": "content_block_start", "index": 0, "content_block": {
        "type": "tool_use", "id": "toolu_01", "name": "lookup", "input": {}}},
        "content_block_start")
    body += b"".join(_sse({"type": "content_block_delta", "index": 0, "delta": {
        "type": "input_json_delta", "partial_json": f'"k{i}":"v",'}}, "content_block_delta")
        for i in range(events))
    body += _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    body += _sse({"type": "message_delta", "delta": {"stop_reason": "tool_use",
                  "stop_sequence": None}, "usage": {"output_tokens": events}},
                 "message_delta")
    return body + _sse({"type": "message_stop"}, "message_stop")


def _best(run: Callable[[], object], loops: int, repeat: int) -> float:
    """The best of ``repeat`` timings of ``loops`` calls, in µs a call (process CPU time)."""
    run()
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(loops):
            run()
        best = min(best, time.process_time() - start)
    return best / loops * 1e6


def _split(body: bytes) -> list[bytes]:
    """The body's SSE events, each with its blank line: one read each."""
    return [piece + b"\n\n" for piece in body.split(b"\n\n") if piece]


def measure(name: str, body: bytes, decoder: Callable[[], Any], args: argparse.Namespace
            ) -> None:
    reads = _split(body)
    n = len(reads)

    def sse_burst() -> object:
        d = SSEDecoder()
        return d.feed(body), d.close()

    def sse_reads() -> object:
        d = SSEDecoder()
        return [d.feed(r) for r in reads], d.close()

    def decode_burst() -> list[Event]:
        d = decoder()
        return d.feed(body) + d.close()

    def decode_reads() -> list[Event]:
        d = decoder()
        out: list[Event] = []
        for r in reads:
            out += d.feed(r)
        return out + d.close()

    events = decode_burst()
    batches = [[e] for e in events]
    redactor = Redactor(["sk-proj-Zq8PxY2vLm4TbN7cR1dW"])

    def redact() -> object:
        s = redactor.stream()
        return [s.events(b) for b in batches]

    def build() -> object:
        b = ResultBuilder()
        for batch in batches:
            b.add(batch)
        return b.result()

    def encode_openai() -> object:
        e = OpenAIEncoder(id="chatcmpl-x", model="m", created=0, include_usage=True)
        return e.start(), [e.encode_many(b) for b in batches]

    def encode_anthropic() -> object:
        e = AnthropicEncoder(id="msg_x", model="m", input_tokens=25)
        return e.start(), [e.encode_many(b) for b in batches]

    loops, repeat = args.loops, args.repeat
    figures = {
        "sse, burst": _best(sse_burst, loops, repeat),
        "sse, a read an event": _best(sse_reads, loops, repeat),
        "decode, burst": _best(decode_burst, loops, repeat),
        "decode, a read an event": _best(decode_reads, loops, repeat),
        "redact": _best(redact, loops, repeat),
        "build": _best(build, loops, repeat),
        "encode openai": _best(encode_openai, loops, repeat),
        "encode anthropic": _best(encode_anthropic, loops, repeat),
    }
    print(f"\n{name}: {len(body):,} bytes, {n} SSE events, {len(events)} canonical events")
    print(f"  {'stage':28} {'µs a stream':>12} {'µs an SSE event':>16}")
    for stage, us in figures.items():
        print(f"  {stage:28} {us:12.1f} {us / n:16.3f}")
    own = figures["decode, burst"] - figures["sse, burst"]
    print(f"  {'decode - sse, burst':28} {own:12.1f} {own / n:16.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--loops", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    bodies: list[tuple[str, bytes, Callable[[], Any]]] = []
    peer = os.environ.get("LLM_ROUTER_PEER_BENCH")
    if peer:
        folder = Path(peer) / "mock" / "bodies"
        bodies += [
            ("peer harness, OpenAI", (folder / "openai_chat.sse").read_bytes(),
             OpenAIStreamDecoder),
            ("peer harness, Anthropic", (folder / "anthropic_messages.sse").read_bytes(),
             AnthropicStreamDecoder),
        ]
    n = args.events
    bodies += [
        (f"OpenAI, {n} text deltas", _openai_text(n), OpenAIStreamDecoder),
        (f"OpenAI, a tool call in {n} deltas", _openai_tool(n), OpenAIStreamDecoder),
        (f"Anthropic, {n} text deltas", _anthropic_text(n), AnthropicStreamDecoder),
        (f"Anthropic, a tool use in {n} deltas", _anthropic_tool(n), AnthropicStreamDecoder),
    ]
    for name, body, decoder in bodies:
        loops = args.loops if len(body) > 100_000 else args.loops * 10
        measure(name, body, decoder, argparse.Namespace(loops=loops, repeat=args.repeat))


if __name__ == "__main__":
    main()
