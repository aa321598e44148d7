"""The router's server with each part of a request wrapped in a named C function, for
valgrind's callgrind: the inclusive instruction count of ``part_<name>`` is that part's
instructions, counted exactly, in the server as it runs (``bench/miss_instructions.sh`` drives
it: warm-up uninstrumented, then N requests with ``callgrind_control -i on``).

    python bench/miss_instructions.py --config X --addr Y     # as ``llm-router``, marked

Each wrapped function is called through ``mark_<name>(callback)``, which calls
``part_<name>(callback)``, functions of a small C library built here with gcc (callgrind does
not see the call from libffi into ``mark_<name>`` as a call; it does see the one into
``part_<name>``). The callback is a ctypes one: a wrapped call costs ~2,800 instructions
inside ``part_<name>`` (measured around a ``lambda: None``) and ~4,000 outside it.

``MARK_MORE="module:attr,module:Owner.attr,..."`` wraps these too (each as ``part_<attr>``).

``MARK_PARTS=path`` wraps the parts of the pinned path instead (:data:`PATH_PARTS`: the
server's connection and hypercorn, h11 (the server's), the chat front, the wire codecs, the
upstream call with its HTTP/1.1 codec, the stream's relay). Many of them are coroutines: a
coroutine's work runs in its steps (each time the scheduler resumes it), so each step is one
wrapped call, and the part counts the work of every step (not the time its task waits).
"""

from __future__ import annotations

import ctypes
import functools
import inspect
import os
import subprocess
import sys
import tempfile
import types
from collections.abc import Callable
from functools import partial
from typing import Any

#: (module, owner or None, attribute, part): the parts of a request, outermost first. A part's
#: figure includes the parts called inside it (callgrind's inclusive count).
PARTS: list[tuple[str, str | None, str, str]] = [
    ("engine.runtime.node", None, "request_key", "request_key"),
    ("engine.core.routing.decide", None, "decide_route", "decide_route"),
    ("engine.core.routing.decide", None, "score_request", "heuristic_score"),
    ("engine.core.routing.learned", "LearnedRouter", "assess", "router_assess"),
    ("engine.core.routing.learned", "LearnedRouter", "_read", "router_features"),
    ("engine.core.routing.learned", None, "_conversation", "router_conversation"),
    ("engine.core.routing.hashing", None, "text_hashes", "router_text_hashes"),
    ("engine.core.routing.hashing", None, "bag", "router_bag"),
    ("engine.core.routing.learned", None, "_shape", "router_shape"),
    ("engine.core.cache.similarity", "Embedder", "embed", "router_sentence_vector"),
    ("engine.core.routing.gate", "Gate", "similarity", "router_gate_similarity"),
    ("engine.core.routing.learned", "LearnedRouter", "_standardised", "router_standardise"),
    ("engine.core.routing.learned", "LearnedRouter", "_logit", "router_logit"),
    ("engine.core.routing.learned", "LearnedRouter", "known", "router_known"),
    ("engine.core.routing.decide", "Online", "p", "online_p"),
    ("engine.core.cache.responses", "ResponseCache", "prepare", "cache_prepare"),
    ("engine.core.cache.similarity", None, "normalize_text", "cache_normalise"),
    ("engine.core.cache.similarity", "Embedder", "fingerprint", "cache_fingerprint"),
    ("engine.core.cache.responses", "ResponseCache", "lookup_prepared", "cache_lookup"),
    ("engine.core.cache.vector_index", "VectorIndex", "search", "cache_vector_search"),
    ("engine.core.cache.semantic", "SemanticMatcher", "least_cosine", "cache_least_cosine"),
    ("engine.core.cache.semantic", "SemanticMatcher", "match", "cache_compare"),
    ("engine.core.cache.responses", "ResponseCache", "store_entry", "cache_store"),
    ("engine.core.cache.vector_index", "VectorIndex", "add", "cache_index_add"),
    ("engine.core.cache.semantic", "SemanticMatcher", "pack", "cache_pack"),
]

