"""Workflow definitions: the YAML of ``POST /v1/workflows`` loaded into checked types. Sans-IO.

A workflow is a DAG of ops, each one LLM call. The documented format (docs/workflows.md)
works unchanged; the additions (all optional) are listed on :class:`Op` and
:class:`Workflow`. Everything is validated by :func:`load_workflow` before anything runs;
it reports every independent problem at once, as one :class:`~engine.errors.WorkflowInvalid`
(a 400) whose ``problems`` each name the op at fault.

Edges may be given on either side: ``input_ops`` on the downstream op, ``output_ops`` on the
upstream one, or both, in which case they must agree. An op's ``inputs`` keep the order of
its ``input_ops`` (or, without them, the YAML order of the ops that list it).

**Message composition** (:func:`render_request`). The op's prompt template, rendered, is the
user message; ``system`` (also a template) is the system prompt. The template sees
``input`` (the workflow's input, in every op), ``vars`` and each variable by its own name,
``params`` (the op's own constants) and ``ops.<name>.output`` / ``ops.<name>.value`` for
any op upstream of it. What an op *receives* per the format (a start op: the workflow input;
any other op: the outputs of its input_ops) is appended after the rendered prompt, separated
by a blank line, unless its templates place it themselves: a start op's templates placing
``input``, any other op's templates referencing any ``ops.<name>``. Several appended outputs
are each put under a ``## <op name>`` heading. So plain prompts ("Find errors in
the reasoning.") work as written, and a template that arranges its inputs gets exactly what
it wrote.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from engine.core.config import WorkflowLimits
from engine.core.planner import Node, Plan, build_plan
from engine.errors import WorkflowInvalid, did_you_mean, echo

from .source import (
    DICT_ATTRIBUTES,
    Scalar,
    check_int,
    check_names,
    check_number,
    check_scalars,
    check_text,
    check_variables,
    describe_value,
    parse_yaml,
    read_template_file,
)
from .template import PromptTemplate, compile_prompt, new_environment

__all__ = [
    "Op",
    "OpOutput",
    "Scalar",
    "Workflow",
    "WorkflowLimits",
    "check_workflow",
    "load_workflow",
]

_TOP_KEYS = frozenset(
    {"name", "description", "input", "variables", "on_error", "max_cost_usd", "max_concurrency",
     "memoize", "start_ops", "end_ops", "ops"}
)
_INPUT_KEYS = frozenset({"optional", "description"})
_OP_KEYS = frozenset(
    {"prompt", "template", "system", "description", "tier", "model", "temperature",
     "max_tokens", "json", "timeout_sec", "retries", "input_ops", "output_ops", "params"}
)
_OP_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}")


@dataclass(frozen=True, slots=True)
class OpOutput:
    """What an op produced: its ``text``, and ``value`` (the parsed JSON of a ``json`` op,
    else the text again)."""

    text: str
    value: Any


@dataclass(frozen=True)
class Op:
    """One LLM call of a workflow.

    ``prompt`` holds the compiled template (from the inline ``prompt`` or the file named by
    ``template_file`` in ``templates/``). ``model`` pins a configured model (else ``tier``,
    else the complexity score routes it); ``json`` asks for JSON mode, and dependents read
    the parsed answer as ``ops.<name>.value``. ``timeout_sec`` and ``retries`` are the
    executor's. ``inputs`` / ``outputs`` are the op's neighbours in declaration order.
    """

    name: str
    prompt: PromptTemplate
    template_file: str | None = None
    system: PromptTemplate | None = None
    description: str | None = None
    tier: int | None = None
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    json: bool = False
    timeout_sec: float | None = None
    retries: int = 0
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    params: Mapping[str, Scalar] = field(default_factory=dict)

    def _templates(self) -> tuple[PromptTemplate, ...]:
        return (self.prompt,) if self.system is None else (self.prompt, self.system)

    @property
    def refs_ops(self) -> frozenset[str]:
        """Ops whose output the templates read (``ops.<name>``)."""
        return frozenset().union(*(t.ops for t in self._templates()))

    @property
    def refs_vars(self) -> frozenset[str]:
        """Workflow variables the templates read."""
        return frozenset().union(*(t.variables for t in self._templates()))

    @property
    def uses_input(self) -> bool:
        """Whether the templates read ``input``."""
        return any(t.uses_input for t in self._templates())

    @property
    def appends_inputs(self) -> bool:
        """Whether what the op receives is appended to its prompt (module docstring)."""
        return not self.uses_input if not self.inputs else not self.refs_ops


@dataclass(frozen=True)
class Workflow:
    """A validated workflow: a DAG of :class:`Op` (``ops`` in YAML order).

    ``edges`` are ``(upstream, downstream)`` pairs. ``variables`` are the declared defaults
    (override them with :func:`resolve_variables`). ``on_error``, ``max_cost_usd`` and
    ``max_concurrency`` are the executor's policy: fail fast or run what still can; a budget
    for one run; how many ops at once. ``memoize``: an op whose rendered request is
    deterministic (``temperature: 0``) and equals one an earlier run of the same tenant
    completed is answered from the run store, at no cost. ``input_optional``: a run may be
    asked for without an input (``input: {optional: true}``); otherwise the API refuses a run
    that sends none.
    """

    ops: dict[str, Op]
    start_ops: tuple[str, ...]
    end_ops: tuple[str, ...]
    edges: tuple[tuple[str, str], ...]
    name: str | None = None
    description: str | None = None
    variables: dict[str, Scalar] = field(default_factory=dict)
    variable_descriptions: dict[str, str] = field(default_factory=dict)
    on_error: Literal["fail_fast", "continue"] = "fail_fast"
    max_cost_usd: float | None = None
    max_concurrency: int | None = None
    input_optional: bool = False
    input_description: str | None = None
    memoize: bool = False


# ---- templates -----------------------------------------------------------------------------


class _Compiler:
    """Compiles each distinct template once per load (a map step reuses one file N times)."""

    def __init__(self, templates_dir: Path | None, limits: WorkflowLimits) -> None:
        self.env = new_environment(render_timeout_sec=limits.render_timeout_sec)
        self.templates_dir = templates_dir
        self.limits = limits
        self._files: dict[str, str] = {}
        self._compiled: dict[str, PromptTemplate] = {}

    def file(self, name: Any, op: str) -> PromptTemplate:
        # A name that is not a string (a YAML mapping: unhashable) is read_template_file's 400.
        text = self._files.get(name) if isinstance(name, str) else None
        if text is None:
            text = read_template_file(
                name, self.templates_dir, max_bytes=self.limits.max_template_bytes, op=op
            )
            self._files[name] = text
        return self.source(text, where=f"template {name!r} (op {op!r})", op=op)

    def source(self, text: str, *, where: str, op: str) -> PromptTemplate:
        if text not in self._compiled:
            self._compiled[text] = compile_prompt(self.env, text, where=where, op=op)
        return self._compiled[text]


# ---- loading -------------------------------------------------------------------------------


class _Problems:
    """Every problem found while loading, in the order found."""

    def __init__(self) -> None:
        self.found: list[WorkflowInvalid] = []

    def add(self, message: str, *, op: str | None = None) -> None:
        self.found.append(WorkflowInvalid(message, op=op))

    def check(self, check: Callable[..., Any], *args: Any) -> Any:
        """``check(*args)``, or ``None`` with its problems kept."""
        try:
            return check(*args)
        except WorkflowInvalid as exc:
            self.found.extend(exc.problems)
            return None


def _check_op_name(name: Any) -> str:
    if not isinstance(name, str):
        reads = ("yes/no/on/off as booleans" if isinstance(name, bool)
                 else "an unquoted number, date or ~ as one")
        raise WorkflowInvalid(
            f"op names must be strings, got {describe_value(name)} (YAML reads {reads}: quote "
            "such names)"
        )
    if not _OP_NAME.fullmatch(name) or name in DICT_ATTRIBUTES:
        raise WorkflowInvalid(
            f"op name {echo(name)} is not allowed: use a letter, then letters, digits, _ or -, at "
            f"most 64 characters, and none of: {', '.join(sorted(DICT_ATTRIBUTES))}", op=name
        )
    return name


def _unknown_key(where: str, key: Any, allowed: Collection[str], op: str | None
                 ) -> WorkflowInvalid:
    hint = did_you_mean(key, allowed) or f" (allowed: {', '.join(sorted(allowed))})"
    return WorkflowInvalid(f"{where}unknown key {echo(str(key))}{hint}", op=op)


def _inline(compiler: _Compiler, value: Any, key: str, op: str) -> PromptTemplate:
    source = check_text(value, key, op)
    return compiler.source(source, where=f"op {op!r} {key}", op=op)


def _check_model(value: Any, op: str, models: Collection[str] | None) -> str | None:
    """A pinned model's name (``None``: no pin; ``auto`` is none); with ``models``, it must be
    one of them."""
    if value is None:
        return None
    if not isinstance(value, str) or not _MODEL_NAME.fullmatch(value):
        raise WorkflowInvalid(f"op {op!r}: model must be a configured model's name, got "
                              f"{describe_value(value)}", op=op)
    if value == "auto":
        return None
    if models is not None and value not in models:
        raise WorkflowInvalid(
            f"op {op!r}: model {echo(value)} is not configured{did_you_mean(value, models)} "
            f"(configured: {', '.join(models)})", op=op,
        )
    return value


def _load_op(name: str, spec: Any, compiler: _Compiler, limits: WorkflowLimits,
             models: Collection[str] | None) -> Op:
    """One op's own definition, every problem of it collected in one error."""
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise WorkflowInvalid(f"op {name!r} must be a mapping, got {describe_value(spec)}", op=name)
    problems = _Problems()
    unknown = [key for key in spec if key not in _OP_KEYS]
    for key in unknown:
        problems.found.append(_unknown_key(f"op {name!r}: ", key, _OP_KEYS, name))
    prompt = None
    if ("prompt" in spec) == ("template" in spec):
        # A misspelt prompt ('promt') was reported just above: saying it is missing too is noise.
        if "prompt" in spec or not any(did_you_mean(k, ("prompt", "template")) for k in unknown):
            problems.add(f"op {name!r} needs exactly one of 'prompt' or 'template'", op=name)
    elif "prompt" in spec:
        prompt = problems.check(_inline, compiler, spec["prompt"], "prompt", name)
    else:
        prompt = problems.check(compiler.file, spec["template"], name)
    system = None
    if spec.get("system") is not None:
        system = problems.check(_inline, compiler, spec["system"], "system", name)
    model = problems.check(_check_model, spec.get("model"), name, models)
    if spec.get("model") not in (None, "auto") and spec.get("tier") is not None:
        problems.add(f"op {name!r}: give either model (a pin) or tier, not both", op=name)

    def optional(key: str, check: Any, *bounds: Any) -> Any:
        value = spec.get(key)
        return None if value is None else problems.check(check, value, key, name, *bounds)

    json_mode = spec.get("json", False)
    if not isinstance(json_mode, bool):
        problems.add(f"op {name!r}: json must be true or false", op=name)
    description = optional("description", check_text)
    params = problems.check(check_scalars, spec.get("params") or {}, "params", name)
    used = frozenset().union(*(t.params for t in (prompt, system) if t is not None))
    for param in sorted(used - set(params or {})) if params is not None else ():
        problems.add(f"op {name!r}: template uses params.{echo(param, raw=True)}, which the "
                     f"op's params do not define{did_you_mean(param, params)}", op=name)
    fields = {
        "tier": optional("tier", check_int, 1, 10),
        "temperature": optional("temperature", check_number, 0, 2),
        "max_tokens": optional("max_tokens", check_int, 1, limits.max_tokens_per_op),
        "timeout_sec": optional("timeout_sec", check_number, 0, 86400),
        "retries": optional("retries", check_int, 0, 10) or 0,
    }
    if problems.found:
        raise WorkflowInvalid.collect(problems.found)
    assert prompt is not None and params is not None
    return Op(name=name, prompt=prompt, template_file=spec.get("template"), system=system,
              description=description, model=model, json=json_mode, params=params, **fields)


