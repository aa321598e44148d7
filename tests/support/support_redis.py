"""A real ``redis-server`` for the tests that need one: started on a free loopback port in a
temporary folder, nothing saved to disk, and stoppable mid-test (``kill``) and startable
again on the same port (``start``), to test what the router does when Redis goes away.

``redis-server`` comes from the operating system (Debian's ``redis-server`` package; `.ci/run`
installs it). Where it is missing the tests that need it are skipped, saying so, unless
``LLM_ROUTER_REQUIRE_REDIS=1`` (set by `.ci/run`) makes that a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = ["RedisServer", "redis_server_binary", "running_redis"]


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        message = ("redis-server is not installed (apt-get install redis-server); "
                   "the shared-state tests need a real one")
        if os.environ.get("LLM_ROUTER_REQUIRE_REDIS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    def __init__(self, folder: Path, *, password: str | None = None) -> None:
        self.binary = redis_server_binary()
        self.folder = folder
        self.port = _free_port()
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.folder), "--loglevel", "warning"]
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                    if sock.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: Redis vanishes mid-conversation, as a crashed server does."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@contextmanager
def running_redis(folder: Path, *, password: str | None = None) -> Iterator[RedisServer]:
    server = RedisServer(folder, password=password)
    server.start()
    try:
        yield server
    finally:
        server.kill()
