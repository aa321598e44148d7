"""The chat-completions request body, declared once (:mod:`engine.wire.schema`): the parser
(:mod:`.request`) reads every top-level bound from :data:`REQUEST`, and the OpenAPI document
renders it. The nested shapes (messages, parts, tools) are the ones the parser walks."""

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
    Text,
)

__all__ = ["MAX_N", "MAX_STOP", "NUMBERS", "REQUEST", "TOOL_CHOICE_MODES", "UNSUPPORTED"]

MAX_STOP = 4
MAX_N = 8  # n > 1 may fan out into n upstream calls: keep one request's cost bounded
TOOL_CHOICE_MODES = ("auto", "none", "required")
UNSUPPORTED = {  # parameters that change the answer and that no backend here can honour
    "functions": "'functions' is not supported by this router; use 'tools'.",
    "function_call": "'function_call' is not supported by this router; use 'tool_choice'.",
    "audio": "Audio output is not supported by this router; ask for text only (leave out "
             "'audio' and 'modalities').",
}

_TEXT_PART = Fields({"type": Const("text"), "text": Text()}, required=("type", "text"))
_TEXT_CONTENT = Either((Text(), ListOf(_TEXT_PART)))
_IMAGE_URL = Text(min_length=1, doc="An http(s) URL or data:<media type>;base64,<data>.")
_IMAGE_PART = Fields(
    {"type": Const("image_url"),
     "image_url": Either((Fields({"url": _IMAGE_URL, "detail": Text()}, required=("url",)),
                          _IMAGE_URL))},
    required=("type", "image_url"),
)
_FILE_PART = Fields(
    {"type": Const("file"),
     "file": Fields({"file_data": Text(min_length=1, doc="data:<media type>;base64,<data>."),
                     "file_id": Text(min_length=1, doc="OpenAI upstreams only."),
                     "filename": Text(min_length=1)},
                    doc="One of file_data or file_id. A PDF or text file reaches Anthropic "
                        "upstreams as a document block.")},
    required=("type", "file"),
)
_TOOL_CALL = Fields(
    {"id": Text(min_length=1), "type": Const("function"),
     "function": Fields({"name": Text(min_length=1), "arguments": Text(doc="JSON text.")},
                        required=("name", "arguments"))},
    required=("id", "function"),
)
_ASSISTANT_PART = Either((
    _TEXT_PART,
    Fields({"type": Const("refusal"), "refusal": Text()}, required=("type", "refusal")),
))
_MESSAGE = Either((
    Fields({"role": Text(values=("system", "developer")), "content": _TEXT_CONTENT,
            "name": Text()}, required=("role", "content"),
           doc="System and developer messages become the system prompt, joined."),
    Fields({"role": Const("user"), "name": Text(),
            "content": Either((Text(), ListOf(Either((_TEXT_PART, _IMAGE_PART, _FILE_PART)),
                                              min_items=1)))},
           required=("role", "content")),
    Fields({"role": Const("assistant"), "name": Text(),
            "content": Either((Text(), ListOf(_ASSISTANT_PART))),
            "tool_calls": ListOf(_TOOL_CALL)},
           required=("role",), doc="Needs content or at least one tool call."),
    Fields({"role": Const("tool"), "tool_call_id": Text(min_length=1),
            "content": _TEXT_CONTENT}, required=("role", "tool_call_id", "content")),
))
_TOOL = Fields(
    {"type": Const("function"),
     "function": Fields({"name": Text(min_length=1), "description": Text(),
                         "parameters": Anything(objects_only=True, doc="A JSON Schema."),
                         "strict": Flag(doc="Relayed to every upstream.")},
                        required=("name",))},
    required=("function",),
)
_PENALTY = Num(low=-2, high=2, doc="0 is the same as absent.")

NUMBERS: dict[str, Num] = {  # every numeric field and its bounds (the parser reads them)
    "max_completion_tokens": Num(integer=True, low=1, doc="Wins over max_tokens."),
    "max_tokens": Num(integer=True, low=1),
    "n": Num(integer=True, low=1, high=MAX_N, doc="Above 1 only without stream."),
    "top_logprobs": Num(integer=True, low=0, high=20, doc="Needs logprobs: true."),
    "temperature": Num(low=0, high=2),
    "top_p": Num(low=0, high=1),
    "top_k": Num(integer=True, low=1, doc="Not OpenAI's; vLLM clients send it."),
    "seed": Num(integer=True),
    "frequency_penalty": _PENALTY,
    "presence_penalty": _PENALTY,
}

REQUEST = Fields(
    {
        **NUMBERS,
        "model": Text(min_length=1, doc='A configured model name; absent or "auto" routes.'),
        "messages": ListOf(_MESSAGE, min_items=1,
                           doc="At least one user, assistant or tool message."),
        "tools": ListOf(_TOOL),
        "tool_choice": Either((
            Text(values=TOOL_CHOICE_MODES),
            Fields({"type": Const("function"),
                    "function": Fields({"name": Text(min_length=1)}, required=("name",))},
                   required=("type", "function")),
        ), doc="'required' and a named function need tools; the name must be one of them."),
        "parallel_tool_calls": Flag(),
        "response_format": Either((
            Fields({"type": Text(values=("text", "json_object"))}, required=("type",)),
            Fields({"type": Const("json_schema"),
                    "json_schema": Fields({"name": Text(min_length=1),
                                           "schema": Anything(objects_only=True),
                                           "strict": Flag()}, required=("name",))},
                   required=("type", "json_schema")),
        )),
        "stream": Flag(),
        "stream_options": Fields({"include_usage": Flag()}),
        "modalities": ListOf(Text(values=("text",))),
        "user": Text(),
        "logprobs": Flag(),
        "stop": Either((Text(), ListOf(Text(), max_items=MAX_STOP))),
        "logit_bias": Fields({}, values=Num(low=-100, high=100), key_pattern="^[0-9]+$",
                             doc="Token ids to a bias."),
        "reasoning_effort": Text(min_length=1),
        "verbosity": Text(min_length=1),
        # OpenAI's own: forwarded to OpenAI-compatible upstreams, left out for Anthropic ones
        "prompt_cache_key": Text(min_length=1),
        "safety_identifier": Text(min_length=1,
                                  doc="Anthropic upstreams get it as metadata.user_id when "
                                      "user is unset."),
        "service_tier": Text(min_length=1),
        "store": Flag(),
        "metadata": Fields({}, values=Text()),
        "prediction": Fields({"type": Const("content"), "content": _TEXT_CONTENT},
                             required=("type",)),
        "web_search_options": Anything(objects_only=True,
                                       doc="Routes the request to OpenAI upstreams."),
        "router_cache": ROUTER_CACHE,
    },
    required=("messages",),
    forbidden=tuple(UNSUPPORTED),
    doc="Fields not listed here that do not change the answer are ignored.",
)
