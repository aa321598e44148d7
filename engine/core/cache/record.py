"""A cache entry as router processes hand it to each other (through Redis). Sans-IO.

A record carries what another process needs to serve the entry as a hit and to file it
where its own lookups find it: the exact part's digest (which includes the tenant, so a
record can only ever answer its own tenant), the final message's text (the receiver
normalises and fingerprints it itself: a fingerprint is a function of the text and the
embedding table every process loads), the answer, and what a hit reports (model, tier,
cost). ``expires`` is wall-clock time (seconds since the epoch): the processes share no
monotonic clock, and an entry must expire everywhere at once.

:func:`entry_id` names an entry the same in every process: two processes caching the same
question (same exact part, same normalised text) write one entry, as one process would.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from engine.messages import ChatResult, TextPart, ThinkingPart, ToolCall, Usage

__all__ = ["FORMAT", "CacheRecord", "decode_record", "encode_record", "entry_id", "pack_result",
           "unpack_result"]

FORMAT = 1


@dataclass(frozen=True, slots=True)
class CacheRecord:
    exact: bytes
    text: str
    result: ChatResult
    model: str
    tier: int
    cost_usd: float
    reference_usd: float
    expires: float
    size: int


def entry_id(exact: bytes, norm: str) -> str:
    """The entry's name in every process: the exact part and the normalised text."""
    return hashlib.blake2b(exact + b"\x00" + norm.encode(), digest_size=16).hexdigest()


def encode_record(record: CacheRecord) -> bytes:
    return orjson.dumps({
        "v": FORMAT, "exact": record.exact.hex(), "text": record.text,
        "result": _encode_result(record.result), "model": record.model, "tier": record.tier,
        "cost": record.cost_usd, "ref": record.reference_usd, "expires": record.expires,
        "size": record.size,
    })


def decode_record(data: bytes) -> CacheRecord | None:
    """The record, or ``None`` for one this version cannot read (written by a newer router
    during a rolling upgrade: a miss, never a wrong answer)."""
    try:
        raw = orjson.loads(data)
        if not isinstance(raw, dict) or raw.get("v") != FORMAT:
            return None
        return CacheRecord(
            exact=bytes.fromhex(raw["exact"]), text=raw["text"],
            result=_decode_result(raw["result"]), model=raw["model"], tier=int(raw["tier"]),
            cost_usd=float(raw["cost"]), reference_usd=float(raw["ref"]),
            expires=float(raw["expires"]), size=int(raw["size"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def pack_result(result: ChatResult) -> bytes:
    """An answer as one ``bytes`` (what a process's own cache keeps: see
    ``engine.core.cache.responses``)."""
    return orjson.dumps(_encode_result(result))


def unpack_result(packed: bytes) -> ChatResult:
    """The answer :func:`pack_result` packed."""
    return _decode_result(orjson.loads(packed))


def _encode_result(result: ChatResult) -> dict[str, Any]:
    usage = result.usage
    return {
        "content": [{"text": p.text} if isinstance(p, TextPart)
                    else {"thinking": p.thinking, "signature": p.signature,
                          "redacted": p.redacted} if isinstance(p, ThinkingPart)
                    else {"id": p.id, "name": p.name, "arguments": p.arguments}
                    for p in result.content],
        "stop_reason": result.stop_reason, "stop_sequence": result.stop_sequence,
        "usage": [usage.input_tokens, usage.output_tokens, usage.cache_read_tokens,
                  usage.cache_write_tokens],
        "upstream_model": result.upstream_model,
        "logprobs": list(result.logprobs) if result.logprobs is not None else None,
        "extra_choices": [_encode_result(c) for c in result.extra_choices],
    }


def _decode_result(raw: dict[str, Any]) -> ChatResult:
    content: list[TextPart | ToolCall | ThinkingPart] = [
        TextPart(p["text"]) if "text" in p
        else ThinkingPart(p["thinking"], p["signature"], p["redacted"]) if "thinking" in p
        else ToolCall(p["id"], p["name"], p["arguments"])
        for p in raw["content"]
    ]
    logprobs = raw["logprobs"]
    return ChatResult(
        content=tuple(content), stop_reason=raw["stop_reason"],
        stop_sequence=raw["stop_sequence"], usage=Usage(*(int(n) for n in raw["usage"])),
        upstream_model=raw["upstream_model"],
        logprobs=tuple(logprobs) if logprobs is not None else None,
        extra_choices=tuple(_decode_result(c) for c in raw["extra_choices"]),
    )
