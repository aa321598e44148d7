"""The Messages API request body, declared once (:mod:`engine.wire.schema`): the parser
(:mod:`.request`) reads every top-level bound and the content blocks each role may send from
here, and the OpenAPI document renders it. The nested shapes are the ones the parser walks."""

from __future__ import annotations

from engine.wire.schema import (
    ROUTER_CACHE,
    Anything,
    Const,
    Either,
    Fields,
    Flag,
    ListOf,
    Num,
    Spec,
    Text,
)

from .output import EFFORTS

__all__ = ["BLOCK_ROLES", "IMAGE_TYPES", "NUMBERS", "REQUEST", "UNSUPPORTED"]

IMAGE_TYPES = ("image/gif", "image/jpeg", "image/png", "image/webp")
# Parameters that change the answer and that the router cannot honour: refused, never dropped.
UNSUPPORTED = {
    "mcp_servers": "MCP servers are not supported by this router",
    "container": "containers (code execution) are not supported by this router",
    "context_management": "context management is not supported by this router",
}

# A prompt-caching breakpoint: relayed to Anthropic upstreams as given, not sent to others.
_CACHE = Fields({"type": Const("ephemeral"), "ttl": Text(values=("5m", "1h"))},
                required=("type",), doc="Relayed to Anthropic upstreams as given.")
_TEXT = Fields({"type": Const("text"), "text": Text(min_length=1), "cache_control": _CACHE},
               required=("type", "text"), doc="An empty text block is dropped.")
_IMAGE = Fields({"type": Const("image"), "source": Either((
    Fields({"type": Const("base64"), "media_type": Text(values=IMAGE_TYPES),
            "data": Text(min_length=1)}, required=("type", "media_type", "data")),
    Fields({"type": Const("url"), "url": Text(min_length=1)}, required=("type", "url")),
)), "cache_control": _CACHE}, required=("type", "source"))
_DOCUMENT = Fields({"type": Const("document"), "source": Either((
    Fields({"type": Const("base64"), "media_type": Const("application/pdf"),
            "data": Text(min_length=1)}, required=("type", "media_type", "data")),
    Fields({"type": Const("text"), "media_type": Const("text/plain"), "data": Text()},
           required=("type", "data")),
    Fields({"type": Const("url"), "url": Text(min_length=1)}, required=("type", "url")),
)), "title": Text(), "context": Text(), "citations": Fields({"enabled": Flag()}),
    "cache_control": _CACHE}, required=("type", "source"),
    doc="Relayed to Anthropic upstreams as given; OpenAI upstreams get a base64 PDF as a "
        "file part and a text source as text, and a URL source routes to Anthropic upstreams.")
_BLOCKS: dict[str, Spec] = {  # each content block the router takes, by type
    "text": _TEXT,
    "image": _IMAGE,
    "document": _DOCUMENT,
    "tool_result": Fields({
        "type": Const("tool_result"), "tool_use_id": Text(min_length=1),
        "content": Either((Text(), ListOf(Either((
            Fields({"type": Const("text"), "text": Text()}, required=("type",)), _IMAGE))))),
        "is_error": Flag(), "cache_control": _CACHE,
    }, required=("type", "tool_use_id")),
    "tool_use": Fields({"type": Const("tool_use"), "id": Text(min_length=1),
                        "name": Text(min_length=1), "input": Anything(objects_only=True),
                        "cache_control": _CACHE},
                       required=("type", "id", "name", "input")),
    "thinking": Fields({"type": Const("thinking"), "thinking": Text(), "signature": Text()},
                       required=("type",), doc="Sent back as given to Anthropic upstreams; "
                                               "left out for others."),
    "redacted_thinking": Fields({"type": Const("redacted_thinking"), "data": Text()},
                                required=("type",), doc="As thinking."),
}
BLOCK_ROLES = {  # the turns each content block may appear in
    "text": ("user", "assistant"),
    "image": ("user",),
    "document": ("user",),
    "tool_result": ("user",),
    "tool_use": ("assistant",),
    "thinking": ("assistant",),
    "redacted_thinking": ("assistant",),
}


def _message(role: str) -> Fields:
    blocks = tuple(spec for kind, spec in _BLOCKS.items() if role in BLOCK_ROLES[kind])
    return Fields({"role": Const(role), "content": Either((
        Text(min_length=1), ListOf(Either(blocks), min_items=1)))},
        required=("role", "content"))


NUMBERS: dict[str, Num] = {  # every numeric field and its bounds (the parser reads them)
    "max_tokens": Num(integer=True, low=1),
    "temperature": Num(low=0, high=1),
    "top_p": Num(low=0, high=1),
    "top_k": Num(integer=True, low=0),
}

REQUEST = Fields(
    {
        "model": Text(min_length=1, doc='A configured model name, or "auto" to route.'),
        **NUMBERS,
        "messages": ListOf(Either((_message("user"), _message("assistant"))), min_items=1,
                           doc="Content may be empty only in a final assistant turn (a "
                               "prefill); at least one turn must hold content."),
        "system": Either((Text(), ListOf(_TEXT))),
        "tools": ListOf(Fields({"type": Const("custom"), "name": Text(min_length=1),
                                "description": Text(),
                                "input_schema": Anything(objects_only=True),
                                "cache_control": _CACHE,
                                "strict": Flag(doc="Relayed to every upstream.")},
                               required=("name", "input_schema"))),
        "tool_choice": Either((
            Fields({"type": Text(values=("auto", "any", "none")),
                    "disable_parallel_tool_use": Flag()}, required=("type",)),
            Fields({"type": Const("tool"), "name": Text(min_length=1),
                    "disable_parallel_tool_use": Flag()}, required=("type", "name")),
        )),
        "stop_sequences": ListOf(Text()),
        "metadata": Fields({"user_id": Text()}),
        "stream": Flag(),
        # Extended thinking: relayed as given; a request with it routes to Anthropic upstreams.
        "thinking": Either((
            Fields({"type": Const("enabled"), "budget_tokens": Num(integer=True, low=1)},
                   required=("type", "budget_tokens")),
            Fields({"type": Text(values=("adaptive", "between_tools", "disabled"))},
                   required=("type",)),
        ), doc="Extended thinking: served by Anthropic upstreams, which get it as given and "
               "whose thinking blocks are relayed intact; disabled is as if absent."),
        "output_config": Fields({
            "effort": Text(values=EFFORTS, doc="Served by Anthropic upstreams."),
            "format": Fields({"type": Const("json_schema"),
                              "schema": Anything(objects_only=True)},
                             required=("type", "schema"),
                             doc="A JSON answer of this schema, from any upstream."),
        }),
        "cache_control": _CACHE,
        "router_cache": ROUTER_CACHE,
    },
    required=("model", "max_tokens", "messages"),
    forbidden=tuple(UNSUPPORTED),
    doc="Fields not listed here that do not change the answer (service_tier, ...) are "
        "ignored.",
)
