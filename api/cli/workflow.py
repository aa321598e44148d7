"""``llm-router workflow``: check, plan and run workflows from the command line.

::

    llm-router workflow validate FILE... [--config FILE]
    llm-router workflow plan FILE [--config FILE] [--input TEXT] [--var NAME=VALUE ...] [--json]
    llm-router workflow run FILE [--input TEXT] [--var NAME=VALUE ...] [--server URL]
                                               [--api-key KEY]

``FILE`` is a workflow's YAML file, or the name of a ready pipeline (``debate``). ``validate``
and ``plan`` work offline: a name is looked up in the config's ``workflows.dir``, then among
the pipelines that ship with llm-router, and template files come from the config's
``workflows.templates_dir`` (the shipped ``templates/`` for a shipped pipeline). ``run`` asks
a running router: a file's text is posted to ``/v1/workflows``, a name to
``/v1/workflows/{name}`` (the router's own pipeline and templates). ``--input -`` reads the
input from standard input; without ``--input`` none is sent, which the router refuses unless
the workflow declares its input optional.

``run`` prints progress to standard error as the router reports it (each op started,
finished with its model, cost, time and the start of its answer, failed, or skipped), then
the final output alone to standard output, so it can be piped or redirected.

Exit status: 0 success; 1 the run failed or finished partially, or the router could not be
reached; 2 an invalid workflow, config, variable or request.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the commands import the engine only when they run
    from engine.core import Config
    from engine.errors import WorkflowInvalid

__all__ = ["CommandFailed", "add_commands", "coerce_variables", "preview", "run_command"]

EXIT_FAILED = 1
EXIT_INVALID = 2
DEFAULT_SERVER = "http://127.0.0.1:8080"

_SHIPPED = Path(__file__).resolve().parents[2]  # the checkout's workflows/ and templates/
_NAME = re.compile(r"[A-Za-z0-9_-]+")
_PREVIEW_CHARS = 72


class CommandFailed(Exception):
    """Ends a command with ``message`` on standard error and exit status ``code``."""

    def __init__(self, message: str, code: int = EXIT_INVALID) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# ---- the command line ----------------------------------------------------------------------


def _variable(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def add_commands(commands: Any) -> None:
    """Add ``workflow validate|plan|run`` to the ``llm-router`` parser's subcommands."""
    workflow = commands.add_parser("workflow", help="validate, plan or run a workflow")
    actions = workflow.add_subparsers(dest="workflow_command", metavar="ACTION", required=True)
    file_help = "a workflow YAML file, or the name of a ready pipeline (e.g. debate)"
    config_help = "the router's config (models, prices, workflow folders; default config.yaml)"
    var_help = "override a workflow variable (repeatable)"

    validate = actions.add_parser("validate", help="check workflows; print every problem")
    validate.add_argument("files", nargs="+", metavar="file", help=file_help)
    validate.add_argument("--config", dest="workflow_config", help=config_help)

    plan = actions.add_parser("plan", help="show the DAG, critical path and cost estimate")
    plan.add_argument("file", help=file_help)
    plan.add_argument("--config", dest="workflow_config", help=config_help)
    plan.add_argument("--input", default="", help="the workflow input to estimate with "
                      "('-': standard input)")
    plan.add_argument("--var", action="append", type=_variable, default=[],
                      metavar="NAME=VALUE", help=var_help)
    plan.add_argument("--json", action="store_true", help="print the estimate as JSON")

    run = actions.add_parser("run", help="run a workflow on a running router, with progress")
    run.add_argument("file", help=file_help)
    run.add_argument("--input", default=None, help="the workflow input ('-': standard input); "
                     "required unless the workflow declares its input optional")
    run.add_argument("--var", action="append", type=_variable, default=[],
                     metavar="NAME=VALUE", help=var_help)
    run.add_argument("--server", default=DEFAULT_SERVER,
                     help=f"the router's URL (default {DEFAULT_SERVER})")
    run.add_argument("--api-key", default=None, help="a client key, if the router wants one")


def run_command(args: argparse.Namespace) -> int:
    """Run the ``workflow`` subcommand ``args`` names; return the exit status."""
    command = {"validate": _validate, "plan": _plan, "run": _run}[args.workflow_command]
    try:
        return command(args)
    except CommandFailed as exc:
        print(f"llm-router: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("llm-router: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`... | head`): not worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


