"""Shared pytest fixtures. Each section belongs to one test support module; keep them apart."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from engine.testing.fake_upstream import FakeUpstream, open_fake_upstream

# -- fake upstream (engine/testing/fake_upstream.py) ----------------------------------------------


@pytest.fixture
async def fake_upstream() -> AsyncIterator[FakeUpstream]:
    """A fresh fake LLM provider on a free loopback port, shut down after the test."""
    async with open_fake_upstream() as fake:
        yield fake
