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

Jinja errors are translated into :class:`~engine.errors.WorkflowInvalid` here and nowhere
else; render-time failures of any kind are the template's fault and name its op.
"""

from __future__ import annotations

import copy
import operator
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, Template, nodes, pass_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.meta import find_undeclared_variables
from jinja2.runtime import Context
from jinja2.sandbox import (
    UNSAFE_ASYNC_GENERATOR_ATTRIBUTES,
    UNSAFE_COROUTINE_ATTRIBUTES,
    UNSAFE_GENERATOR_ATTRIBUTES,
    ImmutableSandboxedEnvironment,
)
from jinja2.visitor import NodeTransformer

from engine.errors import TemplateLimitExceeded, WorkflowInvalid, did_you_mean, echo

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

_BASE_BUDGET = 1 << 24  # characters of work every render may use
_BUDGET_PER_INPUT_CHAR = 16  # plus this much per character the template was given
_MAX_STEPS = 100_000  # loop iterations per render
#: The longest value (string, or a sequence as text) a render may build, and its longest
#: output, beyond the size of what it was given.
MAX_BUILT_CHARS = 1 << 22
#: The longest a render may take unless the environment says otherwise.
DEFAULT_RENDER_TIMEOUT_SEC = 2.0
_MAX_INT_BITS = 10_000

_UNSAFE_ATTRIBUTES = frozenset(
    {"mro", "func_globals", "func_code", "f_globals", "f_locals", "f_code", "f_back"}
    | UNSAFE_GENERATOR_ATTRIBUTES
    | UNSAFE_COROUTINE_ATTRIBUTES
    | UNSAFE_ASYNC_GENERATOR_ATTRIBUTES
)
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
# Filters a prompt can use. Left out: ``random`` (a prompt should be reproducible, and
# cacheable), ``urlize``, ``xmlattr``, ``pprint``, ``safe``, ``forceescape`` (HTML and
# debugging helpers whose output size is harder to bound than they are worth here).
_FILTERS = frozenset(
    "abs attr batch capitalize center count d default dictsort e escape filesizeformat first "
    "float format groupby indent int items join last length list lower map max min reject "
    "rejectattr replace reverse round select selectattr slice sort string striptags sum title "
    "tojson trim truncate unique upper urlencode wordcount wordwrap".split()
)

# Methods of builtin values a template may call: none returns more than it was given.
_STR_METHODS = frozenset(
    "capitalize casefold count endswith find index isalnum isalpha isascii isdecimal isdigit "
    "isidentifier islower isnumeric isprintable isspace istitle isupper lower lstrip partition "
    "removeprefix removesuffix rfind rindex rpartition rsplit rstrip split splitlines "
    "startswith strip swapcase title upper".split()
)
_SAFE_METHODS: tuple[tuple[type, frozenset[str]], ...] = (
    (str, _STR_METHODS),
    (dict, frozenset({"get", "items", "keys", "values"})),
    (list, frozenset({"count", "index"})),
    (tuple, frozenset({"count", "index"})),
    (float, frozenset({"is_integer"})),
    (int, frozenset()),
)
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


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


# ---- the sandbox ---------------------------------------------------------------------------


class _LimitHit(SecurityError):
    """A render ran into one of its limits (work, size, steps or time)."""


class _Budget:
    """One render's limits (module docstring, layer 3)."""

    __slots__ = ("chars", "deadline", "largest", "steps", "timeout", "total")

    def __init__(self, chars: int, *, largest: int, timeout: float) -> None:
        self.total = self.chars = chars
        self.largest = largest
        self.steps = _MAX_STEPS
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout

    def spend(self, chars: int, what: str) -> None:
        self.chars -= chars
        if self.chars < 0:
            raise _LimitHit(
                f"template does too much work ({what}): a render may do {self.total:,} "
                "characters of work"
            )
        self.check_time(what)

    def step(self) -> None:
        self.steps -= 1
        if self.steps < 0:
            raise _LimitHit(f"template loops more than {_MAX_STEPS} times")
        self.check_time("loop")

    def check_time(self, what: str) -> None:
        if time.monotonic() > self.deadline:
            raise _LimitHit(
                f"rendering takes longer than {self.timeout:g} s (stopped at {what}; "
                "workflows.render_timeout_sec)"
            )

    def check_size(self, size: int, what: str) -> None:
        if size > self.largest:
            raise _LimitHit(
                f"{what} would build a value of {size:,} characters; a template may build "
                f"at most {self.largest:,}"
            )