# ---- shared --------------------------------------------------------------------------------


def _config(args: argparse.Namespace, *, required: bool) -> Config | None:
    """The config named by ``--config`` (or the top-level one, default config.yaml); without
    ``required``, none when the default file does not exist."""
    from engine.core import load_config
    from engine.errors import ConfigInvalid

    path = args.workflow_config or args.config
    if not required and args.workflow_config is None and not Path(path).is_file():
        return None
    try:
        return load_config(path)
    except ConfigInvalid as exc:
        problems = "\n  ".join(exc.problems)
        raise CommandFailed(f"{path}: invalid configuration:\n  {problems}") from None


def _locate(spec: str, config: Config | None) -> tuple[Path, Path | None]:
    """The workflow file ``spec`` names, and the templates folder to load it with."""
    folder = config.path(config.workflows.dir) if config else Path("workflows")
    templates = config.path(config.workflows.templates_dir) if config else Path("templates")
    candidates = [(Path(spec), templates)]
    if _NAME.fullmatch(spec):
        candidates += [(folder / f"{spec}.yaml", templates),
                       (_SHIPPED / "workflows" / f"{spec}.yaml", _SHIPPED / "templates")]
    for path, with_templates in candidates:
        if path.is_file():
            return path, with_templates if with_templates.is_dir() else None
    ready = sorted({p.stem for root in (folder, _SHIPPED / "workflows")
                    for p in root.glob("*.yaml")})
    raise CommandFailed(f"{spec}: no such file, and no ready pipeline of that name "
                        f"(ready: {', '.join(ready) or 'none'})")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandFailed(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}"
                            ) from None


def _input(value: str) -> str:
    return sys.stdin.read() if value == "-" else value


def _limits(config: Config | None) -> Any:
    from engine.core import WorkflowLimits

    return WorkflowLimits() if config is None else config.workflows


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("s" if n != 1 else "")


def coerce_variables(pairs: Iterable[tuple[str, str]], defaults: Mapping[str, Any]
                     ) -> dict[str, Any]:
    """``--var`` values as the kind of their declared defaults: numbers for a number,
    ``true``/``false`` for a boolean, JSON scalars for a null default, else text.
    Undeclared names stay text; the router names them in its answer.

    >>> coerce_variables([("n", "3"), ("t", "x"), ("b", "no"), ("u", "1.5")],
    ...                  {"n": 2, "t": "y", "b": True})
    {'n': 3, 't': 'x', 'b': False, 'u': '1.5'}
    """
    values: dict[str, Any] = {}
    for name, raw in pairs:
        default = defaults.get(name, "")
        if isinstance(default, bool):
            flags = {"true": True, "yes": True, "on": True, "1": True,
                     "false": False, "no": False, "off": False, "0": False}
            if raw.lower() not in flags:
                raise CommandFailed(f"--var {name}: expected true or false, got {raw!r}")
            values[name] = flags[raw.lower()]
        elif isinstance(default, int | float):
            try:
                number: float = int(raw)
            except ValueError:
                try:
                    number = float(raw)
                except ValueError:
                    number = math.nan
            if not math.isfinite(number):
                raise CommandFailed(f"--var {name}: expected a number, got {raw!r}")
            values[name] = number
        elif default is None:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw
            values[name] = parsed if isinstance(parsed, str | int | float | bool) or (
                parsed is None) else raw
        else:
            values[name] = raw
    return values


# ---- validate and plan ---------------------------------------------------------------------


def _validate(args: argparse.Namespace) -> int:
    config = _config(args, required=False)
    status = 0
    for spec in args.files:
        try:
            status = max(status, _validate_one(spec, config))
        except CommandFailed as exc:
            print(f"llm-router: {exc.message}", file=sys.stderr)
            status = max(status, exc.code)
    return status