def _edges(specs: Mapping[Any, Any], names: Sequence[str], refused: Collection[str],
           problems: _Problems) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """Each op's inputs and outputs, from both sides; references to unknown ops and sides
    that disagree are problems. Ops whose names were refused (already a problem) are left
    out quietly."""
    known = set(names)
    declared: dict[str, dict[str, tuple[str, ...] | None]] = {"input_ops": {}, "output_ops": {}}
    for name in names:
        spec = specs[name]
        for key, table in declared.items():
            value = spec.get(key) if isinstance(spec, dict) else None
            listed = None if value is None else problems.check(check_names, value, key, name)
            if listed is not None:
                for ref in listed:
                    if ref not in known and ref not in refused:
                        problems.add(f"op {name!r}: {key} names unknown op {echo(ref)}"
                                     f"{did_you_mean(ref, names)}", op=name)
                listed = tuple(ref for ref in listed if ref in known)
            table[name] = listed
    ins, outs = declared["input_ops"], declared["output_ops"]
    edges = {(u, n) for n in names for u in ins[n] or ()} | {
        (n, d) for n in names for d in outs[n] or ()
    }
    order = {name: i for i, name in enumerate(names)}
    for up, down in sorted(edges, key=lambda e: (order[e[1]], order[e[0]])):
        listed_in, listed_out = ins[down], outs[up]
        if listed_in is not None and up not in listed_in:
            problems.add(
                f"op {down!r}: op {up!r} lists it in output_ops, but its input_ops "
                f"{list(listed_in)} do not include {up!r}", op=down,
            )
        if listed_out is not None and down not in listed_out:
            problems.add(
                f"op {up!r}: op {down!r} lists it in input_ops, but its output_ops "
                f"{list(listed_out)} do not include {down!r}", op=up,
            )
    # An op's undeclared side lists the ops of its edges in the ops' order. Gathered from
    # the edges, not by asking every op of every op (that was quadratic in the ops: seconds
    # at a few thousand).
    ups: dict[str, list[str]] = {n: [] for n in names}
    downs: dict[str, list[str]] = {n: [] for n in names}
    for up, down in edges:
        ups[down].append(up)
        downs[up].append(down)
    inputs = {n: ins[n] or tuple(sorted(ups[n], key=order.__getitem__)) for n in names}
    outputs = {n: outs[n] or tuple(sorted(downs[n], key=order.__getitem__)) for n in names}
    return inputs, outputs


