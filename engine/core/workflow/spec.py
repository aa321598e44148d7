"""Workflow definitions: the YAML of ``POST /v1/workflows`` loaded into checked types. Sans-IO.

A workflow is a DAG of ops, each one LLM call. The documented format (docs/workflows.md)
works unchanged; the additions (all optional) are listed on :class:`Op` and
:class:`Workflow`. Everything is validated by :func:`load_workflow` before anything runs,
and every failure is one :class:`~engine.errors.WorkflowInvalid` (a 400) that names the op
at fault.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

from engine.core.config import WorkflowLimits
from engine.core.planner import Node, Plan, build_plan
from engine.errors import WorkflowInvalid, echo

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
    {"name", "description", "variables", "on_error", "max_cost_usd", "max_concurrency",
     "start_ops", "end_ops", "ops"}
)
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
    for one run; how many ops at once.
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
        if name not in self._files:
            self._files[name] = read_template_file(
                name, self.templates_dir, max_bytes=self.limits.max_template_bytes, op=op
            )
        return self.source(self._files[name], where=f"template {name!r} (op {op!r})", op=op)

    def source(self, text: str, *, where: str, op: str) -> PromptTemplate:
        if text not in self._compiled:
            self._compiled[text] = compile_prompt(self.env, text, where=where, op=op)
        return self._compiled[text]


# ---- loading -------------------------------------------------------------------------------


def _load_op(name: Any, spec: Any, compiler: _Compiler, limits: WorkflowLimits) -> Op:
    if not isinstance(name, str):
        raise WorkflowInvalid(
            f"op names must be strings, got {describe_value(name)} (YAML reads yes/no/on/off as "
            "booleans: quote such names)"
        )
    if not _OP_NAME.fullmatch(name) or name in DICT_ATTRIBUTES:
        raise WorkflowInvalid(
            f"op name {echo(name)} is not allowed: use a letter, then letters, digits, _ or -, at "
            f"most 64 characters, and none of: {', '.join(sorted(DICT_ATTRIBUTES))}", op=name
        )
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise WorkflowInvalid(f"op {name!r} must be a mapping, got {describe_value(spec)}", op=name)
    unknown = sorted(str(k) for k in spec if k not in _OP_KEYS)
    if unknown:
        raise WorkflowInvalid(
            f"op {name!r}: unknown key {echo(unknown[0])} (allowed: {', '.join(sorted(_OP_KEYS))})",
            op=name,
        )
    if ("prompt" in spec) == ("template" in spec):
        raise WorkflowInvalid(f"op {name!r} needs exactly one of 'prompt' or 'template'", op=name)
    if "prompt" in spec:
        source = check_text(spec["prompt"], "prompt", name)
        prompt = compiler.source(source, where=f"op {name!r} prompt", op=name)
    else:
        prompt = compiler.file(spec["template"], name)
    system = None
    if spec.get("system") is not None:
        source = check_text(spec["system"], "system", name)
        system = compiler.source(source, where=f"op {name!r} system", op=name)
    model = spec.get("model")
    if model is not None:
        if not isinstance(model, str) or not _MODEL_NAME.fullmatch(model):
            raise WorkflowInvalid(f"op {name!r}: model must be a configured model's name, got "
                                  f"{describe_value(model)}", op=name)
        model = None if model == "auto" else model
    if model is not None and spec.get("tier") is not None:
        raise WorkflowInvalid(f"op {name!r}: give either model (a pin) or tier, not both",
                              op=name)

    def optional(key: str, check: Any, *bounds: Any) -> Any:
        value = spec.get(key)
        return None if value is None else check(value, key, name, *bounds)

    json_mode = spec.get("json", False)
    if not isinstance(json_mode, bool):
        raise WorkflowInvalid(f"op {name!r}: json must be true or false", op=name)
    description = optional("description", check_text)
    params = check_scalars(spec.get("params") or {}, "params", name)
    unknown_params = sorted(prompt.params | (system.params if system else frozenset()))
    for param in unknown_params:
        if param not in params:
            raise WorkflowInvalid(f"op {name!r}: template uses params.{echo(param, raw=True)}, "
                                  "which the op's params do not define", op=name)
    return Op(
        name=name,
        prompt=prompt,
        template_file=spec.get("template"),
        system=system,
        description=description,
        tier=optional("tier", check_int, 1, 10),
        model=model,
        temperature=optional("temperature", check_number, 0, 2),
        max_tokens=optional("max_tokens", check_int, 1, limits.max_tokens_per_op),
        json=json_mode,
        timeout_sec=optional("timeout_sec", check_number, 0, 86400),
        retries=optional("retries", check_int, 0, 10) or 0,
        params=params,
    )


def _link(specs: dict[str, Any], ops: dict[str, Op]) -> dict[str, Op]:
    """Edges from both sides, checked to agree; returns the ops with inputs and outputs."""
    declared: dict[str, dict[str, tuple[str, ...] | None]] = {"input_ops": {}, "output_ops": {}}
    for name, spec in specs.items():
        for key, table in declared.items():
            value = spec.get(key) if isinstance(spec, dict) else None
            table[name] = None if value is None else check_names(value, key, name)
            for ref in table[name] or ():
                if ref not in ops:
                    raise WorkflowInvalid(f"op {name!r}: {key} names unknown op {echo(ref)}",
                                          op=name)
    ins, outs = declared["input_ops"], declared["output_ops"]
    edges = {(u, n) for n in ops for u in ins[n] or ()} | {
        (n, d) for n in ops for d in outs[n] or ()
    }
    order = {name: i for i, name in enumerate(ops)}
    for up, down in sorted(edges, key=lambda e: (order[e[1]], order[e[0]])):
        listed_in, listed_out = ins[down], outs[up]
        if listed_in is not None and up not in listed_in:
            raise WorkflowInvalid(
                f"op {down!r}: op {up!r} lists it in output_ops, but its input_ops "
                f"{list(listed_in)} do not include {up!r}", op=down,
            )
        if listed_out is not None and down not in listed_out:
            raise WorkflowInvalid(
                f"op {up!r}: op {down!r} lists it in input_ops, but its output_ops "
                f"{list(listed_out)} do not include {down!r}", op=up,
            )
    linked = {}
    for name, op in ops.items():
        inputs = ins[name] or tuple(u for u in ops if (u, name) in edges)
        outputs = outs[name] or tuple(d for d in ops if (name, d) in edges)
        linked[name] = dataclasses.replace(op, inputs=inputs, outputs=outputs)
    return linked


def _ends(value: Any, key: str, ops: dict[str, Op], default: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return default
    names = check_names(value, key, None)
    if not names:
        raise WorkflowInvalid(f"{key} must name at least one op")
    for name in names:
        if name not in ops:
            raise WorkflowInvalid(f"{key} names unknown op {echo(name)}", op=name)
    return names


def _check_graph(wf_ops: dict[str, Op], start: tuple[str, ...], end: tuple[str, ...],
                 edges: tuple[tuple[str, str], ...], limits: WorkflowLimits) -> Plan:
    plan = build_plan([Node(name) for name in wf_ops], edges)  # rejects cycles, with the path
    for name in start:
        if wf_ops[name].inputs:
            raise WorkflowInvalid(
                f"start op {name!r} is not a source: it has input_ops "
                f"{list(wf_ops[name].inputs)}", op=name,
            )
    for name in end:
        if wf_ops[name].outputs:
            raise WorkflowInvalid(
                f"end op {name!r} is not a sink: its output goes to "
                f"{list(wf_ops[name].outputs)}", op=name,
            )
    reached = set(start)
    frontier = list(start)
    while frontier:
        for succ in wf_ops[frontier.pop()].outputs:
            if succ not in reached:
                reached.add(succ)
                frontier.append(succ)
    for name in wf_ops:
        if name not in reached:
            raise WorkflowInvalid(
                f"op {name!r} is not reachable from any start op (start_ops: "
                f"{', '.join(start)})", op=name,
            )
    if len(plan.generations) > limits.max_depth:
        deep = plan.generations[limits.max_depth][0]
        raise WorkflowInvalid(
            f"op {deep!r} is {limits.max_depth + 1} ops deep; a workflow may be at most "
            f"{limits.max_depth} deep", op=deep,
        )
    return plan


def _check_references(wf_ops: dict[str, Op], plan: Plan,
                      variables: Mapping[str, Scalar]) -> None:
    ancestors: dict[str, set[str]] = {}
    for level in plan.generations:  # every op's inputs are in an earlier level
        for name in level:
            inputs = wf_ops[name].inputs
            ancestors[name] = set(inputs).union(*(ancestors[i] for i in inputs))
    for name, op in wf_ops.items():
        for ref in sorted(op.refs_ops):
            if ref not in wf_ops:
                raise WorkflowInvalid(f"op {name!r}: template references unknown op {echo(ref)}",
                                      op=name)
            if ref not in ancestors[name]:
                raise WorkflowInvalid(
                    f"op {name!r}: template reads ops.{ref}, but {ref!r} is not upstream of "
                    f"{name!r} (add it to input_ops)", op=name,
                )
        _check_variables_used(op, variables)


def _check_variables_used(op: Op, variables: Mapping[str, Scalar]) -> None:
    for var in sorted(op.refs_vars):
        if var not in variables:
            declared = ", ".join(variables) or "none"
            raise WorkflowInvalid(
                f"op {op.name!r}: template uses undeclared variable {echo(var)} (declared "
                f"variables: {declared}; also available: input, vars, ops, params)",
                op=op.name,
            )


def _check_top_keys(data: dict[Any, Any]) -> None:
    unknown = sorted(str(k) for k in data if k not in _TOP_KEYS)
    if unknown:
        raise WorkflowInvalid(
            f"unknown key {echo(unknown[0])} (allowed: {', '.join(sorted(_TOP_KEYS))})"
        )


def _check_policy(data: dict[Any, Any], limits: WorkflowLimits) -> dict[str, Any]:
    """The workflow's own fields besides its ops and variables, as :class:`Workflow`'s."""
    on_error = data.get("on_error", "fail_fast")
    if on_error not in ("fail_fast", "continue"):
        raise WorkflowInvalid(f"on_error must be 'fail_fast' or 'continue', got {echo(on_error)}")
    max_cost = data.get("max_cost_usd")
    concurrency = data.get("max_concurrency")
    return {
        "name": None if data.get("name") is None else check_text(data["name"], "name", None),
        "description": None if data.get("description") is None
        else check_text(data["description"], "description", None),
        "on_error": on_error,
        "max_cost_usd": None if max_cost is None
        else check_number(max_cost, "max_cost_usd", None, 0, 1e6),
        "max_concurrency": None if concurrency is None
        else check_int(concurrency, "max_concurrency", None, 1, limits.max_ops),
    }


def load_workflow(text: str, *, limits: WorkflowLimits,
                  templates_dir: Path | None) -> Workflow:
    """Parse and validate a workflow's YAML text.

    Template files named by ops are read from ``templates_dir`` (only files inside it, at
    most ``limits.max_template_bytes`` each); with ``None`` only inline prompts are allowed.
    ``start_ops`` / ``end_ops`` default to the graph's sources / sinks.

    Raises:
        WorkflowInvalid: the first problem found, naming its op where there is one: the
            size limit (checked before parsing), YAML that is invalid, not a mapping, or uses
            anchors/aliases; unknown keys and bad values; edges naming unknown ops or whose
            two sides disagree; a cycle (its path); start ops that are not sources, end ops
            that are not sinks; ops unreachable from a start op; the op-count and depth
            limits; templates refused by the sandbox or referencing unknown ops, ops not
            upstream, or undeclared variables.

    Examples
    --------
    >>> wf = load_workflow("ops: {a: {prompt: Hi}, b: {prompt: Bye, input_ops: [a]}}",
    ...                    limits=WorkflowLimits(), templates_dir=None)
    >>> wf.start_ops, wf.end_ops, wf.edges
    (('a',), ('b',), (('a', 'b'),))
    """
    data = parse_yaml(text, max_bytes=limits.max_yaml_bytes)
    if not isinstance(data, dict):
        raise WorkflowInvalid(f"workflow YAML must be a mapping, got {describe_value(data)}")
    _check_top_keys(data)
    specs = data.get("ops")
    if not isinstance(specs, dict) or not specs:
        raise WorkflowInvalid("ops must be a mapping of at least one op")
    if len(specs) > limits.max_ops:
        raise WorkflowInvalid(f"a workflow may have at most {limits.max_ops} ops, "
                              f"this one has {len(specs)}")
    variables, variable_docs = check_variables(data.get("variables"))
    compiler = _Compiler(templates_dir, limits)
    ops = {op.name: op for op in (_load_op(n, s, compiler, limits) for n, s in specs.items())}
    ops = _link(specs, ops)
    edges = tuple((u, name) for name, op in ops.items() for u in op.inputs)
    sources = tuple(n for n, op in ops.items() if not op.inputs)
    sinks = tuple(n for n, op in ops.items() if not op.outputs)
    start = _ends(data.get("start_ops"), "start_ops", ops, sources)
    end = _ends(data.get("end_ops"), "end_ops", ops, sinks)
    plan = _check_graph(ops, start, end, edges, limits)
    _check_references(ops, plan, variables)
    return Workflow(ops=ops, start_ops=start, end_ops=end, edges=edges, variables=variables,
                    variable_descriptions=variable_docs, **_check_policy(data, limits))


def check_workflow(text: str, *, limits: WorkflowLimits,
                   templates_dir: Path | None) -> list[WorkflowInvalid]:
    """Every problem of a workflow's YAML text, not only the first (``llm-router workflow
    validate``); an empty list when :func:`load_workflow` accepts it.

    Besides the first problem :func:`load_workflow` finds, each op's own definition (its
    keys, values and templates, and the variables they use) and the workflow's own fields
    are checked one by one. Problems between ops (edges, cycles, reachability, references
    to other ops) need every op to be valid first: only the first of those is reported.

    >>> text = "ops: {a: {prompt: A, tier: 0}, b: {prompt: '{{ tone }}', input_ops: [a]}}"
    >>> [p.op for p in check_workflow(text, limits=WorkflowLimits(), templates_dir=None)]
    ['a', 'b']
    """
    try:
        load_workflow(text, limits=limits, templates_dir=templates_dir)
    except WorkflowInvalid as exc:
        first = exc
    else:
        return []
    found: list[WorkflowInvalid] = []

    def attempt(check: Callable[[], Any]) -> Any:
        try:
            return check()
        except WorkflowInvalid as exc:
            found.append(exc)
            return None

    try:
        data = parse_yaml(text, max_bytes=limits.max_yaml_bytes)
    except WorkflowInvalid:
        data = None
    if isinstance(data, dict):
        attempt(partial(_check_top_keys, data))
        declared = attempt(partial(check_variables, data.get("variables")))
        specs = data.get("ops")
        if isinstance(specs, dict) and len(specs) <= limits.max_ops:
            compiler = _Compiler(templates_dir, limits)
            for name, spec in specs.items():
                op = attempt(partial(_load_op, name, spec, compiler, limits))
                if op is not None and declared is not None:
                    attempt(partial(_check_variables_used, op, declared[0]))
        attempt(partial(_check_policy, data, limits))
    if any(p.message == first.message for p in found):
        return found
    return [first, *found]
