"""The RESP2 reply parser: any replies, cut into any pieces as a socket may deliver them, come
out whole, in order, and the same as from one piece (nested arrays, empty and null ones, null
bulk strings, errors, bulk strings holding CRLF)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.stores.redis.resp import NEED_DATA, Parser, Reply, ReplyError

text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=12)
replies = st.recursive(
    st.one_of(st.binary(max_size=20), st.integers(-(2**63), 2**63 - 1), st.none(),
              text.map(ReplyError)),
    lambda inner: st.lists(inner, max_size=6),
    max_leaves=40,
)


def encode_reply(reply: Reply, *, simple: bool = False) -> bytes:
    if isinstance(reply, ReplyError):
        return b"-" + str(reply.args[0]).encode() + b"\r\n"
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if reply is None:
        return b"$-1\r\n"
    if isinstance(reply, bytes):
        if simple and b"\r" not in reply and b"\n" not in reply:
            return b"+" + reply + b"\r\n"
        return b"$%d\r\n%b\r\n" % (len(reply), reply)
    return b"*%d\r\n" % len(reply) + b"".join(encode_reply(r) for r in reply)


def shown(reply: object) -> object:
    if isinstance(reply, list):
        return [shown(r) for r in reply]
    return repr(reply) if isinstance(reply, ReplyError) else reply


@settings(max_examples=300, deadline=None)
@given(sent=st.lists(st.tuples(replies, st.booleans()), max_size=6), data=st.data())
def test_replies_cut_anywhere_come_out_whole(sent: list[tuple[Reply, bool]],
                                              data: st.DataObject) -> None:
    wire = b"".join(encode_reply(reply, simple=simple) for reply, simple in sent)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(wire)), max_size=12)))
    parser = Parser()
    got: list[Reply] = []
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        parser.feed(wire[start:end])
        while (reply := parser.next()) is not NEED_DATA:
            got.append(reply)  # type: ignore[arg-type]
    assert shown(got) == shown([reply for reply, _ in sent])


def test_a_null_array_and_an_empty_one() -> None:
    parser = Parser()
    parser.feed(b"*-1\r\n*0\r\n*2\r\n*0\r\n*-1\r\n")
    assert [parser.next(), parser.next(), parser.next(), parser.next()] == [
        None, [], [[], None], NEED_DATA]
