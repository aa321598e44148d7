"""The ``llm-router`` command.

::

    llm-router [--config FILE] [--addr HOST:PORT | :PORT]    serve
        (defaults: config.yaml, 127.0.0.1:8080)
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

from . import fake as fake_cli
from . import keys as keys_cli
from . import workflow as workflow_cli

__all__ = ["main", "parse_addr"]

EXIT_CONFIG = 2


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
    if addr.isdigit():
        raise ValueError(f"--addr must be HOST:PORT or :PORT: did you mean :{addr}?")
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--addr must be HOST:PORT or :PORT, got {addr!r}")
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"--addr {addr}: port {port} is out of range (0-65535)")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def _parser(*, router: bool = False) -> argparse.ArgumentParser:
    """The argument parser. The ``router`` commands' module (numpy, the trained router) is
    imported only when they are used, so serving starts without it."""
    parser = argparse.ArgumentParser(
        prog="llm-router", description="Cost-optimizing LLM gateway and workflow engine."
    )
    parser.add_argument("--config", default="config.yaml", help="config file (config.yaml)")
    parser.add_argument("--addr", default="127.0.0.1:8080", help="HOST:PORT or :PORT")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    parser.add_argument("--version", action="version", version=f"llm-router {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = commands.add_parser("check", help="validate a config file and print every problem")
    check.add_argument("file")
    serve = commands.add_parser("serve", help="run the router (the default command)")
    serve.add_argument("--config", default=argparse.SUPPRESS)
    serve.add_argument("--addr", default=argparse.SUPPRESS)
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


def _serve(config_path: str, addr: str) -> int:
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

    from api.http.server import run_server

    for model in config.models:
        if model.missing_env:
            logging.getLogger("llm_router").warning(
                "%s: environment variable %s is not set; requests to it will fail",
                model.name, model.missing_env,
            )
    try:
        run_server(config, host=host, port=port)
    except OSError as exc:  # raised while binding, before anything started
        print(f"llm-router: cannot listen on {addr}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # start-up failed (e.g. a model file): one line, no traceback
        print(f"llm-router: start-up failed: {_innermost(exc)}", file=sys.stderr)
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
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("httpx", "httpcore"):  # they log every request at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
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
    return _serve(args.config, args.addr)


if __name__ == "__main__":
    sys.exit(main())
