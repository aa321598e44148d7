"""Options whose value the command line sends in an HTTP header (``--api-key``,
``--admin-key``, ``--idempotency-key``): a header carries printable ASCII only, so any other
value is refused as the option's own error (exit status 2), before anything is sent."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["header_text", "is_header_text"]


def is_header_text(value: str, *, max_length: int | None = None) -> bool:
    """Whether ``value`` can be sent as a header's value: 1 or more printable ASCII
    characters (at most ``max_length``).

    >>> is_header_text("llmr-abc"), is_header_text("clé"), is_header_text("a\\nb")
    (True, False, False)
    >>> is_header_text(""), is_header_text("x" * 256, max_length=255)
    (False, False)
    """
    return (bool(value) and value.isascii() and value.isprintable()
            and (max_length is None or len(value) <= max_length))


def header_text(max_length: int | None = None) -> Callable[[str], str]:
    """An argparse ``type`` that accepts what :func:`is_header_text` accepts."""
    limit = f"1 to {max_length} " if max_length is not None else ""

    def check(value: str) -> str:
        if not is_header_text(value, max_length=max_length):
            raise argparse.ArgumentTypeError(
                f"must be {limit}printable ASCII characters (it is sent in an HTTP header)")
        return value

    return check