def _validate_one(spec: str, config: Config | None) -> int:
    from engine.core import check_workflow, load_workflow, plan_workflow

    path, templates = _locate(spec, config)
    text = _read(path)
    limits = _limits(config)
    models = [m.name for m in config.models] if config is not None else None
    problems = check_workflow(text, limits=limits, templates_dir=templates, models=models)
    if problems:
        _print_problems(path, problems)
        return EXIT_INVALID
    workflow = load_workflow(text, limits=limits, templates_dir=templates, models=models)
    levels = plan_workflow(workflow).generations
    print(f"{path}: ok ({_count(len(workflow.ops), 'op')} in {_count(len(levels), 'level')}: "
          + " -> ".join(", ".join(level) for level in levels) + ")")
    return 0


def _print_problems(path: Path, problems: Iterable[WorkflowInvalid]) -> None:
    found = list(problems)
    print(f"{path}: {_count(len(found), 'problem')}", file=sys.stderr)
    for problem in found:
        print(f"  {problem.describe()}", file=sys.stderr)


def _plan(args: argparse.Namespace) -> int:
    from engine.core import describe_plan, estimate_costs, load_workflow
    from engine.errors import WorkflowInvalid

    config = _config(args, required=True)
    assert config is not None
    path, templates = _locate(args.file, config)
    models = [m.name for m in config.models]
    try:
        workflow = load_workflow(_read(path), limits=_limits(config), templates_dir=templates,
                                 models=models)
    except WorkflowInvalid as exc:
        _print_problems(path, exc.problems)
        return EXIT_INVALID
    try:
        variables = coerce_variables(args.var, workflow.variables)
        estimate = estimate_costs(workflow, config, input=_input(args.input),
                                  variables=variables, decide=_routing(config))
    except WorkflowInvalid as exc:
        raise CommandFailed(f"{path}: {exc.describe()}") from None
    if args.json:
        print(json.dumps(estimate, indent=2))
        return 0
    print(describe_plan(workflow, estimate=estimate))
    print("generations: " + " -> ".join(f"[{', '.join(g)}]" for g in estimate["generations"]))
    return 0


def _routing(config: Config) -> Any:
    """The routing decision a router started with ``config`` would make now (its
    ``RoutingPolicy.decide``): its trained router and its calibrated thresholds."""
    import trio

    from engine.errors import RouterError
    from engine.runtime import load_offline_policy

    try:
        policy, warning = trio.run(load_offline_policy, config)
    except RouterError as exc:
        raise CommandFailed(f"learned.model: {exc.message}") from None
    if warning is not None:
        print(f"llm-router: warning: {warning}; estimating with the configured thresholds",
              file=sys.stderr)
    return policy.decide


