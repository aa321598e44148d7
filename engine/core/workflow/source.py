"""Reading a workflow's sources, and checking their values one by one.

The YAML parser is PyYAML's safe loader with three refusals (see :class:`_Loader`). Template
files are read only from inside ``templates/``, with a size limit; this is the one place a
workflow touches the filesystem (small, bounded reads of the router's own files). The value
checks each raise :class:`~engine.errors.WorkflowInvalid` naming the key and, where there is
one, the op, so :mod:`engine.core.workflow.spec` reads as the list of rules, not their plumbing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from engine.errors import WorkflowInvalid, echo

from .template import CONTEXT_NAMES

__all__ = [
    "DICT_ATTRIBUTES",
    "Scalar",
    "check_int",
    "check_names",
    "check_number",
    "check_scalars",
    "check_text",
    "check_variables",
    "describe_value",
    "parse_yaml",
    "read_template_file",
]

Scalar = str | int | float | bool | None

# Folders and a file name inside templates/: no absolute paths, no "..", no dot-files, and
# short parts (the filesystem refuses a name part past 255 bytes with an error, not a miss).
_TEMPLATE_NAME = re.compile(
    r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}(?:/[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}){0,7}"
)
_MAX_TEMPLATE_NAME = 200
_VAR_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
#: Names a template reads as a dict method (``vars.items``), so no variable may have them.
DICT_ATTRIBUTES = frozenset(n for n in dir(dict) if not n.startswith("_"))
_JINJA_NAMES = frozenset(
    {"range", "dict", "cycler", "joiner", "namespace", "loop", "self", "caller", "varargs",
     "kwargs", "true", "false", "none", "and", "or", "not", "in", "is", "if", "else"}
)
_MAX_YAML_NESTING = 16  # a workflow needs 5; PyYAML's composer recurses per level


class _Loader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships without type hints
    """Safe YAML without anchors and aliases (an alias bomb expands a few hundred bytes into
    gigabytes), without deep nesting (the composer recurses), and without duplicate keys
    (PyYAML would silently keep the last of two ops with one name)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases (& and *) are not allowed", event.start_mark
            )
        self._depth += 1
        try:
            if self._depth > _MAX_YAML_NESTING:
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {_MAX_YAML_NESTING} levels deep",
                    event.start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str | int | float | bool) or key is None:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {echo(key)}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, *, max_bytes: int) -> Any:
    """Parse YAML text of at most ``max_bytes`` (checked before parsing).

    Raises:
        WorkflowInvalid: too large, not YAML, or refused by :class:`_Loader`.
    """
    if len(text) > max_bytes or len(text.encode(errors="surrogatepass")) > max_bytes:
        raise WorkflowInvalid(f"workflow YAML is larger than {max_bytes} bytes")
    loader = None
    try:
        loader = _Loader(text)  # its reader refuses control characters already here
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise WorkflowInvalid(f"workflow YAML is not valid{_yaml_problem(exc)}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what, from any of PyYAML's errors: marked ones name a line and a problem,
    the reader's (a character YAML does not allow) a position and the character."""
    if isinstance(exc, yaml.reader.ReaderError):
        char = exc.character
        code = ord(char) if isinstance(char, str) else char  # PyYAML gives the code point
        return (f" at character {exc.position}: U+{code:04X} is not allowed in YAML (no "
                "control characters besides tab and line breaks)")
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}" if mark is not None else ""
    problem = echo(getattr(exc, "problem", None) or str(exc), raw=True)
    return f"{where}: {problem}"


# ---- field checks --------------------------------------------------------------------------


def _where(op: str | None, key: str) -> str:
    return f"op {op!r}: {key}" if op is not None else key


