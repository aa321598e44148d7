"""The ``llm-router`` command.

::

    llm-router [--config FILE] [--addr HOST:PORT | :PORT] [--workers N]   serve
        (defaults: config.yaml, 127.0.0.1:8080, 1 process; N > 1 needs state.redis_url)
    llm-router check FILE                                      validate a config; exit 2 on problems
    llm-router fake-upstream [--port 9100] [--host 127.0.0.1]   a fake provider for a first try
    llm-router workflow validate|plan|run FILE ...             see api/cli/workflow.py
    llm-router workflow status|watch|cancel RUN_ID, runs       see api/cli/runs.py
    llm-router router eval|train DATA.jsonl ...                see api/cli/router.py
    llm-router --version
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from . import fake as fake_cli
from . import keys as keys_cli
from . import workflow as workflow_cli
from .logs import FORMATS, configure_logging

__all__ = ["main", "parse_addr", "worker_count"]

EXIT_CONFIG = 2
MAX_WORKERS = 64  # api.http.workers.MAX_WORKERS, without importing the server to parse
NO_REDIS = (
    "--workers {n} needs state.redis_url in the config: without Redis each process would keep "
    "its own response cache, in-flight dedup, backend health, totals and workflow runs, so "
    "answers would depend on which process took the connection"
)


def _version() -> str:
    try:
        return version("llm-router")
    except PackageNotFoundError:
        return "0+unknown"


def parse_addr(addr: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``:PORT`` (all interfaces) to ``(host, port)``.

    >>> parse_addr(":8080"), parse_addr("127.0.0.1:9"), parse_addr("[::1]:80")
    (('0.0.0.0', 8080), ('127.0.0.1', 9), ('::1', 80))
    >>> parse_addr("http://127.0.0.1:8090")
    Traceback (most recent call last):
    ...
    ValueError: --addr takes HOST:PORT without a scheme: did you mean 127.0.0.1:8090?
    >>> parse_addr("8080")
    Traceback (most recent call last):
    ...
    ValueError: --addr must be HOST:PORT or :PORT: did you mean :8080?
    """
    _, found, rest = addr.partition("://")
    if found:
        raise ValueError(f"--addr takes HOST:PORT without a scheme: did you mean "
                         f"{rest.rstrip('/')}?")
    if addr.isascii() and addr.isdigit():
        raise ValueError(f"--addr must be HOST:PORT or :PORT: did you mean :{addr}?")
    host, sep, port = addr.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()):
        raise ValueError(f"--addr must be HOST:PORT or :PORT, got {addr!r}")
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"--addr {addr}: port {port} is out of range (0-65535)")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def worker_count(text: str) -> int:
    """``--workers``: a whole number of processes, 1 to 64.

    >>> worker_count("4")
    4
    >>> worker_count("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be 1 to 64, got 0
    """
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if not 1 <= count <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_WORKERS}, got {count}")
    return count


def _worker_fds(text: str) -> tuple[int, int]:
    listen, _, control = text.partition(",")
    return int(listen), int(control)