class _BudgetedContext(Context):
    """Each render's context carries that render's limits, sized by what it was given."""

    def __init__(self, environment: Any, parent: dict[str, Any], *args: Any, **kw: Any) -> None:
        super().__init__(environment, parent, *args, **kw)
        given = sum(_expanded_size(v) for k, v in parent.items() if k not in environment.globals)
        self.budget = _Budget(
            _BASE_BUDGET + _BUDGET_PER_INPUT_CHAR * given,
            largest=MAX_BUILT_CHARS + given,
            timeout=environment.render_timeout_sec,
        )


def _budget(context: Context) -> _Budget:
    budget: _Budget = context.budget  # type: ignore[attr-defined]
    return budget


def _expanded_size(value: Any, limit: int = 1 << 40) -> int:
    """Roughly how many characters ``value`` becomes as text. A shared sub-list counts every
    time it appears (``str`` expands it every time); a memo keeps this linear in distinct
    objects, and it stops counting past ``limit``."""
    if not isinstance(value, _COLLECTIONS):  # most calls: no memo, no recursion
        return _scalar_size(value)
    memo: dict[int, int] = {}

    def size(v: Any) -> int:
        if not isinstance(v, _COLLECTIONS):
            return _scalar_size(v)
        key = id(v)
        if key in memo:
            return memo[key]
        total = 2
        for item in v.items() if isinstance(v, dict) else v:
            total += size(item) + 2
            if total > limit:
                break
        memo[key] = total
        return total

    return size(value)


_COLLECTIONS = (list, tuple, dict, set, frozenset)


def _scalar_size(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, range):
        return 8 * len(value)
    if isinstance(value, int):
        return value.bit_length() // 3 + 1
    return 16


def _check_percent_format(fmt: str) -> None:
    for match in _PERCENT_SPEC.finditer(fmt):
        for number in match.groups():
            if number == "*" or (number and (len(number) > 4 or int(number) > 1000)):
                raise SecurityError("%-format widths and precisions above 1000 are refused")


class _CodeGenerator(CodeGenerator):
    """Compiles each comparison ``a <op> b`` into ``environment.guard_compare(context, op, a,
    b)``: the sandbox has no hook for comparisons, and a direct call costs a fraction of
    what a template-level call (``context.call``) would. :class:`_Guards` splits chains
    (``a < b < c``) first."""

    def visit_Compare(self, node: nodes.Compare, frame: Frame) -> None:
        if len(node.ops) != 1:
            self.fail("comparison chains must be split before compiling", node.lineno)
        (operand,) = node.ops
        self.write(f"environment.guard_compare(context, {operand.op!r}, ")
        self.visit(node.expr, frame)
        self.write(", ")
        self.visit(operand.expr, frame)
        self.write(")")


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox plus the budget's checkpoints (see the module docstring)."""

    context_class = _BudgetedContext
    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})
    render_timeout_sec = DEFAULT_RENDER_TIMEOUT_SEC

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if attr in _UNSAFE_ATTRIBUTES or not super().is_safe_attribute(obj, attr, value):
            return False
        if callable(value):
            for kind, allowed in _SAFE_METHODS:
                if isinstance(obj, kind):
                    return attr in allowed
        return True

    def wrap_str_format(self, value: Any) -> None:
        return None  # str.format then fails is_safe_attribute: its widths are unbounded

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = _budget(context)
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(count, int):
                    size = _expanded_size(seq) * max(count, 0)
                    budget.spend(size, "*")
                    budget.check_size(size, "'*'")
            if _is_int(left) and _is_int(right):
                _check_int_bits(left.bit_length() + right.bit_length())
        elif operator == "**":
            if _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
                _check_int_bits(left.bit_length() * right)
        elif operator == "+":
            size = _expanded_size(left) + _expanded_size(right)
            budget.spend(size, "+")
            budget.check_size(size, "'+'")
        elif operator == "%" and isinstance(left, str):
            _check_percent_format(left)
            budget.spend(_expanded_size(left) + _expanded_size(right), "%")
            result = super().call_binop(context, operator, left, right)
            budget.check_size(_expanded_size(result), "'%'")
            return result
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(__obj, "__self__", None) is not __self:  # the guards charge for themselves
            budget = _budget(__context)
            budget.spend(_expanded_size(getattr(__obj, "__self__", None)), "call")
            for arg in (*args, *kwargs.values()):
                budget.spend(_expanded_size(arg), "call")
        return super().call(__context, __obj, *args, **kwargs)

    # Guards the compiled template calls in place of ``~``, ``for``, slices and comparisons
    # (the last two by :class:`_CodeGenerator`).

    def guard_concat(self, context: Context, parts: list[Any]) -> str:
        budget = _budget(context)
        size = sum(_expanded_size(p) for p in parts)
        budget.spend(size, "~")
        budget.check_size(size, "'~'")
        return "".join(map(str, parts))

    def guard_iter(self, context: Context, iterable: Iterable[Any]) -> Iterator[Any]:
        budget = _budget(context)
        for item in iterable:
            budget.step()
            yield item

    def guard_slice(self, context: Context, obj: Any, start: Any, stop: Any, step: Any) -> Any:
        span = slice(start, stop, step)
        if isinstance(obj, (str, list, tuple)):
            _budget(context).spend(len(range(*span.indices(len(obj)))), "slice")
        return self.getitem(obj, span)

    def guard_compare(self, context: Context, op: str, left: Any, right: Any) -> Any:
        if type(left) not in _NUMBERS or type(right) not in _NUMBERS:  # numbers: O(1), free
            _budget(context).spend(_compare_cost(op, left, right), _COMPARE_NAMES[op])
        return _COMPARE[op](left, right)


