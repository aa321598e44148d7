"""The router's server with each part of a request wrapped in a named C function, for
valgrind's callgrind: the inclusive instruction count of ``part_<name>`` is that part's
instructions, counted exactly, in the server as it runs (``bench/miss_instructions.sh`` drives
it: warm-up uninstrumented, then N requests with ``callgrind_control -i on``).

    python bench/miss_instructions.py --config X --addr Y     # as ``llm-router``, marked

Each wrapped function is called through ``mark_<name>(callback)``, which calls
``part_<name>(callback)``, functions of a small C library built here with gcc (callgrind does
not see the call from libffi into ``mark_<name>`` as a call; it does see the one into
``part_<name>``). The callback is a ctypes one: a wrapped call costs ~2,800 instructions
inside ``part_<name>`` (measured around a ``lambda: None``) and ~4,000 outside it. Only
synchronous functions are wrapped: a coroutine's work runs after its call returns.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
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
    ("engine.core.routing.hashing", None, "word_hashes", "router_word_hashes"),
    ("engine.core.routing.hashing", None, "char_hashes", "router_char_hashes"),
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


def install() -> None:
    """Wraps every function of :data:`PARTS` where it is defined and where it was imported."""
    import importlib

    lib = _library([part for *_, part in PARTS])
    for module_name, owner, attr, part in PARTS:
        module = importlib.import_module(module_name)
        target = getattr(module, owner) if owner else module
        original = target.__dict__[attr] if owner else getattr(module, attr)
        setattr(target, attr, _marked(getattr(lib, f"mark_{part}"), original))
        if owner is None:  # the name imported elsewhere too
            for other in list(sys.modules.values()):
                if (other is not None and other is not module
                        and getattr(other, "__name__", "").startswith(("engine", "api"))
                        and other.__dict__.get(attr) is original):
                    setattr(other, attr, target.__dict__[attr])


def main() -> None:
    import importlib

    for name in ("api.cli.main", "engine.core.cache.semantic", "engine.core.routing.decide",
                 "engine.runtime.gateway", "engine.runtime.node", "engine.runtime.policy"):
        importlib.import_module(name)  # everything the server imports, before wrapping
    install()
    from api.cli import main as cli_main

    sys.argv[0] = "llm-router"
    cli_main()


if __name__ == "__main__":
    main()