# ---- run -----------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    import httpx

    server = args.server.rstrip("/")
    headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    path = Path(args.file)
    body: dict[str, Any] = {"stream": True}
    if args.input is not None:
        body["input"] = _input(args.input)
    try:
        with httpx.Client(headers=headers, timeout=httpx.Timeout(30.0, read=None)) as http:
            if path.is_file():
                text = _read(path)
                url, body["workflow"] = f"{server}/v1/workflows", text
                defaults = _declared_defaults(text) if args.var else {}
            elif _NAME.fullmatch(args.file):
                url = f"{server}/v1/workflows/{args.file}"
                defaults = _served_defaults(http, server, args.file) if args.var else {}
            else:
                raise CommandFailed(f"{args.file}: no such file")
            if args.var:
                body["variables"] = coerce_variables(args.var, defaults)
            with http.stream("POST", url, json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise CommandFailed(_error_message(response.content),
                                        EXIT_INVALID if response.status_code < 500
                                        else EXIT_FAILED)
                return _follow(_sse(response.iter_bytes()), Progress(sys.stderr))
    except httpx.TransportError as exc:
        raise CommandFailed(f"cannot reach the router at {server}: "
                            f"{exc or type(exc).__name__}", EXIT_FAILED) from None


def _declared_defaults(text: str) -> dict[str, Any]:
    """The variables a workflow's text declares, for ``--var``; none if it does not parse
    (the router then explains what is wrong)."""
    from engine.core import check_variables, parse_yaml
    from engine.errors import WorkflowInvalid

    try:
        data = parse_yaml(text, max_bytes=16 * 1024 * 1024)
        return check_variables(data.get("variables"))[0] if isinstance(data, dict) else {}
    except WorkflowInvalid:
        return {}


def _served_defaults(http: Any, server: str, name: str) -> dict[str, Any]:
    """The variables of the router's ready pipeline ``name`` (``GET /v1/workflows``)."""
    response = http.get(f"{server}/v1/workflows")
    if response.status_code != 200:
        return {}
    for entry in response.json().get("workflows", []):
        if entry.get("name") == name:
            return {var: spec.get("default") for var, spec in entry["variables"].items()}
    return {}


def _error_message(body: bytes) -> str:
    try:
        error = json.loads(body)["error"]
        return str(error["message"])
    except (ValueError, KeyError, TypeError):
        return body.decode(errors="replace")[:500] or "the router answered with an error"


def _sse(chunks: Iterable[bytes]) -> Iterator[tuple[str, Any]]:
    """``(event, data)`` pairs of an SSE body as it arrives, its data parsed as JSON."""
    from engine.wire import SSEDecoder

    decoder = SSEDecoder()

    def batches() -> Iterator[list[tuple[str, str]]]:
        for chunk in chunks:
            yield decoder.feed(chunk)
        yield decoder.close()

    for event, data in itertools.chain.from_iterable(batches()):
        if data:
            yield event or "message", json.loads(data)


def preview(text: str | None, width: int = _PREVIEW_CHARS) -> str:
    """One line of ``text``: whitespace collapsed, cut at ``width`` characters.

    >>> preview("Three r's.\\n\\nStep 1: count them " + "x" * 80, 30)
    "Three r's. Step 1: count th..."
    """
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


class Progress:
    """Writes one line per progress event, each with the time since the run began."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.began = time.monotonic()

    def line(self, what: str, op: str, detail: str = "") -> None:
        elapsed = time.monotonic() - self.began
        print(f"[{elapsed:6.1f}s] {what:<8} {op:<16} {detail}".rstrip(), file=self.out,
              flush=True)

    def event(self, name: str, data: dict[str, Any]) -> None:
        op = str(data.get("op", ""))
        if name == "op_started":
            route = f"model {data['model']}" if data.get("model") else (
                f"tier {data['tier']}" if data.get("tier") is not None else "routed by score")
            self.line("started", op, route)
        elif name == "op_finished":
            notes = [f"{data.get('model')} (tier {data.get('tier')})",
                     f"${data.get('cost_usd', 0):.6f}", f"{data.get('ms', 0):.0f} ms"]
            if data.get("cache") == "HIT":
                notes.append("cache hit")
            if data.get("attempts", 1) > 1:
                notes.append(f"{data['attempts']} attempts")
            self.line("done", op, "  ".join(notes) + f"  | {preview(data.get('output'))}")
        elif name == "op_failed":
            self.line("FAILED", op, str(data.get("error", "")))
        elif name == "op_skipped":
            why = ("not run: the budget (max_cost_usd) is spent"
                   if data.get("reason") == "not_run" else "skipped: an input failed or did "
                   "not run")
            self.line("skipped", op, why)


def _follow(events: Iterable[tuple[str, Any]], progress: Progress) -> int:
    """Show a run's progress; print its final output; return the exit status."""
    for name, data in events:
        if name == "result":
            return _finish(data, progress)
        if name == "error":
            error = data.get("error", {}) if isinstance(data, dict) else {}
            raise CommandFailed(f"the workflow failed: {error.get('message', data)}",
                                EXIT_FAILED)
        progress.event(name, data)
    raise CommandFailed("the router closed the stream before the workflow finished",
                        EXIT_FAILED)


def _finish(result: dict[str, Any], progress: Progress) -> int:
    ops = result.get("ops", {})
    done = sum(1 for op in ops.values() if op.get("status") == "done")
    seconds = result.get("total_ms", 0) / 1000
    summary = (f"{result.get('status')}: {done} of {len(ops)} ops in {seconds:.1f} s, "
               f"${result.get('total_cost_usd', 0):.6f}")
    for key, label in (("failed", "failed"), ("skipped", "skipped"), ("not_run", "not run")):
        if result.get(key):
            summary += f"; {label}: {', '.join(result[key])}"
    print(summary, file=progress.out, flush=True)
    final = result.get("final_output")
    if final is not None:
        print(final)
    else:
        print("(no final output: the end ops did not finish)", file=progress.out)
    return 0 if result.get("status") == "completed" else EXIT_FAILED
