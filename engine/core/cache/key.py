"""What makes two requests "the same", for the cache and for in-flight dedup. Sans-IO.

A request splits into an *exact* part and a *semantic* part:

* exact: the tenant (a digest of the client's credential), the routing target (pinned model,
  or the routed tier override of a workflow op), the system prompt, every message before the
  last, the last message's non-text parts (images, tool results), tools, tool choice, response
  format and every generation parameter (temperature, top_p, top_k, max tokens, stop, seed, n,
  user, penalties, logit_bias, logprobs and top_logprobs, reasoning effort, verbosity): every
  field of :class:`ChatRequest` but the transport flags, so a parameter added there is part of
  the key without a change here;
* semantic: the text of the final user message, and nothing else.

Two requests whose exact parts differ never share a cache entry, whatever their wording. The
exact part is hashed (BLAKE2b over a canonical JSON encoding, so field order and Python object
identity play no part); the semantic text is kept as is for the similarity search.

Dedup is stricter: it joins only requests identical in *everything* (exact part, semantic text
and the stream flag), since the follower receives the leader's answer byte for byte.
"""

from __future__ import annotations

import dataclasses
import hashlib
import operator
from dataclasses import dataclass

import orjson

from engine.messages import ChatRequest, Message, TextPart

__all__ = ["RequestKey", "request_key"]


@dataclass(frozen=True, slots=True)
class RequestKey:
    """``exact``: digest of the exact part; ``text``: the semantic part; ``full``: digest of
    the whole request (the dedup key)."""

    exact: bytes
    text: str
    full: bytes


# What the exact part's digest encodes of a request: orjson writes a dataclass as its fields in
# order, so an instance of this plain (not frozen) copy of ChatRequest's fields encodes to the
# same bytes as the request itself, and costs a fifth of ``dataclasses.replace``'s frozen
# ``__init__`` (one ``object.__setattr__`` per field) to build.
_FIELDS = tuple(f.name for f in dataclasses.fields(ChatRequest))
_ExactPart = dataclasses.make_dataclass("_ExactPart", _FIELDS, slots=True)
_OTHER_FIELDS = operator.attrgetter(*_FIELDS[1:-2])
if _FIELDS[0] != "messages" or _FIELDS[-2:] != ("stream", "include_usage"):
    raise ImportError("request_key expects ChatRequest's fields to start with messages and "
                      "end with stream, include_usage")


def _digest(*parts: object) -> bytes:
    encoded = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(encoded, digest_size=20).digest()


def request_key(request: ChatRequest, *, tenant: str, target: str) -> RequestKey:
    """Split ``request`` into its cache and dedup keys.

    ``target`` names where the request is routed: a model name when pinned, else the tier
    routing chose or was told (``"tier:2"``), so answers from different tiers never mix.

    >>> from engine.messages import ChatRequest, Message, TextPart
    >>> ask = lambda t, **kw: ChatRequest(messages=(Message("user", (TextPart(t),)),), **kw)
    >>> a = request_key(ask("Hi there"), tenant="k1", target="tier:1")
    >>> b = request_key(ask("Hello there"), tenant="k1", target="tier:1")
    >>> a.exact == b.exact, a.full == b.full
    (True, False)
    >>> request_key(ask("Hi there", temperature=0.5), tenant="k1", target="tier:1").exact == a.exact
    False
    >>> request_key(ask("Hi there"), tenant="k2", target="tier:1").exact == a.exact
    False
    """
    messages = request.messages
    text = ""
    final_rest: tuple[object, ...] = ()
    if messages and messages[-1].role == "user":
        last: Message = messages[-1]
        text = last.text
        final_rest = tuple(p for p in last.parts if not isinstance(p, TextPart))
        messages = messages[:-1]
    # Everything but the semantic text and the transport-level flags.
    exact_request = _ExactPart(messages, *_OTHER_FIELDS(request), False, False)
    exact = _digest(tenant, target, exact_request, final_rest)
    full = hashlib.blake2b(
        exact + (b"\x01" if request.stream else b"\x00") + text.encode(), digest_size=20
    ).digest()
    return RequestKey(exact=exact, text=text, full=full)