_NUMBERS = frozenset({int, float, bool, type(None)})
# Jinja's names of comparison operators (``nodes.Operand.op``), as functions and as written.
_COMPARE: dict[str, Any] = {
    "eq": operator.eq, "ne": operator.ne, "gt": operator.gt, "gteq": operator.ge,
    "lt": operator.lt, "lteq": operator.le,
    "in": lambda a, b: a in b, "notin": lambda a, b: a not in b,
}
_COMPARE_NAMES = {"eq": "'=='", "ne": "'!='", "gt": "'>'", "gteq": "'>='", "lt": "'<'",
                  "lteq": "'<='", "in": "'in'", "notin": "'not in'"}
# Tests that compare (``x is eq y``, ``select('in', s)``), by the operator they apply.
_COMPARING_TESTS = {
    "in": "in", "==": "eq", "eq": "eq", "equalto": "eq", "!=": "ne", "ne": "ne", ">": "gt",
    "gt": "gt", "greaterthan": "gt", ">=": "gteq", "ge": "gteq", "<": "lt", "lt": "lt",
    "lessthan": "lt", "<=": "lteq", "le": "lteq",
}
_SCANNING_TESTS = frozenset({"lower", "upper"})  # str.islower / isupper read the whole string


def _compare_cost(op: str, left: Any, right: Any) -> int:
    """What ``left <op> right`` may read: for ``in``, the needle and the haystack (a hashed
    container: the needle alone); otherwise the smaller side (equal sequences are compared
    item by item up to the shorter one's end)."""
    if op in ("in", "notin"):
        if isinstance(right, (dict, set, frozenset, range)):
            return _expanded_size(left)
        return _expanded_size(left) + _expanded_size(right)
    small = _expanded_size(left)
    return small if small <= 16 else min(small, _expanded_size(right, limit=small))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int_bits(bits: int) -> None:
    if bits > _MAX_INT_BITS:
        raise SecurityError(f"integers above {_MAX_INT_BITS} bits are refused")