def _ends(value: Any, key: str, names: Sequence[str], default: tuple[str, ...],
          problems: _Problems) -> tuple[str, ...] | None:
    """``start_ops`` / ``end_ops``: ``None`` if they have a problem."""
    if value is None:
        return default
    listed = problems.check(check_names, value, key, None)
    if listed is None:
        return None
    if not listed:
        problems.add(f"{key} must name at least one op")
        return None
    unknown = [name for name in listed if name not in names]
    for name in unknown:
        problems.add(f"{key} names unknown op {echo(name)}{did_you_mean(name, names)}", op=name)
    return None if unknown else tuple(listed)


def _check_graph(names: Sequence[str], inputs: Mapping[str, tuple[str, ...]],
                 outputs: Mapping[str, tuple[str, ...]], start: tuple[str, ...] | None,
                 end: tuple[str, ...] | None, limits: WorkflowLimits,
                 problems: _Problems) -> Plan | None:
    """The plan, or ``None`` for a cycle (what else the graph needs is left unchecked)."""
    edges = tuple((u, n) for n in names for u in inputs[n])
    plan: Plan | None = problems.check(build_plan, [Node(n) for n in names], edges)
    if plan is None:
        return None
    for name in start or ():
        if inputs[name]:
            problems.add(f"start op {name!r} is not a source: it has input_ops "
                         f"{list(inputs[name])}", op=name)
    for name in end or ():
        if outputs[name]:
            problems.add(f"end op {name!r} is not a sink: its output goes to "
                         f"{list(outputs[name])}", op=name)
    if start is not None:
        reached = set(start)
        frontier = list(start)
        while frontier:
            for succ in outputs[frontier.pop()]:
                if succ not in reached:
                    reached.add(succ)
                    frontier.append(succ)
        for name in names:
            if name not in reached:
                problems.add(f"op {name!r} is not reachable from any start op (start_ops: "
                             f"{', '.join(start)})", op=name)
    if len(plan.generations) > limits.max_depth:
        deep = plan.generations[limits.max_depth][0]
        problems.add(f"op {deep!r} is {limits.max_depth + 1} ops deep; a workflow may be at "
                     f"most {limits.max_depth} deep", op=deep)
    return plan


