"""What a stream costs when its upstream sends each event as a chunk of its own.

Usage: .venv/bin/python bench/chunked_streams.py [--requests 300] [--rounds 3] [--words 40]

``Gateway.open_stream`` read to its end, one request at a time, against an upstream in a
process of its own (a raw socket server, below) that answers every request with ``--words``
words of an OpenAI chat-completion stream, each SSE event in a chunk of its own (as OpenAI's
and Anthropic's APIs send them) and all of them in one write: what an upstream sends when it
runs ahead of the network, or when the network delivers a burst. Prints the p50, this
process's CPU per stream in each round (the router's alone) and how many body pieces
(batches of events) the router relayed per stream. ``PYTHONPATH`` picks the code measured,
as in bench/ab.sh.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import one_model_config, percentile, run_rounds
from shared_streams import timed_streams

from engine.runtime import open_gateway
from engine.runtime import upstream as upstream_module
from engine.runtime.models import Models

# The upstream: reads a request's head and body (by its Content-Length), writes the answer.
_SERVER = r"""
import socket, sys, threading
answer = open(sys.argv[1], "rb").read()
server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", 0)); server.listen(64); print(server.getsockname()[1], flush=True)
def serve(conn):
    buffer = b""
    while True:
        while b"\r\n\r\n" not in buffer:
            data = conn.recv(65536)
            if not data:
                return
            buffer += data
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(buffer) < length:
            buffer += conn.recv(65536)
        buffer = buffer[length:]
        conn.sendall(answer)
while True:
    threading.Thread(target=serve, args=(server.accept()[0],), daemon=True).start()
"""


def _answer(words: int) -> bytes:
    """An OpenAI chat-completion stream of ``words`` words, an event per chunk."""
    def chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
        event = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        data = b"data: " + json.dumps(event).encode() + b"\n\n"
        return b"%x\r\n%s\r\n" % (len(data), data)
    body = chunk({"role": "assistant", "content": ""})
    body += b"".join(chunk({"content": f" word{i}"}) for i in range(words))
    body += chunk({}, "stop") + b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"
    return (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n" + body)


async def main(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="llmr-bench-"))
    batches = 0
    next_batch = upstream_module.UpstreamStream.next_batch

    async def counted(self: upstream_module.UpstreamStream) -> object:
        nonlocal batches
        batches += 1
        return await next_batch(self)

    upstream_module.UpstreamStream.next_batch = counted  # type: ignore[method-assign]
    (folder / "answer").write_bytes(_answer(args.words))
    server = subprocess.Popen([sys.executable, "-c", _SERVER, str(folder / "answer")],
                              stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        config = one_model_config(f"http://127.0.0.1:{port}/v1", folder / "gateway",
                                  dedup={"enabled": False})
        async with open_gateway(config, models=Models()) as gateway:
            await timed_streams(gateway, 100)
            cpu: list[float] = []
            latency: list[float] = []
            batches = 0
            for _ in range(args.rounds):
                latency += await timed_streams(gateway, args.requests // args.rounds, cpu)
    finally:
        server.kill()
    print(f"Python {sys.version.split()[0]}, {args.requests} streams of {args.words} chunked "
          f"events, one at a time, {args.rounds} rounds")
    print(f"p50 {percentile(latency, 0.5):.3f} ms; CPU ms per stream by round: "
          f"{', '.join(f'{c:.2f}' for c in cpu)} (median {statistics.median(cpu):.2f}); "
          f"batches relayed per stream: {batches / args.requests:.1f}")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    run_rounds(main, __doc__, requests=300, rounds=3, words=40)