def _guard_filter(name: str, func: Any) -> Any:
    """``func`` charged for its arguments; the filters that can amplify are bounded first."""
    passes = getattr(getattr(func, "jinja_pass_arg", None), "name", None)

    @pass_context
    def guarded(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _budget(context)
        if isinstance(value, Iterator):  # e.g. map()'s output: its size must be known
            value = list(value)
        for arg in (value, *args, *kwargs.values()):
            budget.spend(_expanded_size(arg), f"filter {name}")
        _check_filter(budget, name, value, args, kwargs)
        result = _call_passing(func, passes, context, value, *args, **kwargs)
        if isinstance(result, (str, list, tuple, dict)):
            budget.check_size(_expanded_size(result, limit=budget.largest), f"filter {name}")
        return result

    return guarded


def _guard_test(name: str, func: Any) -> Any:
    """``func`` charged for what it reads, when that is more than a glance (comparisons,
    ``in``, ``lower`` / ``upper``)."""
    passes = getattr(getattr(func, "jinja_pass_arg", None), "name", None)
    compares = _COMPARING_TESTS.get(name)
    scans = name in _SCANNING_TESTS

    @pass_context
    def guarded(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        if compares is not None and (args or kwargs):
            other = args[0] if args else next(iter(kwargs.values()))
            _budget(context).spend(_compare_cost(compares, value, other), f"test {name}")
        elif scans:
            _budget(context).spend(_expanded_size(value), f"test {name}")
        return _call_passing(func, passes, context, value, *args, **kwargs)

    return guarded


def _call_passing(func: Any, passes: str | None, context: Context, *args: Any,
                  **kwargs: Any) -> Any:
    """Call a filter or test the way Jinja would (``pass_context`` and the like)."""
    if passes == "context":
        return func(context, *args, **kwargs)
    if passes == "eval_context":
        return func(context.eval_ctx, *args, **kwargs)
    if passes == "environment":
        return func(context.environment, *args, **kwargs)
    return func(*args, **kwargs)


def _check_filter(budget: _Budget, name: str, value: Any, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> None:
    def arg(index: int, key: str, default: Any) -> Any:
        return args[index] if len(args) > index else kwargs.get(key, default)

    def number(index: int, key: str, default: int) -> int:
        got = arg(index, key, default)
        return got if _is_int(got) else default

    size = _expanded_size(value)
    if name == "join":
        count = len(value) if hasattr(value, "__len__") else size
        budget.spend(count * _expanded_size(arg(0, "d", "")), "join")
    elif name == "replace":
        old, new = str(arg(0, "old", "")), str(arg(1, "new", ""))
        hits = len(str(value)) + 1 if not old else str(value).count(old)
        budget.spend(hits * len(new), "replace")
    elif name in ("center", "indent"):
        width = arg(0, "width", 4)
        per_line = len(width) if isinstance(width, str) else number(0, "width", 80)
        budget.spend(per_line * (str(value).count("\n") + 1), name)
    elif name == "wordwrap":
        wrap = arg(2, "wrapstring", None)
        lines = size // max(1, number(0, "width", 79)) + 1
        budget.spend(lines * len(str(wrap or "\n")), "wordwrap")
    elif name == "format":
        _check_percent_format(str(value))
    elif name == "batch":
        budget.spend(number(0, "linecount", 1), "batch")
    elif name == "slice":
        budget.spend(number(0, "slices", 1), "slice")
    elif name == "sum":
        budget.spend(size, "sum")
    elif name == "tojson":
        budget.spend(size * number(0, "indent", 0), "tojson")


def _bounded_range(*args: int) -> range:
    span = range(*args)
    if len(span) > _MAX_STEPS:
        raise SecurityError(f"range() of more than {_MAX_STEPS} items")
    return span


@pass_context
def _finalize(context: Context, value: Any) -> Any:
    """Every ``{{ value }}`` is charged before it becomes text: nested lists sharing one big
    string expand each time they are printed."""
    budget = _budget(context)
    size = _expanded_size(value)
    budget.spend(size, "output")
    budget.check_size(size, "output")
    return value


def new_environment(*, render_timeout_sec: float = DEFAULT_RENDER_TIMEOUT_SEC) -> _Sandbox:
    """A fresh sandbox for one workflow's templates, each render of which may take at most
    ``render_timeout_sec``.

    No loader (templates never load templates), ``StrictUndefined`` (a typo is an error, not
    an empty string), autoescape off (prompts are not HTML), block tags trimmed (so a
    template's layout is the prompt's). ``lipsum`` is gone and ``range`` is bounded.
    """
    env = _Sandbox(
        undefined=StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        finalize=_finalize,
    )
    env.globals.pop("lipsum", None)
    env.globals["range"] = _bounded_range
    env.filters = {
        name: _guard_filter(name, f) for name, f in env.filters.items() if name in _FILTERS
    }
    env.tests = {name: _guard_test(name, f) for name, f in env.tests.items()}
    env.render_timeout_sec = render_timeout_sec
    return env


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
            if private or part in _UNSAFE_ATTRIBUTES:
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
    env: _Sandbox, source: str, *, where: str, op: str | None
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
        budget = _budget(ctx)
        if deadline is not None:
            budget.deadline = min(budget.deadline, deadline)
        size = 0
        for chunk in template.root_render_func(ctx):
            size += len(chunk)
            budget.check_size(size, "the rendered prompt")
            parts.append(chunk)
    except _LimitHit as exc:
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