def _check_references(ops: Mapping[str, Op | None], inputs: Mapping[str, tuple[str, ...]],
                      plan: Plan | None, problems: _Problems) -> None:
    """Templates read only ops upstream of them (without a plan: only ops that exist)."""
    # Each op's ancestors as a bit set (an int, a bit an op): a set of names per op held
    # every op of a chain once per op below it, hundreds of megabytes at a few thousand.
    bit = {name: 1 << i for i, name in enumerate(inputs)}
    ancestors: dict[str, int] = {}
    for level in plan.generations if plan is not None else ():
        for name in level:  # every op's inputs are in an earlier level
            mask = 0
            for i in inputs[name]:
                mask |= bit[i] | ancestors[i]
            ancestors[name] = mask
    for name, op in ops.items():
        for ref in sorted(op.refs_ops) if op is not None else ():
            if ref not in ops:
                problems.add(f"op {name!r}: template references unknown op {echo(ref)}"
                             f"{did_you_mean(ref, ops)}", op=name)
            elif plan is not None and not ancestors[name] & bit.get(ref, 0):
                problems.add(f"op {name!r}: template reads ops.{ref}, but {ref!r} is not "
                             f"upstream of {name!r} (add it to input_ops)", op=name)


def _check_variables_used(op: Op, variables: Mapping[str, Scalar], problems: _Problems) -> None:
    for var in sorted(op.refs_vars):
        if var not in variables:
            declared = ", ".join(variables) or "none"
            problems.add(
                f"op {op.name!r}: template uses undeclared variable {echo(var)}"
                f"{did_you_mean(var, variables)} (declared variables: {declared}; also "
                "available: input, vars, ops, params)", op=op.name,
            )