#: The parts of a pinned JSON answer or stream (``MARK_PARTS=path``), coroutines included.
PATH_PARTS: list[tuple[str, str | None, str, str]] = [
    ("api.http.connection", "Connection", "_read_data", "server_reading"),
    ("api.http.connection", "Connection", "protocol_send", "server_protocol_send"),
    ("api.http.connection", "Connection", "_write", "server_socket_write"),
    ("hypercorn.protocol.h11", "H11Protocol", "_create_stream", "hypercorn_create_stream"),
    ("hypercorn.protocol.http_stream", "HTTPStream", "app_send", "hypercorn_app_send"),
    ("hypercorn.config", "Config", "response_headers", "hypercorn_response_headers"),
    ("hypercorn.protocol.http_stream", None, "build_and_validate_headers",
     "hypercorn_validate_headers"),
    ("h11", "Connection", "next_event", "h11_next_event"),
    ("h11", "Connection", "send", "h11_send"),
    ("api.http.chat_front", "ChatFront", "__call__", "app"),
    ("api.http.chat_front", None, "_send", "app_send_reply"),
    ("api.http.chat", "ChatEndpoint", "answer", "chat_answer"),
    ("api.http.chat", "ChatEndpoint", "_answer", "chat_answer_inner"),
    ("api.http.chat", None, "routing_headers", "routing_headers"),
    ("api.http.access", "Observer", "chat", "observer_chat"),
    ("api.http.access", "Observer", "parsed", "observer_parsed"),
    ("api.http.access", "Observer", "finish", "observer_finish"),
    ("api.http.access", "Observer", "stream_ended", "observer_stream_ended"),
    ("api.http.params", None, "cache_controls", "cache_controls"),
    ("engine.core.request_ids", None, "new_request_id", "new_request_id"),
    ("engine.wire.openai.request", None, "parse_request", "wire_parse_request"),
    ("engine.wire.openai.request", None, "render_request", "wire_render_request"),
    ("engine.wire.protocols", "WireProtocol", "render_result", "wire_render_result"),
    ("engine.wire.openai.response", None, "parse_result", "wire_parse_result"),
    ("engine.wire.providers", "OpenAIProvider", "build_call", "wire_build_call"),
    ("engine.runtime.gateway", "Gateway", "complete", "gateway_complete"),
    ("engine.runtime.gateway", "Gateway", "open_stream", "gateway_open_stream"),
    ("engine.runtime.gateway", "Gateway", "_finished", "gateway_finished"),
    ("engine.runtime.gateway", "Gateway", "remember_decision", "remember_decision"),
    ("engine.runtime.policy", "RoutingPolicy", "route", "route"),
    ("engine.runtime.node", "NodeRunner", "_fly", "node_fly"),
    ("engine.runtime.node", "NodeRunner", "_account", "node_account"),
    ("engine.runtime.failover", "BackendCaller", "complete", "failover_complete"),
    ("engine.runtime.failover", "BackendCaller", "stream", "failover_stream"),
    ("engine.runtime.failover", "BackendCaller", "_relay", "failover_relay"),
    ("engine.runtime.upstream", "UpstreamClient", "complete", "upstream_complete"),
    ("engine.runtime.upstream", "UpstreamClient", "open_stream", "upstream_open_stream"),
    ("engine.runtime.upstream", "UpstreamClient", "_send", "upstream_send"),
    ("engine.runtime.upstream", "UpstreamStream", "next_batch", "upstream_next_batch"),
    ("engine.runtime.upstream", None, "_head", "upstream_head_lines"),
    ("engine.runtime.transport", "PooledTransport", "send", "transport_send"),
    ("engine.runtime.transport", "PooledTransport", "_next_event", "transport_next_event"),
    ("engine.runtime.http1", None, "encode_request", "http1_encode_request"),
    ("engine.runtime.http1", "ResponseReader", "next_event", "http1_next_event"),
    ("engine.runtime.transport", "_ResponseBody", "__anext__", "transport_body_next"),
    ("engine.core.redact", "Redactor", "redact_result", "redact_result"),
    ("engine.core.redact", "StreamRedactor", "events", "redact_stream_batch"),
    ("engine.wire.openai.response", "OpenAIStreamDecoder", "feed", "wire_stream_decode"),
    ("engine.wire.openai.response", "StreamEncoder", "encode_many", "wire_stream_encode"),
    ("engine.messages", "ResultBuilder", "add", "result_builder_add"),
    ("engine.messages", "ResultBuilder", "result", "result_builder_result"),
    ("api.http.relay", "ChatBody", "__anext__", "stream_body_next"),
    ("engine.runtime.feed", "Feed", "_run", "stream_feed_task"),
]


def _library(names: list[str]) -> ctypes.CDLL:
    """Builds ``mark_<name>(cb)`` for each name: calls ``cb`` and returns its result, compiled
    without optimisation so that no call becomes a jump (callgrind must see each as a call)."""
    source = "\n".join(
        f"__attribute__((noinline)) int part_{n}(int (*cb)(void)) "
        f"{{ int r = cb(); return r + 0; }}\n"
        f"int mark_{n}(int (*cb)(void)) {{ int r = part_{n}(cb); return r + 0; }}"
        for n in names)
    folder = tempfile.mkdtemp(prefix="llmr-marks.")
    c, so = os.path.join(folder, "marks.c"), os.path.join(folder, "marks.so")
    with open(c, "w") as out:
        out.write(source + "\n")
    subprocess.run(["gcc", "-O0", "-fno-optimize-sibling-calls", "-shared", "-fPIC", "-o", so, c],
                   check=True)
    return ctypes.CDLL(so)


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int)


