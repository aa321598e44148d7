"""The hot paths' constructors of frozen dataclasses (``engine.frozen``): the canonical types'
(``engine.messages.new_*``) and the request path's others, held to the dataclasses they
stand for: the same object, equal, hashing alike, as frozen."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core import planner
from engine.core.routing import decide, scoring
from engine.frozen import frozen_constructor
from engine.messages import (
    ChatRequest,
    ChatResult,
    Finish,
    Message,
    TextDelta,
    TextPart,
    Usage,
    new_chat_request,
    new_chat_result,
    new_finish,
    new_message,
    new_text_delta,
    new_text_part,
    new_usage,
)
from engine.runtime import gateway, node
from engine.wire import providers

CONSTRUCTORS: list[tuple[type[Any], Callable[..., Any]]] = [
    (ChatRequest, new_chat_request),
    (ChatResult, new_chat_result),
    (Finish, new_finish),
    (Message, new_message),
    (TextDelta, new_text_delta),
    (TextPart, new_text_part),
    (Usage, new_usage),
    (node.Served, node._new_served),
    (node.NodeResult, node._new_node_result),
    (decide.Route, decide._new_route),
    (scoring.Score, scoring._new_score),
    (scoring.Score, decide._new_score),  # decide's own
    (planner.Node, planner._new_node),
    (planner.Plan, planner._new_plan),
    (gateway.FinishedRequest, gateway._new_finished),
    (providers.UpstreamCall, providers._new_upstream_call),
]
IDS = [f"{cls.__name__}-{i}" for i, (cls, _) in enumerate(CONSTRUCTORS)]

# any hashable value: the constructors, like the dataclasses, check no types
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.tuples(inner, inner) | st.lists(inner, max_size=3).map(tuple),
    max_leaves=6,
)


@st.composite
def arguments(draw: st.DrawFn, cls: type[Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Positional arguments for a prefix of ``cls``'s fields, keywords for some of the rest
    (every field without a default is given)."""
    fields = dataclasses.fields(cls)
    required = sum(1 for f in fields if f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING)
    positional = draw(st.integers(required, len(fields)))
    args = tuple(draw(values) for _ in fields[:positional])
    kwargs = {f.name: draw(values) for f in fields[positional:] if draw(st.booleans())}
    return args, kwargs


@pytest.mark.parametrize(("cls", "new"), CONSTRUCTORS, ids=IDS)
@given(data=st.data())
def test_a_constructor_makes_what_the_dataclass_makes(
    cls: type[Any], new: Callable[..., Any], data: st.DataObject
) -> None:
    args, kwargs = data.draw(arguments(cls))
    made, expected = new(*args, **kwargs), cls(*args, **kwargs)
    assert type(made) is cls
    assert made == expected and expected == made
    assert repr(made) == repr(expected)
    try:
        hashed = hash(expected)
    except TypeError:  # a field that is not hashable (a dict): so neither is the copy
        with pytest.raises(TypeError):
            hash(made)
    else:
        assert hash(made) == hashed
    for f in dataclasses.fields(cls):
        assert getattr(made, f.name) is getattr(expected, f.name) or (
            f.default_factory is not dataclasses.MISSING and f.name not in kwargs)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(made, f.name, None)
        with pytest.raises(dataclasses.FrozenInstanceError):
            delattr(made, f.name)
    assert not hasattr(made, "__dict__")
    assert pickle.loads(pickle.dumps(made)) == expected
    assert copy.copy(made) == expected and copy.deepcopy(made) == expected
    assert dataclasses.replace(made) == expected


@pytest.mark.parametrize(("cls", "new"), CONSTRUCTORS, ids=IDS)
def test_a_constructor_takes_what_the_dataclass_takes(
    cls: type[Any], new: Callable[..., Any]
) -> None:
    """The same parameters, defaults and default factories; the same faults."""
    fields = dataclasses.fields(cls)
    first = fields[0].name
    required = [f for f in fields if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    given_ = {f.name: "x" for f in required}
    made, expected = new(**given_), cls(**given_)
    assert made == expected
    for f in fields:
        if f.default_factory is not dataclasses.MISSING:  # a fresh value each time
            assert getattr(made, f.name) == f.default_factory()
            assert getattr(new(**given_), f.name) is not getattr(made, f.name)
    with pytest.raises(TypeError):
        new(**given_, no_such_field=1)
    with pytest.raises(TypeError):
        new(*(["x"] * (len(fields) + 1)))
    if required:
        with pytest.raises(TypeError):
            new()
    with pytest.raises(TypeError):
        new("x", **{first: "x"})


def test_only_a_plain_frozen_dataclass_with_slots_gets_one() -> None:
    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclasses.dataclass(slots=True)
    class Mutable:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclasses.dataclass(frozen=True, slots=True)
    class Shadowing:  # a field named as one of the generated function's own names
        o: int

    for cls in (NoSlots, Mutable, Checked, Shadowing, int):
        with pytest.raises(TypeError):
            frozen_constructor(cls)