def _check_input(value: Any) -> tuple[bool, str | None]:
    """``input: {optional: true, description: ...}``: (optional, description)."""
    if value is None:
        return False, None
    if not isinstance(value, dict):
        raise WorkflowInvalid("input must be a mapping such as {optional: true}, got "
                              f"{describe_value(value)}")
    problems = _Problems()
    for key in value:
        if key not in _INPUT_KEYS:
            problems.found.append(_unknown_key("input: ", key, _INPUT_KEYS, None))
    optional = value.get("optional", False)
    if not isinstance(optional, bool):
        problems.add(f"input.optional must be true or false, got {describe_value(optional)}")
    description = value.get("description")
    if description is not None:
        problems.check(check_text, description, "input.description", None)
    if problems.found:
        raise WorkflowInvalid.collect(problems.found)
    return optional, description


def _check_policy(data: dict[Any, Any], limits: WorkflowLimits,
                  problems: _Problems) -> dict[str, Any]:
    """The workflow's own fields besides its ops and variables, as :class:`Workflow`'s."""
    on_error = data.get("on_error", "fail_fast")
    if on_error not in ("fail_fast", "continue"):
        problems.add(f"on_error must be 'fail_fast' or 'continue', got {echo(on_error)}"
                     f"{did_you_mean(on_error, ('fail_fast', 'continue'))}")
    memoize = data.get("memoize", False)
    if not isinstance(memoize, bool):
        problems.add(f"memoize must be true or false, got {describe_value(memoize)}")

    def optional(key: str, check: Any, *bounds: Any) -> Any:
        value = data.get(key)
        return None if value is None else problems.check(check, value, key, None, *bounds)

    optional_input, input_description = problems.check(_check_input, data.get("input")) or (
        False, None)
    return {
        "name": optional("name", check_text),
        "description": optional("description", check_text),
        "on_error": on_error,
        "max_cost_usd": optional("max_cost_usd", check_number, 0, 1e6),
        "max_concurrency": optional("max_concurrency", check_int, 1, limits.max_ops),
        "input_optional": optional_input,
        "input_description": input_description,
        "memoize": memoize is True,
    }


