"""The OpenAI chat-completions request, both ways: read from clients, written to upstreams.

Sans-IO. :func:`parse_request` validates what a client sends and translates it to the
canonical :class:`~engine.messages.ChatRequest`; :func:`render_request` writes a canonical
request as the body an OpenAI-compatible upstream takes.

Validated here, once, by hand rather than through pydantic: this runs on every request, and
hand-written checks are both faster and able to name the exact field at fault
(``param="messages[2].content"``) in OpenAI's own error style (:mod:`.fields`). The body's
fields and their bounds are declared in :mod:`.body` (what ``/openapi.json`` shows); this
module reads them from there and keeps the cross-field rules. OpenAI's own fields that do not
change the answer (``metadata``, ``store``, ``service_tier``, ...) reach OpenAI-compatible
upstreams only (:mod:`.extras`); fields that would change it and that the router cannot honour
(``functions``, audio output) are refused, never silently dropped.
"""

from __future__ import annotations

from typing import Any

import orjson

from engine.errors import RequestInvalid, echo
from engine.messages import (
    ChatRequest,
    DocumentPart,
    ImagePart,
    Message,
    Part,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
    new_chat_request,
    new_message,
    new_text_part,
)

from .body import NUMBERS, TOOL_CHOICE_MODES, UNSUPPORTED
from .document import parse_file, render_document
from .extras import parse_extras, render_extras
from .fields import (
    MISSING,
    boolean,
    check_modalities,
    invalid_type,
    invalid_value,
    kind_of,
    logit_bias,
    number,
    show,
    stop_sequences,
    string,
    word,
)

__all__ = ["parse_request", "render_request", "render_tool_call"]

_ROLES = "'system', 'developer', 'user', 'assistant' or 'tool'"
_EMPTY_PARAMETERS = {"type": "object", "properties": {}}
_F = NUMBERS  # each number's bounds: declared with the body (.body), checked here


# ---- reading: a client's request as the canonical one --------------------------------------


# The fields most requests are made of: a body of these only is read by ``_parse_plain``,
# which leaves every other field at its default instead of looking each one up.
_PLAIN = frozenset(("model", "messages", "temperature", "top_p", "max_tokens",
                    "max_completion_tokens", "stream", "stream_options"))