def describe_value(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {echo(value)}"


def check_text(value: Any, key: str, op: str | None) -> str:
    if not isinstance(value, str):
        raise WorkflowInvalid(f"{_where(op, key)} must be a string, got {describe_value(value)}",
                              op=op)
    return value


def check_int(value: Any, key: str, op: str | None, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise WorkflowInvalid(
            f"{_where(op, key)} must be an integer from {lo} to {hi}, got {describe_value(value)}",
            op=op,
        )
    return value


def check_number(value: Any, key: str, op: str | None, lo: float, hi: float) -> float:
    """A number in ``[lo, hi]``; for ``lo == 0`` in ``(0, hi]`` (a duration or a budget of 0
    is a mistake), except ``temperature``, where 0 is the usual choice."""
    zero_ok = key == "temperature"
    ok = isinstance(value, int | float) and not isinstance(value, bool) and lo <= value <= hi
    if not ok or (value == 0 and not zero_ok):
        low = f"from {lo}" if zero_ok or lo else "above 0"
        raise WorkflowInvalid(
            f"{_where(op, key)} must be a number {low} up to {hi}, got {describe_value(value)}",
            op=op,
        )
    return float(value)


def check_names(value: Any, key: str, op: str | None) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise WorkflowInvalid(f"{_where(op, key)} must be a list of op names, got "
                              f"{describe_value(value)}", op=op)
    for i, name in enumerate(value):
        if name in value[:i]:
            raise WorkflowInvalid(f"{_where(op, key)} lists {echo(name)} twice", op=op)
    return tuple(value)


def check_scalars(value: Any, key: str, op: str | None) -> dict[str, Scalar]:
    """A mapping of names to scalars; every bad entry is reported (one error collecting
    them)."""
    if not isinstance(value, dict):
        raise WorkflowInvalid(f"{_where(op, key)} must be a mapping, got {describe_value(value)}",
                              op=op)
    out: dict[str, Scalar] = {}
    problems: list[WorkflowInvalid] = []
    for name, item in value.items():
        try:
            _check_var_name(name, key, op)
        except WorkflowInvalid as exc:
            problems.append(exc)
            continue
        if not (item is None or isinstance(item, str | int | float | bool)):
            problems.append(WorkflowInvalid(
                f"{_where(op, key)}.{name} must be a string, number, boolean or null, got "
                f"{describe_value(item)}", op=op,
            ))
        out[name] = item
    if problems:
        raise WorkflowInvalid.collect(problems)
    return out


def _check_var_name(name: Any, key: str, op: str | None) -> None:
    if not isinstance(name, str) or not _VAR_NAME.fullmatch(name):
        raise WorkflowInvalid(
            f"{_where(op, key)}: {echo(name)} is not a valid name (a letter, then letters, digits "
            "or _)", op=op,
        )
    if name in CONTEXT_NAMES or name in _JINJA_NAMES or name in DICT_ATTRIBUTES:
        raise WorkflowInvalid(f"{_where(op, key)}: {name!r} is a reserved name", op=op)


def check_variables(value: Any) -> tuple[dict[str, Scalar], dict[str, str]]:
    """``variables:`` maps a name to its default, or to ``{default: ..., description: ...}``.

    Raises:
        WorkflowInvalid: collecting every bad variable.
    """
    if value is None:
        return {}, {}
    if not isinstance(value, dict):
        raise WorkflowInvalid(f"variables must be a mapping, got {describe_value(value)}")
    defaults: dict[str, Any] = {}
    docs: dict[str, str] = {}
    problems: list[WorkflowInvalid] = []
    for name, item in value.items():
        if isinstance(item, dict):
            unknown = set(item) - {"default", "description"}
            if unknown or "default" not in item:
                problems.append(WorkflowInvalid(
                    f"variables.{name} must be a default value or a mapping with 'default' "
                    "and optionally 'description'"
                ))
                continue
            if "description" in item:
                try:
                    docs[name] = check_text(item["description"], f"variables.{name}.description",
                                            None)
                except WorkflowInvalid as exc:
                    problems.append(exc)
            item = item["default"]
        defaults[name] = item
    try:
        checked = check_scalars(defaults, "variables", None)
    except WorkflowInvalid as exc:
        problems.extend(exc.problems)
    if problems:
        raise WorkflowInvalid.collect(problems)
    return checked, docs


def read_template_file(name: Any, templates_dir: Path | None, *, max_bytes: int,
                       op: str) -> str:
    """The text of template file ``name``: only a regular file inside ``templates_dir``
    (after resolving symlinks), of at most ``max_bytes``, in UTF-8.

    Raises:
        WorkflowInvalid: no templates directory, a name that is absolute, has ``..`` or odd
            characters, escapes the directory, is missing, unreadable, too large or not text.
    """
    if templates_dir is None:
        raise WorkflowInvalid(
            f"op {op!r}: template files are not available here; use an inline prompt", op=op
        )
    if (not isinstance(name, str) or len(name) > _MAX_TEMPLATE_NAME
            or not _TEMPLATE_NAME.fullmatch(name)):
        raise WorkflowInvalid(
            f"op {op!r}: template must name a file in templates/ (like 'reason.j2': letters, "
            f"digits, '_', '-', '.', folders with '/', at most {_MAX_TEMPLATE_NAME} "
            f"characters), got {describe_value(name)}", op=op,
        )
    # Every filesystem call is in here: whatever the name, an OSError is this op's 400.
    try:
        root = templates_dir.resolve()
        path = (root / name).resolve()
        if not path.is_relative_to(root):  # a symlink pointing out of templates/
            raise WorkflowInvalid(f"op {op!r}: template {echo(name)} is outside templates/",
                                  op=op)
        if not path.is_file():
            raise WorkflowInvalid(f"op {op!r}: no template named {echo(name)} in templates/",
                                  op=op)
        with path.open("rb") as file:
            data = file.read(max_bytes + 1)
    except OSError as exc:
        raise WorkflowInvalid(
            f"op {op!r}: cannot read template {echo(name)}: {exc.strerror or exc}", op=op
        ) from None
    if len(data) > max_bytes:
        raise WorkflowInvalid(
            f"op {op!r}: template {echo(name)} is larger than {max_bytes} bytes",
            op=op,
        )
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise WorkflowInvalid(
            f"op {op!r}: template {echo(name)} is not UTF-8 text", op=op
        ) from None
