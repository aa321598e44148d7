"""Summarise a py-spy raw (collapsed stacks) profile: top self and inclusive frames, and the
share of each library (the frame a sample was taken in, attributed to the package its file
belongs to, so the shares add up to 100%) and of the router's own stages (inclusive).

    python bench/profile_report.py PROFILE [TOP]
"""

from __future__ import annotations

import collections
import re
import sys

# The first pattern that matches a sample's innermost frame's file names its owner.
LIBRARIES = [
    ("quart / quart-trio / flask (sansio)", r"^(quart|quart_trio|flask|blinker)/"),
    ("werkzeug (routing, headers)", r"^werkzeug/"),
    ("hypercorn", r"^hypercorn/"),
    ("h11 (both sides)", r"^h11/"),
    ("pydantic", r"^pydantic(_core)?/"),
    ("trio (+ outcome, attrs)", r"^(trio|outcome|attr)/"),
    ("httpx", r"^http(x|core)/"),
    ("networkx", r"^networkx/"),
    ("numpy", r"^numpy/"),
    ("stdlib logging", r"^logging/"),
    ("router: transport + HTTP/1.1 client codec", r"^engine/runtime/(transport|http1)\.py"),
    ("router: scoring + routing", r"^engine/core/routing/|^engine/runtime/(policy|learning)\.py"),
    ("router: cache + embedding",
     r"^engine/core/cache/|^engine/runtime/(embeddings|cache_thresholds|shared_cache)\.py"),
    ("router: wire codecs", r"^engine/wire/"),
    ("router: api/http", r"^api/"),
    ("router: other engine", r"^engine/"),
]
# Samples of a thread waiting for work (py-spy sees its lock wait as running).
IDLE = re.compile(r"_thread_cache\.py:211\)$")

# Inclusive: the share of samples with a matching frame anywhere on the stack.
STAGES = [
    ("ASGI app (quart-trio handler, request and response)", r"\((quart_trio|quart)/asgi\.py"),
    ("chat endpoint (api/http)", r"api/http/app\.py"),
    ("Gateway.complete / open_stream", r"Gateway\.(complete|open_stream) \("),
    ("the call's flight (background task: failover, upstream client, transport)",
     r"FlightRegistry\._fly \("),
    ("routing decision (scoring, trained router)",
     r"\(engine/core/routing/|\(engine/runtime/policy\.py"),
    ("embedding", r"(?i)embed[^(]* \("),
    ("cache (fingerprint, lookup, store)",
     r"\(engine/core/cache/|\(engine/runtime/shared_cache\.py"),
    ("access line", r"\(api/http/access\.py"),
    ("pydantic", r"\(pydantic(_core)?/"),
    ("hypercorn (reading requests, writing responses)", r"\(hypercorn/"),
    ("h11 (both sides)", r"\(h11/"),
]


def file_of(frame: str) -> str:
    match = re.search(r"\((.*?)(:\d+)?\)$", frame)
    return match.group(1) if match else frame


def owner(frames: list[str]) -> str:
    """The library of the innermost frame that belongs to one; stdlib frames (contextlib,
    abc, ...) count for their caller."""
    for frame in reversed(frames):
        path = file_of(frame)
        for name, pattern in LIBRARIES:
            if re.search(pattern, path):
                return name
    return "other"


def main(path: str, top: int = 25) -> None:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    libraries: collections.Counter[str] = collections.Counter()
    stages: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path) as lines:
        for line in lines:
            stack, _, count = line.rstrip().rpartition(" ")
            n = int(count)
            frames = stack.split(";")
            if IDLE.search(frames[-1]):
                continue
            total += n
            own[frames[-1]] += n
            libraries[owner(frames)] += n
            for frame in set(frames):
                inclusive[frame] += n
            for name, pattern in STAGES:
                if any(re.search(pattern, frame) for frame in frames):
                    stages[name] += n
    print(f"{total} samples")
    for title, counter in (("self", own), ("inclusive", inclusive)):
        print(f"--- {title}")
        for frame, n in counter.most_common(top):
            print(f"{100 * n / total:5.1f}%  {frame[:140]}")
    print("--- by library (self time)")
    for name, n in libraries.most_common():
        print(f"{100 * n / total:5.1f}%  {name}")
    own_code = sum(n for name, n in libraries.items() if name.startswith("router: "))
    print(f"{100 * own_code / total:5.1f}%  (the router's own code, all of it)")
    print("--- by stage (inclusive)")
    for name, _ in STAGES:
        print(f"{100 * stages[name] / total:5.1f}%  {name}")


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:3]))
