"""The rules of docs/architecture.md, checked: the import contracts in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_import_contracts() -> None:
    """Every ``[tool.importlinter]`` contract is kept (the layers, the one networkx seam, the
    fake upstream kept out of the product)."""
    done = _run(
        "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()",
        "--config", str(ROOT / "pyproject.toml"), "--no-cache",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_mypy() -> None:
    """``mypy`` (``[tool.mypy]``: engine and api; strict on engine.core and engine.wire) finds
    nothing. About 12 s from a cold cache, 2 s warm."""
    done = _run("-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff() -> None:
    """``ruff check`` (``[tool.ruff]``) finds nothing in engine, api, tests, bench and
    docs/images. Well under a second."""
    done = _run("-m", "ruff", "check", "engine", "api", "tests", "bench", "docs/images")
    assert done.returncode == 0, done.stdout + done.stderr


MAX_MODULE_LINES = 600


def test_modules_hold_one_concept() -> None:
    """No module of engine/ or api/ passes 600 lines: past that it holds a second concept
    that wants a module of its own."""
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for package in ("engine", "api")
        for path in (ROOT / package).rglob("*.py")
    }
    assert len(sizes) > 50
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}