def load_workflow(text: str, *, limits: WorkflowLimits, templates_dir: Path | None,
                  models: Collection[str] | None = None) -> Workflow:
    """Parse and validate a workflow's YAML text.

    Template files named by ops are read from ``templates_dir`` (only files inside it, at
    most ``limits.max_template_bytes`` each); with ``None`` only inline prompts are allowed.
    ``models``: the configured model names, which pinned models must be among (``None``:
    pins are not checked here). ``start_ops`` / ``end_ops`` default to the graph's sources /
    sinks.

    Raises:
        WorkflowInvalid: collecting every problem found (``problems``), each naming its op
            where there is one. The size limit (checked before parsing) and YAML that is
            invalid, not a mapping, or uses anchors/aliases stop the check at once; so do a
            missing ``ops`` and the op-count limit. Otherwise each of these is reported
            independently: unknown keys (with the closest known one) and bad values, each
            op's own definition and templates (refused by the sandbox, or reading an
            attribute an op's output does not have); edges naming unknown ops or whose two
            sides disagree; a cycle (its path; the checks that need an acyclic graph are
            then skipped); start ops that are not sources, end ops that are not sinks; ops
            unreachable from a start op; the depth limit; templates referencing unknown ops,
            ops not upstream, or undeclared variables; pinned models not in ``models``.

    Examples
    --------
    >>> wf = load_workflow("ops: {a: {prompt: Hi}, b: {prompt: Bye, input_ops: [a]}}",
    ...                    limits=WorkflowLimits(), templates_dir=None)
    >>> wf.start_ops, wf.end_ops, wf.edges
    (('a',), ('b',), (('a', 'b'),))
    >>> bad = "ops: {a: {promt: Hi, max_tokens: 99999}, b: {prompt: B, input_ops: [a, c]}}"
    >>> for problem in check_workflow(bad, limits=WorkflowLimits(), templates_dir=None):
    ...     print(problem.message)
    op 'a': unknown key 'promt' (did you mean 'prompt'?)
    op 'a': max_tokens must be an integer from 1 to 32768, got int 99999
    op 'b': input_ops names unknown op 'c'
    """
    data = parse_yaml(text, max_bytes=limits.max_yaml_bytes)
    if not isinstance(data, dict):
        raise WorkflowInvalid(f"workflow YAML must be a mapping, got {describe_value(data)}")
    problems = _Problems()
    for key in data:
        if key not in _TOP_KEYS:
            problems.found.append(_unknown_key("", key, _TOP_KEYS, None))
    declared = problems.check(check_variables, data.get("variables"))
    specs = data.get("ops")
    if not isinstance(specs, dict) or not specs:
        problems.add("ops must be a mapping of at least one op")
        raise WorkflowInvalid.collect(problems.found)
    if len(specs) > limits.max_ops:
        problems.add(f"a workflow may have at most {limits.max_ops} ops, "
                     f"this one has {len(specs)}")
        raise WorkflowInvalid.collect(problems.found)
    compiler = _Compiler(templates_dir, limits)
    ops: dict[str, Op | None] = {}
    refused: set[str] = set()
    for name, spec in specs.items():
        if problems.check(_check_op_name, name) is None:
            if isinstance(name, str):
                refused.add(name)
            continue
        ops[name] = problems.check(_load_op, name, spec, compiler, limits, models)
    names = list(ops)
    inputs, outputs = _edges(specs, names, refused, problems)
    start = _ends(data.get("start_ops"), "start_ops", names,
                  tuple(n for n in names if not inputs[n]), problems)
    end = _ends(data.get("end_ops"), "end_ops", names,
                tuple(n for n in names if not outputs[n]), problems)
    plan = _check_graph(names, inputs, outputs, start, end, limits, problems) if names else None
    _check_references(ops, inputs, plan, problems)
    if declared is not None:
        for op in ops.values():
            if op is not None:
                _check_variables_used(op, declared[0], problems)
    policy = _check_policy(data, limits, problems)
    if problems.found:
        raise WorkflowInvalid.collect(problems.found)
    assert start is not None and end is not None and declared is not None
    linked = {name: dataclasses.replace(op, inputs=inputs[name], outputs=outputs[name])
              for name, op in ops.items() if op is not None}
    edges = tuple((u, name) for name in names for u in inputs[name])
    return Workflow(ops=linked, start_ops=start, end_ops=end, edges=edges,
                    variables=declared[0], variable_descriptions=declared[1], **policy)


def check_workflow(text: str, *, limits: WorkflowLimits, templates_dir: Path | None,
                   models: Collection[str] | None = None) -> list[WorkflowInvalid]:
    """Every problem of a workflow's YAML text (``llm-router workflow validate``); an empty
    list when :func:`load_workflow` accepts it.

    >>> text = "ops: {a: {prompt: A, tier: 0}, b: {prompt: '{{ tone }}', input_ops: [a]}}"
    >>> [p.op for p in check_workflow(text, limits=WorkflowLimits(), templates_dir=None)]
    ['a', 'b']
    """
    try:
        load_workflow(text, limits=limits, templates_dir=templates_dir, models=models)
    except WorkflowInvalid as exc:
        return list(exc.problems)
    return []
