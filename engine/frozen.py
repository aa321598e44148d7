"""Frozen dataclasses, built for less on the hot paths.

A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` (its own
``__setattr__`` refuses): a call of a slot wrapper per field, ~1,400 instructions each, which
is most of the cost of a :class:`~engine.messages.ChatRequest` (39 fields) or of a stream's
:class:`~engine.messages.TextDelta`. :func:`frozen_constructor` makes the same object for less:
a draft with the same slots, whose plain ``__setattr__`` stores each field at the cost of an
attribute store, turned into the frozen class by assigning ``__class__`` (CPython allows it
between two classes of the same layout, and checks that they are).

The constructor takes the dataclass's parameters, with its defaults and default factories; it
checks nothing the dataclass does not (no types). What it returns is of the dataclass, equal
to and hashing as ``cls(...)`` with the same arguments, and as frozen
(``tests/test_messages.py`` holds each one the engine uses to its dataclass).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar, cast

__all__ = ["frozen_constructor"]

_T = TypeVar("_T")
_OWN_NAMES = frozenset({"o", "_new", "_draft", "_cls", "_unset"})


def frozen_constructor(cls: type[_T]) -> type[_T]:
    """``cls(...)`` for the frozen, slotted dataclass ``cls`` (no base class, no
    ``__post_init__``, every field in ``__init__``), without its per-field
    ``object.__setattr__``. A function; typed as ``cls`` so that the type checker holds its
    calls to the dataclass's parameters (call it, nothing else: it is no class).

    >>> @dataclasses.dataclass(frozen=True, slots=True)
    ... class Point:
    ...     x: int
    ...     y: int = 0
    >>> new_point = frozen_constructor(Point)
    >>> new_point(1), new_point(1, y=2) == Point(1, 2), type(new_point(1)) is Point
    (Point(x=1, y=0), True, True)

    Raises:
        TypeError: ``cls`` is not such a dataclass.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} is not a dataclass")
    fields = dataclasses.fields(cls)
    names = tuple(f.name for f in fields)
    params = getattr(cls, "__dataclass_params__", None)
    if (cls.__bases__ != (object,) or getattr(cls, "__slots__", None) != names
            or not getattr(params, "frozen", False) or hasattr(cls, "__post_init__")
            or not all(f.init for f in fields)):
        raise TypeError(f"{cls.__name__} is not a plain frozen dataclass with slots")
    taken = [n for n in names if n in _OWN_NAMES or n.startswith(("_default_", "_factory_"))]
    if taken:  # the generated function's own names: a field of one of them would shadow it
        raise TypeError(f"{cls.__name__} has a field named {taken[0]!r}")
    return cast("type[_T]", _constructor(cls, fields))


def _constructor(cls: type[_T], fields: tuple[dataclasses.Field[Any], ...]
                 ) -> Callable[..., _T]:
    names = tuple(f.name for f in fields)
    draft = type(f"_{cls.__name__}Draft", (), {"__slots__": names, "__module__": __name__})
    scope: dict[str, Any] = {"_new": object.__new__, "_draft": draft, "_cls": cls,
                             "_unset": object()}
    parameters, lines = [], []
    for f in fields:
        if f.default is not dataclasses.MISSING:
            scope[f"_default_{f.name}"] = f.default
            parameters.append(f"{f.name}=_default_{f.name}")
            lines.append(f"    o.{f.name} = {f.name}")
        elif f.default_factory is not dataclasses.MISSING:
            scope[f"_factory_{f.name}"] = f.default_factory
            parameters.append(f"{f.name}=_unset")
            lines.append(f"    o.{f.name} = _factory_{f.name}() if {f.name} is _unset"
                         f" else {f.name}")
        else:
            parameters.append(f.name)
            lines.append(f"    o.{f.name} = {f.name}")
    name = f"new_{cls.__name__}"
    source = (f"def {name}({', '.join(parameters)}):\n    o = _new(_draft)\n"
              + "\n".join(lines) + "\n    o.__class__ = _cls\n    return o\n")
    exec(source, scope)  # generated from the fields, as dataclasses makes __init__
    constructor: Callable[..., _T] = scope[name]
    constructor.__qualname__ = name
    constructor.__module__ = cls.__module__
    constructor.__doc__ = f"``{cls.__name__}(...)``, made without ``object.__setattr__``."
    return constructor
