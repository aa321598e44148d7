"""The chat path's request parsing, per body: ``OPENAI.parse_request`` and
``ANTHROPIC.parse_request`` on typical bodies (JSON bytes in, canonical request out), the
median and the best of repeated timed loops, timed in process CPU time (on a shared machine
wall time also counts the time other processes held the core). Run before and after a
change to the validators, interleaved:

    python bench/parse_bench.py [--loops 20000] [--repeat 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import orjson

from engine.wire import ANTHROPIC, OPENAI

_LONG = "Summarise the following report in three bullet points. " * 40

BODIES = {
    "openai small": (OPENAI, {"model": "auto", "messages": [
        {"role": "user", "content": "What is the capital of France?"}]}),
    "openai typical": (OPENAI, {
        "model": "auto", "temperature": 0.2, "max_tokens": 512, "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": _LONG},
        ]}),
    "openai tools": (OPENAI, {
        "model": "auto", "tool_choice": "auto",
        "tools": [{"type": "function", "function": {
            "name": f"tool_{i}", "description": "Look something up.",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}
            for i in range(4)],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "tool_0", "arguments": "{\"q\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C, cloudy"},
        ]}),
    "anthropic small": (ANTHROPIC, {"model": "auto", "max_tokens": 256, "messages": [
        {"role": "user", "content": "What is the capital of France?"}]}),
    "anthropic typical": (ANTHROPIC, {
        "model": "auto", "max_tokens": 1024, "temperature": 0.3, "stream": True,
        "system": "You are a concise assistant.",
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]},
            {"role": "user", "content": [{"type": "text", "text": _LONG}]},
        ]}),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loops", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    for name, (protocol, data) in BODIES.items():
        body = orjson.dumps(data)
        parse = protocol.parse_request
        parse(body)
        runs = []
        for _ in range(args.repeat):
            start = time.process_time()
            for _ in range(args.loops):
                parse(body)
            runs.append((time.process_time() - start) / args.loops * 1e6)
        print(f"{name:18} {len(body):6d} B  median {statistics.median(runs):6.2f} us"
              f"  min {min(runs):6.2f} us")


if __name__ == "__main__":
    main()
