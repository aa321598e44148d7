"""The ``>>>`` examples in engine/ and api/ docstrings run, and show what they claim."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from types import ModuleType

import pytest

import api
import engine


def _modules() -> list[ModuleType]:
    names = [engine.__name__, api.__name__]
    for package in (engine, api):
        names += [
            info.name
            for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
            if not info.name.endswith(".__main__")  # running it is running the command
        ]
    return [importlib.import_module(name) for name in sorted(names)]


_FINDER = doctest.DocTestFinder()
_WITH_EXAMPLES = [m for m in _modules() if any(t.examples for t in _FINDER.find(m))]


def test_examples_are_found() -> None:
    assert {"engine.core.planner", "engine.core.workflow.render"} <= {
        m.__name__ for m in _WITH_EXAMPLES
    }


@pytest.mark.parametrize("module", _WITH_EXAMPLES, ids=lambda m: m.__name__)
def test_doctests(module: ModuleType) -> None:
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    for test in _FINDER.find(module):
        runner.run(test, out=report.append)
    assert runner.tries > 0
    assert runner.failures == 0, "".join(report)
