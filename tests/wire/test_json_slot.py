"""A learnt payload shape with one open string (``engine.wire.json_slot``): what it reads is
what parsing the whole payload gives, for payloads of its shape and for anything else put in
its place (other values, strings cut short, several tokens, stray bytes)."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from engine.wire.json_slot import StringSlot, _replaced

texts = st.text(alphabet=st.sampled_from(['a', ' ', '"', '\\', '/', '}', ']', ',', ':', '\n',
                                          '\x00', '\x1f', 'é', '€', '😀', 'u', '{', '\u2028']),
                max_size=12)


def dumped(value: Any, style: int) -> str:
    """JSON text of ``value`` as different servers write it (compact or spaced, escaped or
    not)."""
    if style == 0:
        return orjson.dumps(value).decode()
    if style == 1:
        return json.dumps(value)  # ", " and ": ", non-ASCII escaped
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def chunk(text: Any, extra: Any) -> dict[str, Any]:
    """A chunk whose id holds the key sought (escaped, so not a key), and with ``extra`` a
    "content" key of its own ahead of the delta's."""
    value: dict[str, Any] = {"id": "x\"delta\":{\"content\":\"y"}
    if extra is not None:
        value["content"] = extra
    value["choices"] = [{"index": 0, "delta": {"content": text}, "finish_reason": None}]
    return value


PATH = ("choices", 0, "delta", "content")

middles = st.one_of(
    texts.map(lambda t: orjson.dumps(t).decode()),
    texts.map(lambda t: json.dumps(t)),
    texts.map(lambda t: " " + json.dumps(t) + "\n"),
    st.sampled_from([
        '', '"', '"a', 'a"', '"a","content":"b"', '"a"}', '"a"]', 'null', '1', '[]', '{}',
        '"\\ud800"', '"\\x"', '"\\', '"a" "b"', '"\x00"', '\ufeff"a"', '"a"\ufeff', '""',
        '"}]}', '"a"},"b":{"c":"d"', '\u00a0"a"',
    ]),
    texts,
)


@given(texts, st.sampled_from([None, "z", 1]), st.integers(0, 2), st.lists(middles, max_size=6))
def test_a_read_string_is_what_the_whole_payload_parses_to(
    text: str, extra: Any, style: int, others: list[str]
) -> None:
    value = chunk(text, extra)
    payload = dumped(value, style)
    slot = StringSlot.learn(payload, value, PATH, '"content":')
    if slot is None:  # the first "content" key is not the delta's (extra is in the way)
        assert extra is not None
        return
    assert slot.read(payload) == text
    for middle in others:
        candidate = slot.head + middle + slot.tail
        read = slot.read(candidate)
        try:
            whole = orjson.loads(candidate)
        except orjson.JSONDecodeError:
            assert read is None
            continue
        if read is not None:
            assert whole == _replaced(value, PATH, read)


def test_a_duplicate_key_is_learnt_only_where_its_value_wins() -> None:
    payload = '{"delta":{"content":"a","content":"b"}}'
    value = orjson.loads(payload)
    assert StringSlot.learn(payload, value, ("delta", "content"), '"content":') is None
    slot = StringSlot.learn(payload, value, ("delta", "content"),
                           '"content":"a","content":')
    assert slot is not None
    assert slot.read('{"delta":{"content":"a","content":"c"}}') == "c"
    assert slot.read('{"delta":{"content":"x","content":"c"}}') is None


def test_other_shapes_are_not_read() -> None:
    payload = '{"a":1,"t":"x","b":[2]}'
    slot = StringSlot.learn(payload, orjson.loads(payload), ("t",), '"t":')
    assert slot is not None
    assert slot.read('{"a":1,"t":"yz","b":[2]}') == "yz"
    for other in ['{"a":2,"t":"y","b":[2]}', '{"a":1,"t":"y","b":[3]}', '{"a":1,"t":7,"b":[2]}',
                  '{"a":1,"t":"y","b":[2]} ', '{"a":1,"t":"y", "b":[2]}', '{"a":1,"t":"b":[2]}']:
        assert slot.read(other) is None
