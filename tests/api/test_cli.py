"""The ``llm-router`` command (``api.cli.main``), run as a real subprocess where exit codes, stderr
and signals are the point, and in-process for the pure ``--addr`` parser.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from support_processes import LLM_ROUTER, router_process

from api.cli.main import parse_addr

# Nothing is sent upstream in these tests: the base URL is never dialled.
GOOD = """\
models:
  - {name: small, provider: openai, model: m1, base_url: "http://127.0.0.1:9/v1", tier: 1}
  - {name: large, provider: anthropic, model: m2, api_key: $CLI_TEST_UNSET_KEY, tier: 3}
"""

BAD = """\
models:
  - name: a
    provider: foo
    model: m
    tier: 0
  - {name: b, provider: openai, model: m, cost_per_1k_in: -1, base_url: "$CLI_TEST_UNSET_HOST"}
classifier: {tier1_max: 80, tier2_max: 20}
"""
BAD_PATHS = [
    "models[0].provider",
    "models[0].tier",
    "models[1].cost_per_1k_in",
    "models[1].base_url",
    "classifier",
]


def environment() -> dict[str, str]:
    """The test process's environment without any variable these configs mention."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CLI_TEST_")}


async def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(20):
        return await trio.run_process(
            [LLM_ROUTER, *args],
            cwd=cwd,
            env=environment(),
            check=False,
            capture_stdout=True,
            capture_stderr=True,
        )


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---- llm-router check -------------------------------------------------------------------------


async def test_check_prints_every_problem_with_its_key_path_and_exits_2(tmp_path: Path) -> None:
    write(tmp_path, "bad.yaml", BAD)
    done = await run("check", "bad.yaml", cwd=tmp_path)

    assert done.returncode == 2
    err = done.stderr.decode()
    for path in BAD_PATHS:
        assert re.search(rf"^\s+{re.escape(path)}: ", err, re.MULTILINE), (path, err)
    assert "CLI_TEST_UNSET_HOST" in err
    assert "Traceback" not in err


async def test_check_accepts_a_good_file_and_warns_about_a_missing_key(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", GOOD)
    done = await run("check", "good.yaml", cwd=tmp_path)

    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode()
    assert "ok" in out
    assert "models[1].api_key" in out and "CLI_TEST_UNSET_KEY" in out


async def test_check_a_missing_file(tmp_path: Path) -> None:
    done = await run("check", "absent.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert "absent.yaml" in done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()


async def test_python_dash_m_runs_the_same_command(tmp_path: Path) -> None:
    write(tmp_path, "bad.yaml", BAD)
    with trio.fail_after(20):
        done = await trio.run_process(
            [sys.executable, "-m", "api.cli", "check", "bad.yaml"],
            cwd=tmp_path,
            env=environment(),
            check=False,
            capture_stdout=True,
            capture_stderr=True,
        )
    assert done.returncode == 2
    assert "models[0].provider" in done.stderr.decode()


# ---- start-up failures ------------------------------------------------------------------------


async def test_bad_config_at_start_up_is_one_clear_message(tmp_path: Path) -> None:
    write(tmp_path, "bad.yaml", BAD)
    done = await run("--config", "bad.yaml", "--addr", "127.0.0.1:0", cwd=tmp_path)

    assert done.returncode == 2
    err = done.stderr.decode()
    assert "Traceback" not in err
    assert err.startswith("llm-router: bad.yaml: invalid configuration")
    for path in BAD_PATHS:
        assert f"{path}: " in err
    assert done.stdout == b""


async def test_default_config_path_is_config_yaml(tmp_path: Path) -> None:
    done = await run("--addr", "127.0.0.1:0", cwd=tmp_path)
    assert done.returncode == 2
    assert "config.yaml" in done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()


async def test_bad_addr_at_start_up(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", GOOD)
    done = await run("--config", "good.yaml", "--addr", "8080", cwd=tmp_path)
    assert done.returncode == 2
    assert "--addr" in done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()


async def test_address_in_use_is_one_line(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", GOOD)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = await run("--config", "good.yaml", "--addr", f"127.0.0.1:{port}", cwd=tmp_path)
    assert done.returncode == 1
    err = done.stderr.decode()
    assert f"llm-router: cannot listen on 127.0.0.1:{port}: " in err
    assert "in use" in err.lower()
    assert "Traceback" not in err and "misnesting" not in err
    assert len(err.strip().splitlines()) <= 2  # the unset-key warning, then the cause


@pytest.mark.parametrize("addr", ["no-such-host.invalid:8090", "http://127.0.0.1:8090",
                                  "127.0.0.1:70000"])
async def test_unusable_addresses_are_one_line(tmp_path: Path, addr: str) -> None:
    write(tmp_path, "good.yaml", GOOD)
    done = await run("--config", "good.yaml", "--addr", addr, cwd=tmp_path)
    err = done.stderr.decode()
    assert done.returncode in (1, 2), err
    assert "Traceback" not in err and "misnesting" not in err
    assert err.strip().splitlines()[-1].startswith("llm-router: ")
    assert len(err.strip().splitlines()) <= 2


# ---- serving ----------------------------------------------------------------------------------


async def test_serves_health_and_stops_on_sigterm(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", GOOD)
    err = bytearray()
    async with router_process(tmp_path / "good.yaml", log=err) as (process, url):
        async with httpx.AsyncClient() as http:
            health = await http.get(url + "/health")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"

        process.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            returncode = await process.wait()
    assert returncode == 0
    assert "Traceback" not in err.decode()
    # The unset provider key is a start-up warning, not a failure.
    assert "CLI_TEST_UNSET_KEY" in err.decode()


# ---- --addr parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        (":8080", ("0.0.0.0", 8080)),
        (":0", ("0.0.0.0", 0)),
        ("127.0.0.1:9", ("127.0.0.1", 9)),
        ("localhost:8080", ("localhost", 8080)),
        ("0.0.0.0:65535", ("0.0.0.0", 65535)),
        ("[::1]:80", ("::1", 80)),
    ],
)
def test_parse_addr(addr: str, expected: tuple[str, int]) -> None:
    assert parse_addr(addr) == expected


@pytest.mark.parametrize(
    "addr", ["8080", "", "localhost", "localhost:", "localhost:http", ":65536", ":-1", "h:8 0",
             "http://127.0.0.1:8090", ":\u00b9", "h:\u0668\u0660"]  # digits, not ASCII ones
)
def test_parse_addr_rejects(addr: str) -> None:
    with pytest.raises(ValueError, match=r"HOST:PORT|out of range"):
        parse_addr(addr)


@pytest.mark.parametrize(
    ("addr", "hint"),
    [
        ("http://127.0.0.1:8090", "did you mean 127.0.0.1:8090?"),
        ("https://localhost:8443/", "did you mean localhost:8443?"),
        ("8080", "did you mean :8080?"),
        (":99999", "port 99999 is out of range (0-65535)"),
    ],
)
def test_parse_addr_says_what_was_meant(addr: str, hint: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_addr(addr)
    assert hint in str(caught.value)


@given(
    st.sampled_from(["127.0.0.1", "0.0.0.0", "localhost", "example.internal", "10.1.2.3"]),
    st.integers(0, 65535),
)
def test_parse_addr_round_trips_host_and_port(host: str, port: int) -> None:
    assert parse_addr(f"{host}:{port}") == (host, port)
    assert parse_addr(f":{port}") == ("0.0.0.0", port)
