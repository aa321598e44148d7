"""The Anthropic Messages request, both ways: read from clients, written to upstreams.

Sans-IO. :func:`parse_request` validates what a client sends to ``POST /v1/messages``, once,
with errors naming the field path the way Anthropic's own API does
(``messages.0.content.1.type``), and translates it to the canonical
:class:`~engine.messages.ChatRequest`; the engine never sees the wire format.

:func:`render_request` writes a canonical request as the body Anthropic takes. Anthropic
differs from the canonical shape in ways it hides from the engine: roles must alternate,
``max_tokens`` is required, ``temperature`` stops at 1, and there is no JSON mode (it becomes
a system-prompt instruction).
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from engine.errors import RequestInvalid, echo
from engine.messages import (
    ChatRequest,
    DocumentPart,
    ImagePart,
    Message,
    Part,
    TextPart,
    ThinkingPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
)
from engine.wire.schema import Num

from .body import BLOCK_ROLES, IMAGE_TYPES, NUMBERS, UNSUPPORTED
from .document import parse_document, render_document
from .output import parse_output_config

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "JSON_INSTRUCTION",
    "load_object",
    "parse_request",
    "render_request",
    "render_thinking",
    "tool_arguments",
    "tool_input",
]

DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; this fits every current model.
JSON_INSTRUCTION = (
    "Answer with only one valid JSON object: no prose, no code fences, nothing before or after it."
)

_IMAGE_TYPES = frozenset(IMAGE_TYPES)
_TOOL_CHOICES: dict[Any, Literal["auto", "none", "required", "tool"]] = {
    "auto": "auto",
    "any": "required",
    "tool": "tool",
    "none": "none",
}
_TOOL_CHOICE_TYPES = {mode: kind for kind, mode in _TOOL_CHOICES.items()}


# ---- reading: a client's request as the canonical one ----------------------------------------


def load_object(body: bytes) -> dict[str, Any]:
    """The JSON object a request body holds (else RequestInvalid)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestInvalid(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestInvalid("the request body must be a JSON object")
    return data


def parse_request(body: bytes | dict[str, Any]) -> ChatRequest:
    """A Messages API request body (or its JSON object, decoded) as a :class:`ChatRequest`.

    Fields that do not change the answer (``service_tier``, ...) are ignored; those that do
    and that the router cannot honour (MCP servers, ...) are refused. ``model`` omitted (or
    null) or ``"auto"`` leaves the choice to the router.

    Raises:
        RequestInvalid: the body is not a valid Messages request; ``param`` is the field path.
    """
    data = body if isinstance(body, dict) else load_object(body)
    model = _string(data, "model", "model")
    if model == "":
        raise _invalid("model", "must not be empty")
    max_tokens = _integer(data, "max_tokens", required=True)
    metadata = _optional(data, "metadata", dict, "an object") or {}
    tool_choice, parallel = _parse_tool_choice(data.get("tool_choice"))
    stop = _optional(data, "stop_sequences", list, "a list of strings") or []
    if not all(isinstance(s, str) for s in stop):
        raise _invalid("stop_sequences", "must be a list of strings")
    thinking = _parse_thinking(data.get("thinking"))
    for name, problem in UNSUPPORTED.items():
        if data.get(name) is not None:
            raise _invalid(name, problem)
    system, system_blocks = _parse_system(data.get("system"))
    json_schema, effort = parse_output_config(data.get("output_config"))
    return ChatRequest(
        messages=_parse_messages(data.get("messages")),
        model=None if model in (None, "auto") else model,
        system=system,
        system_blocks=system_blocks,
        tools=_parse_tools(data.get("tools")),
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        temperature=_number(data, "temperature"),
        top_p=_number(data, "top_p"),
        top_k=_integer(data, "top_k"),
        max_tokens=max_tokens,
        stop=tuple(stop),
        user=_string(metadata, "user_id", "metadata.user_id"),
        thinking=thinking,
        json_mode=json_schema is not None,
        json_schema=json_schema,
        effort=effort,
        cache_control=_cache_control(data, ""),
        stream=bool(_optional(data, "stream", bool, "a boolean")),
    )


def _parse_thinking(value: Any) -> str | None:
    """Extended thinking, as its JSON text (relayed as given); ``disabled`` is none."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise _invalid("thinking", "must be an object with a type")
    if value["type"] == "disabled":
        return None
    if value["type"] == "enabled":
        budget = value.get("budget_tokens")
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
            raise _invalid("thinking.budget_tokens", "must be a positive integer")
    return orjson.dumps(value).decode()


def _invalid(param: str, problem: str) -> RequestInvalid:
    return RequestInvalid(f"{param}: {problem}", param=param)


def _optional(obj: dict[str, Any], key: str, kind: type, what: str, path: str = "") -> Any:
    value = obj.get(key)
    if value is not None and not isinstance(value, kind):
        raise _invalid(path or key, f"must be {what}")
    return value


def _string(obj: dict[str, Any], key: str, path: str, *, required: bool = False) -> Any:
    value = _optional(obj, key, str, "a string", path)
    if required and not value:
        raise _invalid(path, "field required" if value is None else "must not be empty")
    return value


def _integer(obj: dict[str, Any], key: str, *, required: bool = False) -> Any:
    minimum = NUMBERS[key].low
    value = obj.get(key)
    if value is None:
        if required:
            raise _invalid(key, "field required")
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _invalid(key, "must be an integer")
    if minimum is not None and value < minimum:
        raise _invalid(key, f"must be at least {minimum:g}")
    return value


def _number(obj: dict[str, Any], key: str) -> float | None:
    spec: Num = NUMBERS[key]
    low, high = spec.low or 0.0, spec.high or 0.0  # both declared for every float here
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _invalid(key, "must be a number")
    if not low <= value <= high:
        raise _invalid(key, f"must be between {low:g} and {high:g}")
    return float(value)


def _cache_control(block: dict[str, Any], path: str) -> str | None:
    """A block's prompt-caching breakpoint, as JSON text (relayed as given)."""
    value = block.get("cache_control")
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise _invalid(f"{path}.cache_control" if path else "cache_control",
                       "must be an object with a type")
    return orjson.dumps(value).decode()


def _parse_system(value: Any) -> tuple[str | None, tuple[TextPart, ...]]:
    """The system prompt, and its blocks if a caching breakpoint is among them."""
    if value is None or isinstance(value, str):
        return value or None, ()
    if not isinstance(value, list):
        raise _invalid("system", "must be a string or a list of text blocks")
    blocks = []
    for i, block in enumerate(value):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _invalid(f"system.{i}", "must be a text block")
        text = _string(block, "text", f"system.{i}.text", required=True)
        blocks.append(TextPart(text, _cache_control(block, f"system.{i}")))
    cached = any(block.cache_control for block in blocks)
    return "\n\n".join(b.text for b in blocks) or None, tuple(blocks) if cached else ()


def _parse_messages(value: Any) -> tuple[Message, ...]:
    if value is None:
        raise _invalid("messages", "field required")
    if not isinstance(value, list) or not value:
        raise _invalid("messages", "must be a non-empty list of messages")
    messages = []
    for i, item in enumerate(value):
        path = f"messages.{i}"
        if not isinstance(item, dict):
            raise _invalid(path, "must be an object")
        role = item.get("role")
        if role not in ("user", "assistant"):
            hint = " (put the system prompt in the top-level `system` field)"
            raise _invalid(
                f"{path}.role", "must be 'user' or 'assistant'" + hint * (role == "system")
            )
        content = item.get("content")
        if isinstance(content, str):
            parts: tuple[Part, ...] = (TextPart(content),) if content else ()
        elif isinstance(content, list):
            parts = tuple(
                part
                for j, block in enumerate(content)
                if (part := _parse_block(block, role, f"{path}.content.{j}")) is not None
            )
        else:
            raise _invalid(f"{path}.content", "must be a string or a list of content blocks")
        if not content and not (role == "assistant" and i == len(value) - 1):
            raise _invalid(f"{path}.content", "must not be empty")
        # a turn of thinking blocks alone, or an empty final prefill, drops out
        if any(not isinstance(part, ThinkingPart) for part in parts):
            messages.append(Message(role=role, parts=parts))
    if not messages:
        raise _invalid("messages", "must hold at least one message with content")
    return tuple(messages)


def _parse_block(block: Any, role: str, path: str) -> Part | None:
    if not isinstance(block, dict):
        raise _invalid(path, "must be a content block object")
    kind = block.get("type")
    allowed = BLOCK_ROLES.get(kind) if isinstance(kind, str) else None
    if allowed is None:
        if not isinstance(kind, str):
            raise _invalid(f"{path}.type", "field required" if kind is None else "must be a string")
        raise _invalid(f"{path}.type", f"content blocks of type {echo(kind)} are not supported")
    if role not in allowed:
        raise _invalid(f"{path}.type", f"{kind} blocks are not allowed in {role} messages")
    if kind == "text":
        text = _string(block, "text", f"{path}.text")
        if text is None:
            raise _invalid(f"{path}.text", "field required")
        return TextPart(text, _cache_control(block, path)) if text else None
    cache_control = _cache_control(block, path)
    if kind == "tool_use":
        arguments = _optional(block, "input", dict, "an object", f"{path}.input")
        if arguments is None:
            raise _invalid(f"{path}.input", "field required")
        return ToolCall(
            id=_string(block, "id", f"{path}.id", required=True),
            name=_string(block, "name", f"{path}.name", required=True),
            arguments=tool_arguments(arguments),
            cache_control=cache_control,
        )
    if kind == "tool_result":
        content = block.get("content")
        if cache_control is None and isinstance(content, list) and content:
            # the text is joined into one string: a breakpoint on its last block ends it too
            last = content[-1]
            cache_control = _cache_control(last, f"{path}.content.{len(content) - 1}"
                                           ) if isinstance(last, dict) else None
        text, images = _tool_result_content(content, f"{path}.content")
        return ToolResult(
            tool_call_id=_string(block, "tool_use_id", f"{path}.tool_use_id", required=True),
            content=text,
            images=images,
            is_error=bool(_optional(block, "is_error", bool, "a boolean", f"{path}.is_error")),
            cache_control=cache_control,
        )
    if kind == "document":
        return parse_document(block, path, cache_control)
    if kind == "image":
        image = _parse_image(block.get("source"), f"{path}.source")
        return ImagePart(image.url, image.media_type, image.data, cache_control)
    if kind == "redacted_thinking":
        return ThinkingPart(_string(block, "data", f"{path}.data") or "", redacted=True)
    # thinking: sent back as given to Anthropic upstreams (whose signature seals it)
    return ThinkingPart(_string(block, "thinking", f"{path}.thinking") or "",
                        _string(block, "signature", f"{path}.signature") or "")


def _tool_result_content(content: Any, path: str) -> tuple[str, tuple[ImagePart, ...]]:
    """A tool result's text, and its images (which go after the text)."""
    if content is None or isinstance(content, str):
        return content or "", ()
    if not isinstance(content, list):
        raise _invalid(path, "must be a string or a list of text and image blocks")
    texts, images = [], []
    for i, block in enumerate(content):
        if isinstance(block, dict) and block.get("type") == "image":
            images.append(_parse_image(block.get("source"), f"{path}.{i}.source"))
        elif not isinstance(block, dict) or block.get("type") != "text":
            raise _invalid(f"{path}.{i}", "only text and image blocks are supported in tool "
                                          "results")
        else:
            texts.append(_string(block, "text", f"{path}.{i}.text") or "")
    return "\n".join(texts), tuple(images)


def _parse_image(source: Any, path: str) -> ImagePart:
    if not isinstance(source, dict):
        raise _invalid(path, "field required" if source is None else "must be an object")
    kind = source.get("type")
    if kind == "base64":
        media_type = _string(source, "media_type", f"{path}.media_type", required=True)
        if media_type not in _IMAGE_TYPES:
            raise _invalid(
                f"{path}.media_type", f"must be one of {', '.join(sorted(_IMAGE_TYPES))}"
            )
        data = _string(source, "data", f"{path}.data", required=True)
        return ImagePart(media_type=media_type, data=data)
    if kind == "url":
        return ImagePart(url=_string(source, "url", f"{path}.url", required=True))
    raise _invalid(f"{path}.type", "must be 'base64' or 'url'")


def _parse_tools(value: Any) -> tuple[Tool, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _invalid("tools", "must be a list of tools")
    tools = []
    for i, tool in enumerate(value):
        path = f"tools.{i}"
        if not isinstance(tool, dict):
            raise _invalid(path, "must be an object")
        if tool.get("type") not in (None, "custom"):
            raise _invalid(f"{path}.type", f"server tools ({echo(tool['type'])}) are not supported")
        schema = _optional(tool, "input_schema", dict, "an object", f"{path}.input_schema")
        if schema is None:
            raise _invalid(f"{path}.input_schema", "field required")
        tools.append(
            Tool(
                name=_string(tool, "name", f"{path}.name", required=True),
                description=_string(tool, "description", f"{path}.description") or "",
                parameters=schema,
                cache_control=_cache_control(tool, path),
                strict=bool(_optional(tool, "strict", bool, "a boolean", f"{path}.strict")),
            )
        )
    return tuple(tools)


def _parse_tool_choice(value: Any) -> tuple[ToolChoice | None, bool | None]:
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise _invalid("tool_choice", "must be an object")
    mode = _TOOL_CHOICES.get(value.get("type"))
    if mode is None:
        raise _invalid("tool_choice.type", "must be one of 'auto', 'any', 'tool', 'none'")
    name = None
    if mode == "tool":
        name = _string(value, "name", "tool_choice.name", required=True)
    disable = _optional(
        value,
        "disable_parallel_tool_use",
        bool,
        "a boolean",
        "tool_choice.disable_parallel_tool_use",
    )
    return ToolChoice(mode=mode, name=name), (False if disable else None)


# ---- writing: the canonical request as Anthropic's body ------------------------------------


def render_request(request: ChatRequest, *, model: str, stream: bool) -> bytes:
    """The Messages API body that asks Anthropic model ``model`` for ``request``.

    Raises:
        RequestInvalid: an assistant tool call's arguments are not a JSON object, or an image
            cannot be sent (no media type, a data URL that is not base64).
    """
    payload: dict[str, Any] = {
        "model": model,
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": _render_messages(request.messages),
    }
    system = _render_system(request)
    if system:
        payload["system"] = system
    if request.tools:
        payload["tools"] = [_render_tool(tool) for tool in request.tools]
        tool_choice = _render_tool_choice(request)
        if tool_choice is not None:
            payload["tool_choice"] = tool_choice
    if request.temperature is not None:
        payload["temperature"] = min(request.temperature, 1.0)
    if request.top_p is not None:
        payload["top_p"] = request.top_p
    if request.top_k is not None:
        payload["top_k"] = request.top_k
    if request.stop:
        payload["stop_sequences"] = list(request.stop)
    if request.user or request.safety_identifier:
        payload["metadata"] = {"user_id": request.user or request.safety_identifier}
    if request.thinking is not None:
        payload["thinking"] = orjson.Fragment(request.thinking)
    if request.effort is not None:
        payload["output_config"] = {"effort": request.effort}
    if request.cache_control is not None:
        payload["cache_control"] = orjson.Fragment(request.cache_control)
    if stream:
        payload["stream"] = True
    return orjson.dumps(payload)


def _render_tool(tool: Tool) -> dict[str, Any]:
    return _cached({
        "name": tool.name,
        **({"description": tool.description} if tool.description else {}),
        "input_schema": tool.parameters
        if tool.parameters is not None
        else {"type": "object", "properties": {}},
        **({"strict": True} if tool.strict else {}),
    }, tool.cache_control)


def _cached(block: dict[str, Any], cache_control: str | None) -> dict[str, Any]:
    """``block`` with the client's caching breakpoint, if it had one."""
    if cache_control is not None:
        block["cache_control"] = orjson.Fragment(cache_control)
    return block


def _render_system(request: ChatRequest) -> str | list[dict[str, Any]] | None:
    blocks: list[dict[str, Any]] | None = None
    if request.system_blocks and request.system == "\n\n".join(
            block.text for block in request.system_blocks):
        blocks = [_cached({"type": "text", "text": block.text}, block.cache_control)
                  for block in request.system_blocks]
    if not request.json_mode:
        return blocks or request.system
    instruction = JSON_INSTRUCTION
    schema = request.json_schema
    if isinstance(schema, dict) and isinstance(schema.get("schema"), dict):
        schema = schema["schema"]  # OpenAI's {"name", "schema", "strict"} wrapper
    if schema is not None:
        instruction += " It must conform to this JSON Schema: " + orjson.dumps(schema).decode()
    if blocks:
        return [*blocks, {"type": "text", "text": instruction}]
    return f"{request.system}\n\n{instruction}" if request.system else instruction


def _render_tool_choice(request: ChatRequest) -> dict[str, Any] | None:
    choice = request.tool_choice
    if choice is None:
        rendered: dict[str, Any] | None = (
            {"type": "auto"} if request.parallel_tool_calls is False else None
        )
    elif choice.mode == "none":
        return {"type": "none"}  # takes no disable_parallel_tool_use
    else:
        rendered = {"type": _TOOL_CHOICE_TYPES[choice.mode]}
        if choice.mode == "tool":
            rendered["name"] = choice.name
    if rendered is not None and request.parallel_tool_calls is False:
        rendered["disable_parallel_tool_use"] = True
    return rendered


def _render_messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Anthropic's ``messages``: same-role runs merged, since roles must alternate."""
    out: list[dict[str, Any]] = []
    last_role = None
    for i, message in enumerate(messages):
        blocks = [b for part in message.parts if (b := _render_part(part, i)) is not None]
        if not blocks:
            continue  # Anthropic rejects empty content
        if message.role == last_role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": message.role, "content": blocks})
            last_role = message.role
    for turn in out:
        content = turn["content"]
        if turn["role"] == "user" and len(content) > 1:
            # Anthropic wants tool results ahead of any other content in their user turn.
            content.sort(key=lambda b: b["type"] != "tool_result")
        if len(content) == 1 and content[0]["type"] == "text" and len(content[0]) == 2:
            turn["content"] = content[0]["text"]
    return out


def _render_part(part: object, index: int) -> dict[str, Any] | None:
    if isinstance(part, TextPart):
        if not part.text:
            return None
        return _cached({"type": "text", "text": part.text}, part.cache_control)
    block: dict[str, Any]
    if isinstance(part, ToolCall):
        input = _render_tool_input(part)
        block = {"type": "tool_use", "id": part.id, "name": part.name, "input": input}
        return _cached(block, part.cache_control)
    if isinstance(part, ToolResult):
        block = {"type": "tool_result", "tool_use_id": part.tool_call_id}
        if part.images:
            text = [{"type": "text", "text": part.content}] if part.content else []
            block["content"] = text + [{"type": "image", "source": _image_source(image, index)}
                                       for image in part.images]
        elif part.content:
            block["content"] = part.content
        if part.is_error:
            block["is_error"] = True
        return _cached(block, part.cache_control)
    if isinstance(part, ImagePart):
        return _cached({"type": "image", "source": _image_source(part, index)},
                       part.cache_control)
    if isinstance(part, ThinkingPart):
        return render_thinking(part)
    if isinstance(part, DocumentPart):
        return render_document(part, index)
    raise TypeError(f"not a message part: {part!r}")


def render_thinking(part: ThinkingPart) -> dict[str, Any]:
    """A thinking part as the block Anthropic sent it in (answers and requests alike)."""
    if part.redacted:
        return {"type": "redacted_thinking", "data": part.thinking}
    return {"type": "thinking", "thinking": part.thinking, "signature": part.signature}


def _render_tool_input(call: ToolCall) -> dict[str, Any]:
    value = tool_input(call.arguments)
    if value is None:
        raise RequestInvalid(
            f"the arguments of tool call {echo(call.id)} ({echo(call.name, raw=True)}) are not "
            "a JSON object",
            param="messages",
        )
    return value


def _image_source(image: ImagePart, index: int) -> dict[str, str]:
    if image.data is not None:
        if not image.media_type:
            raise RequestInvalid(
                "an inline image needs its media type", param=f"messages.{index}.content"
            )
        return {"type": "base64", "media_type": image.media_type, "data": image.data}
    url = image.url or ""
    if url.startswith("data:"):
        # OpenAI clients inline images as data URLs; Anthropic takes only http(s) URLs.
        header, _, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if encoding != "base64" or not media_type or not data:
            raise RequestInvalid(
                "an image data URL must be base64-encoded", param=f"messages.{index}.content"
            )
        return {"type": "base64", "media_type": media_type, "data": data}
    if not url:
        raise RequestInvalid("an image needs a URL or data", param=f"messages.{index}.content")
    return {"type": "url", "url": url}


# ---- tool call arguments: Anthropic's ``input`` object, the canonical JSON text -------------


def tool_arguments(input: Any) -> str:
    """A ``tool_use`` block's ``input`` as canonical arguments (JSON text; none is ``{}``)."""
    return orjson.dumps(input or {}).decode()


def tool_input(arguments: str) -> dict[str, Any] | None:
    """Canonical tool-call arguments as a ``tool_use`` block's ``input``: blank arguments are
    ``{}``; ``None`` if they are not a JSON object (the caller decides whether that is an
    error)."""
    if not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
