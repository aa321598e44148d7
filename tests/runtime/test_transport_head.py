"""``engine.runtime.transport``'s request head: header lines h11 validated once are not
validated again, and every request is accepted or refused exactly as h11 alone would."""

from __future__ import annotations

from typing import Any

import h11
from hypothesis import given
from hypothesis import strategies as st

from engine.runtime import transport

_NAMES = [b"Host", b"content-type", b"Content-Length", b"content-length", b"authorization",
          b"transfer-encoding", b"bad name", b"x\x00", b"", "str-name"]
_VALUES = [b"127.0.0.1:8080", b"application/json", b"12", b"012", b" 12", b"12\r\n", b"1,1",
           b"", b"chunked", b"gzip", b"a\nb", b"Bearer sk-x", b"\xff", "str-value"]
_lines = st.lists(st.tuples(st.sampled_from(_NAMES), st.sampled_from(_VALUES)), max_size=5)


def _h11(method: str, headers: list[Any]) -> Any:
    try:
        head = h11.Request(method=method, target=b"/v1/chat", headers=headers)
    except h11.LocalProtocolError as error:
        return type(error), str(error)
    return head.method, head.target, head.http_version, list(head.headers.raw_items())


def _ours(method: str, headers: list[Any]) -> Any:
    try:
        head = transport._request_head(method, b"/v1/chat", headers)
    except h11.LocalProtocolError as error:
        return type(error), str(error)
    return head.method, head.target, head.http_version, list(head.headers.raw_items())


@given(st.lists(_lines, min_size=1, max_size=4), st.sampled_from(["POST", "GET", "BAD METHOD"]))
def test_a_request_head_is_what_h11_makes_of_it(requests: list[list[Any]], method: str) -> None:
    # Several requests in turn: later ones meet lines the earlier ones left validated.
    for headers in requests:
        for _ in range(2):
            assert _ours(method, headers) == _h11(method, headers)