def parse_request(body: bytes) -> ChatRequest:
    """Validate a chat-completions request body and translate it to a :class:`ChatRequest`.

    Raises:
        RequestInvalid: the body is not a valid request; ``param`` names the field at fault.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RequestInvalid("request body is not valid JSON") from None
    if type(data) is not dict:
        raise RequestInvalid(f"request body must be a JSON object, not {kind_of(data)}")
    if data.keys() <= _PLAIN:
        return _parse_plain(data)
    return _parse_any(data)


def _parse_plain(data: dict[str, Any]) -> ChatRequest:
    """What :func:`_parse_any` makes of a body of ``_PLAIN`` fields only, the same request or
    the same fault (a property test holds the two together), with the absent fields not
    looked up: the checks below are its own, in its order."""
    model = _parse_model(data.get("model"))
    system, messages = _parse_messages(data.get("messages", MISSING))
    max_tokens, max_tokens_param = _max_tokens(data)
    stream = boolean(data, "stream") or False
    include_usage = _include_usage(data.get("stream_options"))
    return new_chat_request(
        messages=messages,
        model=model,
        system=system,
        temperature=number(data, "temperature", _F["temperature"]),
        top_p=number(data, "top_p", _F["top_p"]),
        max_tokens=max_tokens,
        max_tokens_param=max_tokens_param,
        stream=stream,
        include_usage=stream and include_usage,
    )


def _parse_model(model: Any) -> str | None:
    if model == "auto":
        return None
    if model is not None and (type(model) is not str or not model):
        raise invalid_type("model", "a non-empty string", model)
    return model


def _max_tokens(data: dict[str, Any]) -> tuple[int | None, str]:
    """The output limit, and the name the client gave it (``max_completion_tokens`` wins)."""
    limit = number(data, "max_completion_tokens", _F["max_completion_tokens"])
    if limit is not None:
        return limit, "max_completion_tokens"
    return number(data, "max_tokens", _F["max_tokens"]), "max_tokens"


def _include_usage(options: Any) -> bool:
    if options is None:
        return False
    if type(options) is not dict:
        raise invalid_type("stream_options", "an object", options)
    return bool(boolean(options, "include_usage", "stream_options.include_usage"))


def _parse_any(data: dict[str, Any]) -> ChatRequest:
    """Any request body (a JSON object)."""
    model = _parse_model(data.get("model"))
    system, messages = _parse_messages(data.get("messages", MISSING))
    tools = _parse_tools(data.get("tools"))
    json_mode, json_schema = _parse_response_format(data.get("response_format"))
    max_tokens, max_tokens_param = _max_tokens(data)
    stream = boolean(data, "stream") or False
    include_usage = _include_usage(data.get("stream_options"))
    for name, message in UNSUPPORTED.items():
        if data.get(name) is not None:
            raise RequestInvalid(message, param=name)
    check_modalities(data.get("modalities"))
    n = number(data, "n", _F["n"])
    if stream and n is not None and n > 1:
        raise RequestInvalid(
            "'n' above 1 is not supported with 'stream': true; ask without streaming.",
            param="n",
        )
    user = data.get("user")
    if user is not None and type(user) is not str:
        raise invalid_type("user", "a string", user)
    logprobs = bool(boolean(data, "logprobs"))
    top_logprobs = number(data, "top_logprobs", _F["top_logprobs"])
    if top_logprobs is not None and not logprobs:
        raise RequestInvalid(
            "'top_logprobs' requires 'logprobs' to be true.", param="top_logprobs"
        )
    return new_chat_request(
        messages=messages,
        model=model,
        system=system,
        tools=tools,
        tool_choice=_parse_tool_choice(data.get("tool_choice"), tools),
        parallel_tool_calls=boolean(data, "parallel_tool_calls"),
        json_mode=json_mode,
        json_schema=json_schema,
        temperature=number(data, "temperature", _F["temperature"]),
        top_p=number(data, "top_p", _F["top_p"]),
        top_k=number(data, "top_k", _F["top_k"]),  # not OpenAI's, but vLLM clients send it
        max_tokens=max_tokens,
        max_tokens_param=max_tokens_param,
        stop=stop_sequences(data.get("stop")),
        seed=number(data, "seed", _F["seed"]),
        n=1 if n is None else n,
        user=user,
        frequency_penalty=_penalty(data, "frequency_penalty"),
        presence_penalty=_penalty(data, "presence_penalty"),
        logit_bias=logit_bias(data.get("logit_bias")),
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        reasoning_effort=word(data, "reasoning_effort"),
        verbosity=word(data, "verbosity"),
        **parse_extras(data),
        stream=stream,
        include_usage=stream and include_usage,
    )


def _parse_messages(value: Any) -> tuple[str | None, tuple[Message, ...]]:
    if value is MISSING or value is None:
        raise RequestInvalid("Missing required parameter: 'messages'.", param="messages")
    if type(value) is not list:
        raise invalid_type("messages", "an array", value)
    if not value:
        raise RequestInvalid("'messages' must contain at least one message.", param="messages")
    system: list[str] = []
    messages: list[Message] = []
    results: list[Part] = []  # consecutive tool messages fold into one user message
    for i, message in enumerate(value):
        path = f"messages[{i}]"
        if type(message) is not dict:
            raise invalid_type(path, "an object", message)
        role = message.get("role", MISSING)
        if role == "tool":
            results.append(_parse_tool_result(message, path))
            continue
        if results:
            messages.append(new_message("user", tuple(results)))
            results = []
        if role == "user":
            messages.append(new_message("user", _parse_user_content(message, path)))
        elif role == "assistant":
            messages.append(new_message("assistant", _parse_assistant(message, path)))
        elif role == "system" or role == "developer":
            system.append(_text_content(message.get("content", MISSING), f"{path}.content"))
        elif role is MISSING:
            raise RequestInvalid(
                f"Missing required parameter: '{path}.role'.", param=f"{path}.role"
            )
        else:
            raise RequestInvalid(
                f"Invalid value for '{path}.role': expected {_ROLES}, got {show(role)}.",
                param=f"{path}.role",
            )
    if results:
        messages.append(new_message("user", tuple(results)))
    if not messages:
        raise RequestInvalid(
            "'messages' must contain a user, assistant or tool message, not only system ones.",
            param="messages",
        )
    return ("\n\n".join(system) if system else None), tuple(messages)


def _parse_user_content(message: dict[str, Any], path: str) -> tuple[Part, ...]:
    content = message.get("content", MISSING)
    path = f"{path}.content"
    if type(content) is str:
        return (new_text_part(content),)
    if content is MISSING or content is None:
        raise RequestInvalid(f"Missing required parameter: '{path}'.", param=path)
    if type(content) is not list:
        raise invalid_type(path, "a string or an array of content parts", content)
    if not content:
        raise RequestInvalid(f"'{path}' must not be an empty array.", param=path)
    parts: list[Part] = []
    for j, part in enumerate(content):
        part_path = f"{path}[{j}]"
        kind = _part_type(part, part_path)
        if kind == "text":
            parts.append(TextPart(string(part, "text", part_path)))
        elif kind == "image_url":
            parts.append(_parse_image(part.get("image_url"), f"{part_path}.image_url"))
        elif kind == "file":
            parts.append(parse_file(part.get("file"), f"{part_path}.file"))
        elif kind == "input_audio":
            raise RequestInvalid(
                f"Content parts of type '{kind}' are not supported by this router.",
                param=f"{part_path}.type",
            )
        else:
            raise invalid_value(f"{part_path}.type", "'text', 'image_url' or 'file'", kind)
    return tuple(parts)


def _parse_image(value: Any, path: str) -> ImagePart:
    url = value.get("url") if type(value) is dict else value
    if type(url) is not str or not url:
        raise invalid_type(f"{path}.url", "a non-empty string", url)
    detail = value.get("detail") if type(value) is dict else None
    if detail is not None and type(detail) is not str:
        raise invalid_type(f"{path}.detail", "a string", detail)
    if not url.startswith("data:"):
        return ImagePart(url=url, detail=detail)
    header, comma, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if not comma or encoding != "base64" or not media_type:
        raise RequestInvalid(
            f"'{path}.url' must be an http(s) URL or a base64 data URL "
            "('data:<media type>;base64,<data>').",
            param=f"{path}.url",
        )
    return ImagePart(media_type=media_type, data=data, detail=detail)


def _parse_assistant(message: dict[str, Any], path: str) -> tuple[Part, ...]:
    parts: list[Part] = []
    calls = message.get("tool_calls")
    content = message.get("content")
    if type(content) is str:
        if content or not calls:
            parts.append(TextPart(content))
    elif type(content) is list:
        for j, part in enumerate(content):
            part_path = f"{path}.content[{j}]"
            kind = _part_type(part, part_path)
            if kind not in ("text", "refusal"):
                raise invalid_value(f"{part_path}.type", "'text' or 'refusal'", kind)
            parts.append(TextPart(string(part, kind, part_path)))
    elif content is not None:
        raise invalid_type(f"{path}.content", "a string, an array or null", content)
    if calls is not None:
        if type(calls) is not list:
            raise invalid_type(f"{path}.tool_calls", "an array", calls)
        for j, call in enumerate(calls):
            parts.append(_parse_tool_call(call, f"{path}.tool_calls[{j}]"))
    if not parts:
        raise RequestInvalid(
            f"Missing required parameter: '{path}.content' (required unless tool_calls is set).",
            param=f"{path}.content",
        )
    return tuple(parts)


def _parse_tool_call(call: Any, path: str) -> ToolCall:
    if type(call) is not dict:
        raise invalid_type(path, "an object", call)
    kind = call.get("type", "function")
    if kind != "function":
        raise invalid_value(f"{path}.type", "'function'", kind)
    function = call.get("function")
    if type(function) is not dict:
        raise invalid_type(f"{path}.function", "an object", function)
    return ToolCall(
        id=string(call, "id", path, non_empty=True),
        name=string(function, "name", f"{path}.function", non_empty=True),
        arguments=string(function, "arguments", f"{path}.function"),
    )


def _parse_tool_result(message: dict[str, Any], path: str) -> ToolResult:
    return ToolResult(
        tool_call_id=string(message, "tool_call_id", path, non_empty=True),
        content=_text_content(message.get("content", MISSING), f"{path}.content"),
    )


def _text_content(content: Any, path: str) -> str:
    """A string, or an array of text parts joined by newlines (system, developer, tool)."""
    if type(content) is str:
        return content
    if content is MISSING or content is None:
        raise RequestInvalid(f"Missing required parameter: '{path}'.", param=path)
    if type(content) is not list:
        raise invalid_type(path, "a string or an array of text parts", content)
    texts = []
    for j, part in enumerate(content):
        kind = _part_type(part, f"{path}[{j}]")
        if kind != "text":
            raise invalid_value(f"{path}[{j}].type", "'text'", kind)
        texts.append(string(part, "text", f"{path}[{j}]"))
    return "\n".join(texts)


def _part_type(part: Any, path: str) -> Any:
    if type(part) is not dict:
        raise invalid_type(path, "an object", part)
    kind = part.get("type", MISSING)
    if kind is MISSING:
        raise RequestInvalid(f"Missing required parameter: '{path}.type'.", param=f"{path}.type")
    return kind


def _parse_tools(value: Any) -> tuple[Tool, ...]:
    if value is None:
        return ()
    if type(value) is not list:
        raise invalid_type("tools", "an array", value)
    tools = []
    for i, tool in enumerate(value):
        path = f"tools[{i}]"
        if type(tool) is not dict:
            raise invalid_type(path, "an object", tool)
        kind = tool.get("type", "function")
        if kind != "function":
            raise invalid_value(f"{path}.type", "'function'", kind)
        function = tool.get("function")
        if type(function) is not dict:
            raise invalid_type(f"{path}.function", "an object", function)
        description = function.get("description")
        if description is not None and type(description) is not str:
            raise invalid_type(f"{path}.function.description", "a string", description)
        parameters = function.get("parameters")
        if parameters is not None and type(parameters) is not dict:
            raise invalid_type(f"{path}.function.parameters", "an object", parameters)
        name = string(function, "name", f"{path}.function", non_empty=True)
        strict = function.get("strict")
        if strict is not None and type(strict) is not bool:
            raise invalid_type(f"{path}.function.strict", "a boolean", strict)
        tools.append(Tool(name=name, description=description or "", parameters=parameters,
                          strict=bool(strict)))
    return tuple(tools)


def _parse_tool_choice(value: Any, tools: tuple[Tool, ...]) -> ToolChoice | None:
    if value is None:
        return None
    if value in TOOL_CHOICE_MODES:
        choice = ToolChoice(mode=value)
    elif type(value) is dict and value.get("type") == "function":
        function = value.get("function")
        if type(function) is not dict:
            raise invalid_type("tool_choice.function", "an object", function)
        name = string(function, "name", "tool_choice.function", non_empty=True)
        if tools and name not in {t.name for t in tools}:
            raise RequestInvalid(
                f"Invalid value for 'tool_choice.function.name': no tool named {echo(name)}.",
                param="tool_choice.function.name",
            )
        choice = ToolChoice(mode="tool", name=name)
    else:
        raise RequestInvalid(
            "Invalid value for 'tool_choice': expected 'auto', 'none', 'required' or "
            '{"type": "function", "function": {"name": ...}}.',
            param="tool_choice",
        )
    if not tools and choice.mode in ("required", "tool"):
        raise RequestInvalid("'tool_choice' requires 'tools' to be specified.", param="tool_choice")
    return choice


def _parse_response_format(value: Any) -> tuple[bool, Any]:
    if value is None:
        return False, None
    if type(value) is not dict:
        raise invalid_type("response_format", "an object", value)
    kind = value.get("type")
    if kind == "text":
        return False, None
    if kind == "json_object":
        return True, None
    if kind == "json_schema":
        schema = value.get("json_schema")
        if type(schema) is not dict:
            raise invalid_type("response_format.json_schema", "an object", schema)
        string(schema, "name", "response_format.json_schema", non_empty=True)
        return True, schema
    raise invalid_value("response_format.type", "'text', 'json_object' or 'json_schema'", kind)


def _penalty(data: dict[str, Any], key: str) -> float | None:
    """A penalty in [-2, 2]; 0 (no penalty) is the same as none."""
    value = number(data, key, _F[key])
    return float(value) if value else None


# ---- writing: the canonical request as an upstream's chat-completions body -----------------


def render_request(request: ChatRequest, *, model: str, stream: bool,
                   max_tokens_field: str | None = None) -> bytes:
    """The chat-completions body that asks provider model ``model`` for ``request``.

    ``stream`` also asks for usage on the stream: the router needs it for costs. The output
    limit goes by ``max_tokens_field`` when given (a server that knows one name only), else by
    the name the client gave it (``request.max_tokens_param``): an OpenAI client's
    ``max_completion_tokens`` (which OpenAI's reasoning models need) stays that, and any other
    limit is ``max_tokens``, which every OpenAI-compatible server reads.
    """
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    for message in request.messages:
        if message.role == "user":
            _render_user(message, messages)
        else:
            messages.append(_render_assistant(message))
    body: dict[str, Any] = {"model": model, "messages": messages}
    if request.tools:
        body["tools"] = [_render_tool(tool) for tool in request.tools]
        # OpenAI rejects tool_choice and parallel_tool_calls without tools.
        choice = request.tool_choice
        if choice is not None:
            body["tool_choice"] = (
                {"type": "function", "function": {"name": choice.name}}
                if choice.mode == "tool"
                else choice.mode
            )
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls
    if request.json_mode:
        schema = request.json_schema
        body["response_format"] = (
            {"type": "json_object"}
            if schema is None
            else {"type": "json_schema", "json_schema": schema}
        )
    optional = {  # sent only when set (None: unset)
        "temperature": request.temperature,
        "top_p": request.top_p,
        max_tokens_field or request.max_tokens_param: request.max_tokens,
        "stop": list(request.stop) or None,
        "seed": request.seed,
        "n": request.n if request.n != 1 else None,
        "user": request.user,
        "frequency_penalty": request.frequency_penalty,
        "presence_penalty": request.presence_penalty,
        "logit_bias": dict(request.logit_bias) or None,
        "logprobs": True if request.logprobs else None,
        "top_logprobs": request.top_logprobs if request.logprobs else None,
        "reasoning_effort": request.reasoning_effort,
        "verbosity": request.verbosity,
    }
    body.update((key, value) for key, value in optional.items() if value is not None)
    render_extras(request, body)
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


def _render_user(message: Message, out: list[dict[str, Any]]) -> None:
    # OpenAI carries each tool result as its own "tool" message, ahead of any user content.
    rest: list[TextPart | ImagePart | DocumentPart] = []
    had_results = False
    for part in message.parts:
        if isinstance(part, ToolResult):
            out.append({"role": "tool", "tool_call_id": part.tool_call_id, "content": part.content})
            had_results = True
        elif isinstance(part, TextPart | ImagePart | DocumentPart):
            rest.append(part)
    if rest or not had_results:
        out.append({"role": "user", "content": _render_content(rest)})


def _render_content(parts: list[TextPart | ImagePart | DocumentPart]
                    ) -> str | list[dict[str, Any]]:
    # Plain strings are what every OpenAI-compatible server accepts; lists only when needed.
    texts = [p.text for p in parts if isinstance(p, TextPart)]
    if len(texts) == len(parts):
        return "\n".join(texts)
    rendered: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            rendered.append({"type": "text", "text": part.text})
        elif isinstance(part, DocumentPart):
            rendered.extend(render_document(part))
        else:
            url = part.url or f"data:{part.media_type};base64,{part.data}"
            image: dict[str, str] = {"url": url}
            if part.detail is not None:
                image["detail"] = part.detail
            rendered.append({"type": "image_url", "image_url": image})
    return rendered


def _render_assistant(message: Message) -> dict[str, Any]:
    calls = [render_tool_call(p) for p in message.parts if isinstance(p, ToolCall)]
    has_text = any(isinstance(p, TextPart) for p in message.parts)
    rendered: dict[str, Any] = {
        "role": "assistant",
        "content": message.text if has_text or not calls else None,
    }
    if calls:
        rendered["tool_calls"] = calls
    return rendered


def render_tool_call(call: ToolCall) -> dict[str, Any]:
    """A tool call as OpenAI writes it, in an assistant message and in a completion alike."""
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def _render_tool(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    function["parameters"] = tool.parameters if tool.parameters is not None else _EMPTY_PARAMETERS
    if tool.strict:
        function["strict"] = True
    return {"type": "function", "function": function}
