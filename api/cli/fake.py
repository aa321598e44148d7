"""``llm-router fake-upstream``: a fake LLM provider, for trying the router with no account.

::

    llm-router fake-upstream [--host 127.0.0.1] [--port 9100] [--latency 0.5]

It serves the fake provider the test suite uses (``engine.testing.fake_upstream``): the real
OpenAI Chat Completions and Anthropic Messages wire formats, JSON and SSE, under any backend
name, answering ``[NAME] <the last user message>`` after ``--latency`` seconds (long enough
for two identical requests to overlap, so dedup can be seen). ``config.demo.yaml`` points
every tier of a router at it. ``POST /_fake/fail/NAME`` makes backend ``NAME`` answer 503
until ``POST /_fake/recover/NAME``: failover, from the command line.

It prints its base URLs, then serves until SIGINT (Ctrl-C) or SIGTERM. Exit status 0 when
stopped, 1 when the address cannot be listened on, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from typing import Any

__all__ = ["DEMO_BACKENDS", "add_command", "describe", "run_command"]

#: The backends ``config.demo.yaml`` uses: (name, provider), one per tier.
DEMO_BACKENDS = (("small", "openai"), ("medium", "anthropic"), ("large", "openai"))


def _latency(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 60:
        raise argparse.ArgumentTypeError(f"expected seconds from 0 to 60, got {text!r}")
    return value


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {text!r}")
    return int(text)


def add_command(commands: Any) -> None:
    """Add ``fake-upstream`` to the ``llm-router`` parser's subcommands."""
    fake = commands.add_parser(
        "fake-upstream", help="serve a fake OpenAI/Anthropic provider (no keys, no network) "
        "to try the router with config.demo.yaml",
    )
    fake.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    fake.add_argument("--port", type=_port, default=9100,
                      help="port (default 9100, the one config.demo.yaml uses; 0: any free)")
    fake.add_argument("--latency", type=_latency, default=0.5,
                      help="seconds before each answer (default 0.5)")


def describe(url: str, *, latency: float) -> str:
    """What the command prints once listening: base URLs per provider and demo backend,
    and how to make a backend fail.

    >>> print(describe("http://127.0.0.1:9100", latency=0.5).splitlines()[0])
    llm-router fake-upstream listening on http://127.0.0.1:9100
    """
    lines = [
        f"llm-router fake-upstream listening on {url}",
        f"Any backend NAME works; it answers \"[NAME] <last user message>\" after "
        f"{latency:g} s. Base URLs:",
        f"  provider: openai     base_url: {url}/NAME/v1",
        f"  provider: anthropic  base_url: {url}/NAME",
        "config.demo.yaml's backends:",
        *(f"  {name:<7} {provider:<10} {url}/{name}{'/v1' if provider == 'openai' else ''}"
          for name, provider in DEMO_BACKENDS),
        "Make a backend fail (503) and recover:",
        f"  curl -X POST {url}/_fake/fail/NAME",
        f"  curl -X POST {url}/_fake/recover/NAME",
        "Stop with Ctrl-C or SIGTERM.",
    ]
    return "\n".join(lines)


def run_command(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; the exit status."""
    import trio

    from engine.testing import Behaviour, open_fake_upstream

    async def serve() -> None:
        # The receiver is open before the URL is printed: a signal sent as soon as the URL is
        # seen stops the server instead of killing the process.
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with open_fake_upstream(host=args.host, port=args.port,
                                          default=Behaviour(latency=args.latency)) as fake:
                print(describe(fake.url, latency=args.latency), flush=True)
                async for signum in signals:
                    print(f"llm-router fake-upstream: {signal.Signals(signum).name}, stopping",
                          file=sys.stderr, flush=True)
                    break

    failed: list[BaseException] = []
    try:
        trio.run(serve)
    except* OSError as group:  # binding failed, before anything was served
        failed.extend(group.exceptions)
    if failed:
        error = failed[0]
        while isinstance(error, BaseExceptionGroup):  # nurseries nest what they raise
            error = error.exceptions[0]
        reason = getattr(error, "strerror", None) or error
        print(f"llm-router: fake-upstream cannot listen on {args.host}:{args.port}: {reason}",
              file=sys.stderr)
        return 1
    return 0
