"""Workflow prompt templates: Jinja in a sandbox with a work budget. Sans-IO.

A workflow's prompts come from whoever posts the workflow, so a template is untrusted code.
Three layers keep it contained, each doing what the others cannot:

1. **Validation** (:func:`compile_prompt`, at load time): the template is parsed once and its
   AST refused when it reaches for Python internals (``__class__``, ``mro``, any ``_name``),
   loads other templates (``import``, ``include``, ``extends``, ``from``) or defines things
   that recurse or buffer output out of sight (``macro``, ``call``, ``block``, block ``set``,
   ``filter`` blocks, recursive loops). The same walk records what the template references:
   ``input``, variables, ``params.<name>`` and ``ops.<name>`` (which must be spelled out, so
   dependencies are known before anything runs).
2. **The sandbox** (``ImmutableSandboxedEnvironment``, ``StrictUndefined``, no loader): what
   slips past the static walk (dynamic ``x[name]``) is refused at render time. Methods of
   builtin values are limited to ones whose result is no larger than their input
   (``split``, ``upper``: yes; ``center``, ``ljust``, ``format``: no).
3. **Limits per render**, checked at every operation that can amplify or take time (``*``,
   ``+``, ``%``, ``~``, slices, comparisons and ``in``, tests, filters, method calls, loop
   iterations, printed values):

   * a *work budget*, in characters and steps, proportional to the size of what the template
     was given: each operation is charged what it reads or builds. Without it a few lines of
     ``{% set a = a ~ a %}`` exhaust memory, nested loops the CPU, and a loop of ``'x' in a``
     over a long string the CPU again (the sandbox cannot intercept comparisons, so the
     compiled template calls a guard in their place);
   * a *size cap*: no value the render builds, its output included, may exceed
     :data:`MAX_BUILT_CHARS` characters plus the size of what it was given (the work budget
     alone would let one ``'ab' * 4000000`` through);
   * a *deadline* (``workflows.render_timeout_sec``), for whatever costs time without
     costing characters.

   Renders are CPU work: callers that serve requests run them in a worker thread.

Layers 2 and 3 are :mod:`engine.core.workflow.sandbox`. Jinja errors are translated into
:class:`~engine.errors.WorkflowInvalid` here and nowhere else; render-time failures of any kind
are the template's fault and name its op.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import Template, nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.meta import find_undeclared_variables
from jinja2.visitor import NodeTransformer

from engine.errors import TemplateLimitExceeded, WorkflowInvalid, did_you_mean, echo

from .sandbox import (
    DEFAULT_RENDER_TIMEOUT_SEC,
    MAX_BUILT_CHARS,
    UNSAFE_ATTRIBUTES,
    LimitHit,
    Sandbox,
    budget_of,
    new_environment,
)

__all__ = [
    "CONTEXT_NAMES",
    "DEFAULT_RENDER_TIMEOUT_SEC",
    "MAX_BUILT_CHARS",
    "OP_OUTPUT_FIELDS",
    "PromptTemplate",
    "compile_prompt",
    "new_environment",
    "render_prompt",
]

#: Names every template sees besides the workflow's variables.
CONTEXT_NAMES = frozenset({"input", "vars", "ops", "params"})
#: What ``ops.<name>`` holds: the answer text and its parsed JSON (``engine.core.workflow
#: .render`` builds it from an ``OpOutput``). Reading anything else is refused at load time,
#: not found at run time after the op was paid for.
OP_OUTPUT_FIELDS = ("output", "value")

_REFUSED_NODES: dict[type[nodes.Node], str] = {
    nodes.Extends: "extends",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from ... import",
    nodes.Macro: "macro",
    nodes.CallBlock: "call",
    nodes.Block: "block",
    nodes.AssignBlock: "set ... endset",
    nodes.FilterBlock: "filter",
}
_ATTRIBUTE_FILTERS = frozenset({"attr", "selectattr", "rejectattr"})


@dataclass(frozen=True, slots=True)
class PromptTemplate:
    """A validated, compiled template and what it references.

    ``ops`` are the ops named as ``ops.<name>`` / ``ops['<name>']``; ``variables`` the
    workflow variables used by name or as ``vars.<name>``; ``params`` the op's own
    ``params.<name>``; ``uses_input`` whether ``input`` appears.
    """

    source: str
    template: Template
    ops: frozenset[str]
    variables: frozenset[str]
    params: frozenset[str]
    uses_input: bool


# ---- validation ----------------------------------------------------------------------------


class _Analysis:
    """One walk over a parsed template: refusals and references."""

    def __init__(self, *, where: str, op: str | None) -> None:
        self.where = where
        self.op = op
        self.ops: set[str] = set()
        self.vars: set[str] = set()
        self.params: set[str] = set()
        self._placed: set[int] = set()  # ids of ``ops`` names used as ops.<name>

    def fail(self, node: nodes.Node, message: str) -> WorkflowInvalid:
        return WorkflowInvalid(f"{self.where}, line {node.lineno}: {message}", op=self.op)

    def check_attribute(self, node: nodes.Node, name: str, *, item: bool = False) -> None:
        """``x._private`` is refused; ``x['_id']`` only when dunder (a JSON answer may have
        such keys, and for anything but a mapping the sandbox refuses it at render time)."""
        for part in name.split("."):
            private = part.startswith("__") if item else part.startswith("_")
            if private or part in UNSAFE_ATTRIBUTES:
                raise self.fail(node, f"access to {echo(part)} is not allowed in templates")

    def walk(self, tree: nodes.Template) -> None:
        for node in tree.find_all(nodes.Node):
            self.visit(node)
        for name in tree.find_all(nodes.Name):
            if name.name == "ops" and name.ctx == "load" and id(name) not in self._placed:
                raise self.fail(
                    name, "use ops.<name> or ops['<name>'] to read another op's output"
                )

    def visit(self, node: nodes.Node) -> None:
        for kind, tag in _REFUSED_NODES.items():
            if isinstance(node, kind):
                raise self.fail(node, f"the {tag!r} tag is not allowed in workflow templates")
        if isinstance(node, nodes.For) and node.recursive:
            raise self.fail(node, "recursive loops are not allowed in workflow templates")
        if isinstance(node, nodes.Name) and node.ctx != "load" and node.name in CONTEXT_NAMES:
            raise self.fail(node, f"{node.name!r} cannot be assigned to")
        if isinstance(node, nodes.Getattr):
            self.check_attribute(node, node.attr)
            self.note(node, node.node, node.attr)
            self.check_output_field(node, node.node, node.attr)
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            if isinstance(node.arg.value, str):
                self.check_attribute(node, node.arg.value, item=True)
                self.note(node, node.node, node.arg.value)
                self.check_output_field(node, node.node, node.arg.value)
        elif isinstance(node, (nodes.Filter, nodes.Test)):
            for keyword in node.kwargs:
                if keyword.key == "attribute" and isinstance(keyword.value, nodes.Const):
                    self.check_attribute(node, str(keyword.value.value))
            if node.name in _ATTRIBUTE_FILTERS:
                for arg in node.args:
                    if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
                        self.check_attribute(node, arg.value)

    def check_output_field(self, node: nodes.Node, base: nodes.Node, key: str) -> None:
        """``ops.<name>.<key>``: ``key`` must be one of :data:`OP_OUTPUT_FIELDS`."""
        op = _op_named(base)
        if op is not None and key not in OP_OUTPUT_FIELDS:
            raise self.fail(
                node, f"ops.{op}.{echo(key, raw=True)}: an op's output has no {echo(key)}, "
                f"only 'output' (the answer text) and 'value' (its parsed JSON)"
                f"{did_you_mean(key, OP_OUTPUT_FIELDS)}",
            )

    def note(self, node: nodes.Node, base: nodes.Node, key: str) -> None:
        if not (isinstance(base, nodes.Name) and base.ctx == "load"):
            return
        if base.name == "ops":
            self.ops.add(key)
            self._placed.add(id(base))
        elif base.name == "vars":
            self.vars.add(key)
        elif base.name == "params":
            self.params.add(key)


def _op_named(node: nodes.Node) -> str | None:
    """The op name of an ``ops.<name>`` / ``ops['<name>']`` node, else ``None``."""
    if isinstance(node, nodes.Getattr):
        key, base = node.attr, node.node
    elif (isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const)
          and isinstance(node.arg.value, str)):
        key, base = node.arg.value, node.node
    else:
        return None
    if isinstance(base, nodes.Name) and base.name == "ops" and base.ctx == "load":
        return key
    return None


class _Guards(NodeTransformer):
    """Rewrites ``~``, ``for`` and slices into calls of the sandbox's guards, and comparison
    chains into single comparisons."""

    @staticmethod
    def _guard(name: str, node: nodes.Node, *args: nodes.Node) -> nodes.Call:
        call = nodes.Call(
            nodes.EnvironmentAttribute(f"guard_{name}"),
            [nodes.ContextReference(), *args], [], None, None,
        )
        call.set_lineno(node.lineno)
        return call

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return self._guard("concat", node, nodes.List(node.nodes, lineno=node.lineno))

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = self._guard("iter", node, node.iter)
        return node

    def visit_Compare(self, node: nodes.Compare) -> nodes.Node:
        """A chain ``a < b < c`` becomes ``a < b and b < c``, so that it still stops at its
        first false link (``b`` is evaluated twice, which has no side effects in the
        immutable sandbox). Each comparison then compiles into a guard
        (:class:`_CodeGenerator`)."""
        self.generic_visit(node)
        if len(node.ops) == 1:
            return node
        links: list[nodes.Expr] = []
        left = node.expr
        for operand in node.ops:
            links.append(nodes.Compare(left, [operand], lineno=node.lineno))
            left = copy.deepcopy(operand.expr)
        result = links[0]
        for later in links[1:]:
            result = nodes.And(result, later, lineno=node.lineno)
        return result

    def visit_Getitem(self, node: nodes.Getitem) -> nodes.Node:
        self.generic_visit(node)
        if not isinstance(node.arg, nodes.Slice):
            return node
        none = nodes.Const(None, lineno=node.lineno)
        span = node.arg
        return self._guard(
            "slice", node, node.node, span.start or none, span.stop or none, span.step or none
        )


def compile_prompt(
    env: Sandbox, source: str, *, where: str, op: str | None
) -> PromptTemplate:
    """Parse, validate and compile one template; record what it references.

    Args:
        env: from :func:`new_environment`.
        source: the template text.
        where: how errors name the template (``"op 'a' prompt"``, ``"template x.j2"``).
        op: the op errors name.

    Raises:
        WorkflowInvalid: a syntax error, an unknown filter, or anything the module docstring
            says is refused.
    """
    analysis = _Analysis(where=where, op=op)
    try:
        tree = env.parse(source)
        analysis.walk(tree)
        names = find_undeclared_variables(tree)
        tree = _Guards().visit(tree)
        tree.set_environment(env)
        template = env.from_string(tree)
    except TemplateError as exc:
        line = getattr(exc, "lineno", None)
        at = f", line {line}" if line else ""
        problem = echo(exc.message or str(exc), raw=True)
        raise WorkflowInvalid(f"{where}{at}: {problem}", op=op) from None
    variables = (names - CONTEXT_NAMES) | analysis.vars
    return PromptTemplate(
        source=source,
        template=template,
        ops=frozenset(analysis.ops),
        variables=frozenset(variables),
        params=frozenset(analysis.params),
        uses_input="input" in names,
    )


# ---- rendering -----------------------------------------------------------------------------


def render_prompt(prompt: PromptTemplate, context: Mapping[str, Any], *, op: str,
                  deadline: float | None = None) -> str:
    """Render ``prompt`` with ``context`` within the limits of the module docstring.

    CPU work of up to the environment's ``render_timeout_sec``: a server runs it in a worker
    thread, not on its event loop.

    Args:
        prompt: from :func:`compile_prompt`.
        context: the names the template sees.
        op: the op errors name.
        deadline: a ``time.monotonic()`` instant the render must also end by (several
            renders sharing one time limit); the timeout of each render applies anyway.

    Raises:
        TemplateLimitExceeded: the render hit its work budget, its size cap, its step limit
            or its deadline (naming ``op`` and the limit).
        WorkflowInvalid: the template failed or was refused otherwise (undefined name, a
            sandbox refusal, or any error raised by what it called), naming ``op``.
    """
    template = prompt.template
    parts: list[str] = []
    try:
        ctx = template.new_context(dict(context))
        budget = budget_of(ctx)
        if deadline is not None:
            budget.deadline = min(budget.deadline, deadline)
        size = 0
        for chunk in template.root_render_func(ctx):
            size += len(chunk)
            budget.check_size(size, "the rendered prompt")
            parts.append(chunk)
    except LimitHit as exc:
        raise TemplateLimitExceeded(f"op {op!r}: template refused: {exc}", op=op) from None
    except SecurityError as exc:
        raise WorkflowInvalid(
            f"op {op!r}: template refused: {echo(str(exc), raw=True)}", op=op
        ) from None
    except TemplateError as exc:
        raise WorkflowInvalid(
            f"op {op!r}: template failed: {echo(str(exc), raw=True)}", op=op
        ) from None
    except Exception as exc:  # whatever the template's own expressions raise is its fault
        raise WorkflowInvalid(
            f"op {op!r}: template failed: {type(exc).__name__}: {echo(str(exc), raw=True)}", op=op
        ) from None
    return "".join(parts)
