"""``llm-router workflow``: check, plan and run workflows from the command line.

::

    llm-router workflow validate FILE... [--config FILE]
    llm-router workflow plan FILE [--config FILE] [--input TEXT] [--var NAME=VALUE ...] [--json]
    llm-router workflow run FILE [--input TEXT] [--var NAME=VALUE ...] [--server URL]
                                 [--api-key KEY] [--idempotency-key KEY] [--async [--json]]
    llm-router workflow status|watch|cancel RUN_ID ...    see api/cli/runs.py
    llm-router workflow runs [--status STATUS] [--limit N] [--json]

``FILE`` is a workflow's YAML file, or the name of a ready pipeline (``debate``). ``validate``
and ``plan`` work offline: a name is looked up in the config's ``workflows.dir``, then among
the pipelines that ship with llm-router, and template files come from the config's
``workflows.templates_dir`` (the shipped ``templates/`` for a shipped pipeline). ``run`` asks
a running router: a file's text is posted to ``/v1/workflows``, a name to
``/v1/workflows/{name}`` (the router's own pipeline and templates). ``--input -`` reads the
input from standard input; without ``--input`` none is sent, which the router refuses unless
the workflow declares its input optional.

``run`` prints progress to standard error as the router reports it (the run's id as it
starts, each op started, finished with its model, cost, time and the start of its answer,
failed, or skipped), then the final output alone to standard output, so it can be piped or
redirected. If the connection drops once the run has started, it follows the run's events
again from where it was (the run goes on at the router either way). With ``--async`` it
prints the new run's id and returns at once.

Exit status: 0 success; 1 the run failed or finished partially, or the router could not be
reached; 2 an invalid workflow, config, variable or request; 3 the run was cancelled.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .failure import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, CommandFailed
from .header_args import header_text
from .progress import Follower, Progress
from .runs import COMMANDS as RUN_COMMANDS
from .runs import add_router_options, add_run_commands, follow_run

if TYPE_CHECKING:  # the commands import the engine (and httpx) only when they run
    from engine.core import Config
    from engine.errors import WorkflowInvalid

    from .remote import Router

__all__ = ["CommandFailed", "add_commands", "coerce_variables", "run_command"]

_SHIPPED = Path(__file__).resolve().parents[2]  # the checkout's workflows/ and templates/
_NAME = re.compile(r"[A-Za-z0-9_-]+")


# ---- the command line ----------------------------------------------------------------------


def _variable(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def add_commands(commands: Any) -> None:
    """Add ``workflow validate|plan|run|status|watch|cancel|runs`` to the ``llm-router``
    parser's subcommands."""
    workflow = commands.add_parser("workflow", help="validate, plan, run and follow workflows")
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
    add_router_options(run)
    run.add_argument("--async", dest="run_async", action="store_true",
                     help="submit the run and print its id at once (follow it with "
                          "`workflow watch RUN_ID`)")
    run.add_argument("--idempotency-key", default=None, metavar="KEY",
                     type=header_text(max_length=255),
                     help="a retried submission with the same key gets the same run, not "
                          "another")
    run.add_argument("--json", action="store_true",
                     help="with --async: print the router's answer as JSON")
    add_run_commands(actions)


def run_command(args: argparse.Namespace) -> int:
    """Run the ``workflow`` subcommand ``args`` names; return the exit status."""
    command = {"validate": _validate, "plan": _plan, "run": _run,
               **RUN_COMMANDS}[args.workflow_command]
    try:
        return command(args)
    except CommandFailed as exc:
        print(f"llm-router: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("llm-router: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
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
    from .remote import open_router

    if args.json and not args.run_async:
        raise CommandFailed("--json goes with --async (a followed run prints its final "
                            "output; `workflow status RUN_ID --json` prints its record)")
    path = Path(args.file)
    body: dict[str, Any] = {"async": True} if args.run_async else {"stream": True}
    if args.input is not None:
        body["input"] = _input(args.input)
    headers = {"idempotency-key": args.idempotency_key} if args.idempotency_key else {}
    with open_router(args.server, args.api_key) as router:
        if path.is_file():
            text = _read(path)
            url, body["workflow"] = "/v1/workflows", text
            defaults = _declared_defaults(text) if args.var else {}
        elif _NAME.fullmatch(args.file):
            url = f"/v1/workflows/{args.file}"
            defaults = _served_defaults(router, args.file) if args.var else {}
        else:
            raise CommandFailed(f"{args.file}: no such file")
        if args.var:
            body["variables"] = coerce_variables(args.var, defaults)
        if args.run_async:
            return _submitted(router.call("POST", url, body=body, headers=headers),
                              as_json=args.json)
        return follow_run(router, Follower(Progress(sys.stderr)),
                          partial(router.events, "POST", url, body=body, headers=headers))


def _submitted(response: Any, *, as_json: bool) -> int:
    """Print an async submission's answer: the run's id alone, or the whole answer."""
    from .remote import json_of

    answer = json_of(response)
    run_id = answer["run_id"]
    print(json.dumps(answer, indent=2) if as_json else run_id)
    if response.headers.get("idempotent-replayed") == "true":
        state = f"is the earlier run with this Idempotency-Key ({answer['status']})"
    else:
        state = f"is {answer['status']}"
    print(f"llm-router: {run_id} {state}; follow it: llm-router workflow watch {run_id}",
          file=sys.stderr)
    return 0


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


def _served_defaults(router: Router, name: str) -> dict[str, Any]:
    """The variables of the router's ready pipeline ``name`` (``GET /v1/workflows``)."""
    from .remote import json_of

    for entry in json_of(router.call("GET", "/v1/workflows")).get("workflows", []):
        if entry.get("name") == name:
            return {var: spec.get("default") for var, spec in entry["variables"].items()}
    return {}