def _parser(*, router: bool = False) -> argparse.ArgumentParser:
    """The argument parser. The ``router`` commands' module (numpy, the trained router) is
    imported only when they are used, so serving starts without it."""
    parser = argparse.ArgumentParser(
        prog="llm-router", description="Cost-optimizing LLM gateway and workflow engine."
    )
    parser.add_argument("--config", default="config.yaml", help="config file (config.yaml)")
    parser.add_argument("--addr", default="127.0.0.1:8080", help="HOST:PORT or :PORT")
    parser.add_argument("--workers", type=worker_count, default=1,
                        help="server processes on the address (1); more than 1 needs "
                             "state.redis_url")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", default="text", choices=FORMATS,
                        help="log lines as text (the default) or one JSON object each")
    parser.add_argument("--log-prompts", action="store_true",
                        help="access lines of chat requests show the last message's text")
    # Internal: how the parent of --workers starts a worker (see api/http/workers.py).
    parser.add_argument("--worker-fds", type=_worker_fds, help=argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version=f"llm-router {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = commands.add_parser("check", help="validate a config file and print every problem")
    check.add_argument("file")
    serve = commands.add_parser("serve", help="run the router (the default command)")
    serve.add_argument("--config", default=argparse.SUPPRESS)
    serve.add_argument("--addr", default=argparse.SUPPRESS)
    serve.add_argument("--workers", type=worker_count, default=argparse.SUPPRESS)
    serve.add_argument("--log-prompts", action="store_true", default=argparse.SUPPRESS)
    workflow_cli.add_commands(commands)
    keys_cli.add_command(commands)
    fake_cli.add_command(commands)
    if router:
        from .router import add_router_commands

        add_router_commands(commands)
    else:
        commands.add_parser("router", help="evaluate or train the request router "
                            "(llm-router router eval|train ...)")
    return parser


def _check(path: str) -> int:
    from engine.core import load_config
    from engine.errors import ConfigInvalid

    try:
        config = load_config(path)
    except ConfigInvalid as exc:
        print(f"{path}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    for model in config.models:
        if model.missing_env:
            print(f"{path}: warning: models[{config.models.index(model)}].api_key: "
                  f"environment variable {model.missing_env} is not set "
                  f"(the router starts; {model.name} answers with an error)")
    print(f"{path}: ok ({len(config.models)} models, tiers {config.tiers})")
    return 0


def _serve(args: argparse.Namespace) -> int:
    config_path, addr, workers = args.config, args.addr, args.workers
    from engine.core import load_config
    from engine.errors import ConfigInvalid

    try:
        host, port = parse_addr(addr)
    except ValueError as exc:
        print(f"llm-router: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        config = load_config(config_path)
    except ConfigInvalid as exc:
        print(f"llm-router: {config_path}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.log_prompts:
        config = config.model_copy(
            update={"server": config.server.model_copy(update={"log_prompts": True})})
    if workers > 1 and config.state.redis_url is None:
        print(f"llm-router: {NO_REDIS.format(n=workers)}", file=sys.stderr)
        return EXIT_CONFIG
    if args.worker_fds is not None:
        return _serve_as_worker(config, host, port, args.worker_fds)

    from api.http.server import run_server
    from api.http.workers import run_workers

    def worker_command(listen_fd: int, control_fd: int) -> list[str]:
        return [sys.executable, "-m", "api.cli", "--config", config_path, "--addr", addr,
                "--log-level", args.log_level, "--log-format", args.log_format,
                *(["--log-prompts"] if args.log_prompts else []),
                "--worker-fds", f"{listen_fd},{control_fd}"]

    for model in config.models:
        if model.missing_env:
            logging.getLogger("llm_router").warning(
                "%s: environment variable %s is not set; requests to it will fail",
                model.name, model.missing_env,
            )
    try:
        if workers == 1:
            run_server(config, host=host, port=port)
        else:
            run_workers(config, host=host, port=port, count=workers, command=worker_command)
    except OSError as exc:  # raised while binding, before anything started
        print(f"llm-router: cannot listen on {addr}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # start-up failed (e.g. a model file): one line, no traceback
        print(f"llm-router: start-up failed: {_innermost(exc)}", file=sys.stderr)
        return 1
    return 0


def _serve_as_worker(config: Any, host: str, port: int, fds: tuple[int, int]) -> int:
    """One of the processes of ``--workers N``; its parent already warned about the config."""
    from api.http.workers import run_worker

    try:
        run_worker(config, host=host, port=port, listen_fd=fds[0], control_fd=fds[1])
    except Exception as exc:
        print(f"llm-router: worker start-up failed: {_innermost(exc)}", file=sys.stderr)
        return 1
    return 0


def _innermost(exc: BaseException) -> str:
    """The message of the failure at the bottom of an exception group or chain."""
    while True:
        if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
        elif exc.__cause__ is not None:
            exc = exc.__cause__
        elif exc.__context__ is not None and not exc.__suppress_context__:
            exc = exc.__context__
        else:
            return str(exc) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser(router="router" in argv).parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    if args.command == "check":
        return _check(args.file)
    if args.command == "workflow":
        return workflow_cli.run_command(args)
    if args.command == "keys":
        return keys_cli.run_command(args)
    if args.command == "fake-upstream":
        return fake_cli.run_command(args)
    if args.command == "router":
        from .router import run_router_command

        return run_router_command(args)
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())