def _marked(mark: Any, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, called through the C function ``mark`` (a stack of calls: parts nest)."""
    calls: list[Any] = []

    @_CALLBACK
    def run() -> int:
        args, kwargs = calls[-1]
        try:
            calls[-1] = (True, fn(*args, **kwargs))
        except BaseException as error:  # handed back to the caller below
            calls[-1] = (False, error)
        return 0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        mark(run)
        ok, value = calls.pop()
        if ok:
            return value
        raise value

    wrapper._marked_keep = run  # type: ignore[attr-defined]  # the callback must outlive calls
    return wrapper


def _marked_async(mark: Any, fn: Callable[..., Any]) -> Callable[..., Any]:
    """The coroutine function ``fn``, each step of its coroutine run through ``mark``."""
    steps: list[Any] = []

    @_CALLBACK
    def run() -> int:
        try:
            steps[-1] = (True, steps[-1]())
        except BaseException as error:  # StopIteration: the coroutine returned
            steps[-1] = (False, error)
        return 0

    def step(advance: Callable[[], Any]) -> tuple[bool, Any]:
        steps.append(advance)
        mark(run)
        return steps.pop()

    @types.coroutine
    def drive(coro: Any) -> Any:
        ok, value = step(partial(coro.send, None))
        while True:
            if not ok:
                if type(value) is StopIteration:
                    return value.value
                raise value
            try:
                sent = yield value
            except BaseException as error:  # handed to the coroutine
                ok, value = step(partial(coro.throw, error))
            else:
                ok, value = step(partial(coro.send, sent))

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return await drive(fn(*args, **kwargs))

    wrapper._marked_keep = run  # type: ignore[attr-defined]
    return wrapper


Part = tuple[str, str | None, str, str]


def wrap_parts(parts: list[Part], wrap: Callable[[str, Callable[..., Any]], Any]) -> None:
    """Replaces each function of ``parts`` with ``wrap(part, function)`` (``None``: leaves it)
    where it is defined and where it was imported (the wire protocols' codec fields too)."""
    import importlib

    for module_name, owner, attr, part in parts:
        module = importlib.import_module(module_name)
        target = getattr(module, owner) if owner else module
        if owner and attr not in target.__dict__:
            continue  # not in the build served (PYTHONPATH): an older or newer one
        original = target.__dict__[attr] if owner else getattr(module, attr)
        function = original.__func__ if isinstance(original, staticmethod) else original
        wrapped = wrap(part, function)
        if wrapped is None:
            continue
        setattr(target, attr, staticmethod(wrapped) if function is not original else wrapped)
        if owner is None:  # the name imported elsewhere too
            for other in list(sys.modules.values()):
                if (other is not None and other is not module
                        and getattr(other, "__name__", "").startswith(("engine", "api"))
                        and other.__dict__.get(attr) is original):
                    setattr(other, attr, wrapped)
            from engine.wire import protocols  # their codecs are held as fields too
            for protocol in (protocols.OPENAI, protocols.ANTHROPIC):
                for field in ("parse_request", "_render"):
                    if getattr(protocol, field) is original:
                        object.__setattr__(protocol, field, wrapped)


def install() -> None:
    """Wraps every function of :data:`PARTS` (:data:`PATH_PARTS` with ``MARK_PARTS=path``)
    in its marker."""
    parts = list(PATH_PARTS if os.environ.get("MARK_PARTS") == "path" else PARTS)
    for more in filter(None, os.environ.get("MARK_MORE", "").split(",")):
        module_name, _, dotted = more.strip().partition(":")
        owner, _, attr = dotted.rpartition(".")
        parts.append((module_name, owner or None, attr,
                      f"{owner}_{attr}".strip("_").replace("__", "_")))
    lib = _library([part for *_, part in parts])

    def marked(part: str, function: Callable[..., Any]) -> Callable[..., Any]:
        wrap = _marked_async if inspect.iscoroutinefunction(function) else _marked
        return wrap(getattr(lib, f"mark_{part}"), function)

    wrap_parts(parts, marked)


def import_server() -> None:
    """Imports everything the server imports, so that wrapping finds every name."""
    import importlib

    for name in ("api.cli.main", "engine.core.cache.semantic", "engine.core.routing.decide",
                 "engine.runtime.gateway", "engine.runtime.node", "engine.runtime.policy",
                 "api.http.app", "api.http.server", "api.http.chat_front"):
        importlib.import_module(name)


def serve() -> None:
    """Runs the server as ``llm-router`` with this process's arguments."""
    from api.cli import main as cli_main

    sys.argv[0] = "llm-router"
    cli_main()


def main() -> None:
    import_server()
    install()
    serve()


if __name__ == "__main__":
    main()
