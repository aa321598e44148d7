"""Shared pytest fixtures. Each section belongs to one test support module; keep them apart."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from support_key_store import KEY_STORE_KINDS, open_key_store_of
from support_redis import RedisServer, running_redis
from support_run_store import STORE_KINDS, open_store_of
from trio.testing import MockClock

from engine.stores import RunStore
from engine.stores.keys import KeyStore
from engine.testing.fake_upstream import FakeUpstream, open_fake_upstream

# -- Hypothesis ----------------------------------------------------------------------------------

# Its default 200 ms deadline per example is a timed assertion: on a loaded machine it fails
# correct code. How fast things are is for the benchmarks (bench/) to say.
settings.register_profile("llm-router", deadline=None)
settings.load_profile("llm-router")


# -- fake upstream (engine/testing/fake_upstream.py) ----------------------------------------------


@pytest.fixture
async def fake_upstream() -> AsyncIterator[FakeUpstream]:
    """A fresh fake LLM provider on a free loopback port, shut down after the test."""
    async with open_fake_upstream() as fake:
        yield fake


# -- run store (tests/support/support_run_store.py) -----------------------------------------------


@pytest.fixture(params=STORE_KINDS)
async def run_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunStore]:
    """A fresh run store of each kind, closed after the test: the embedded one on
    ``tmp_path / "state.db"``, and the shared one on a ``redis-server`` of the test's own."""
    async with open_store_of(request.param, tmp_path) as store:
        yield store


# -- key store (tests/support/support_key_store.py) -----------------------------------------------


@pytest.fixture(params=KEY_STORE_KINDS)
async def key_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KeyStore]:
    """A fresh key store of each kind, closed after the test: the embedded one on
    ``tmp_path / "state.db"``, and the shared one on a ``redis-server`` of the test's own."""
    async with open_key_store_of(request.param, tmp_path) as store:
        yield store


# -- Redis (tests/support/support_redis.py) ---------------------------------------------------


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real ``redis-server`` of this test's own on a free port (skipped where none is
    installed, unless ``LLM_ROUTER_REQUIRE_REDIS=1``)."""
    with running_redis(tmp_path) as server:
        yield server


# -- trio's clock (pytest-trio runs a test on a Clock fixture it asks for) -------------------------


@pytest.fixture
def jumpable_clock() -> MockClock:
    """Real time, which the test may move forward (``support_routing.skip_ahead``) to end a
    wait the router measures on trio's clock, an ejection or a ``Retry-After``, without
    sleeping through it. A wait set far longer than the test's checks then lasts exactly until
    the test ends it."""
    return MockClock(rate=1.0)
