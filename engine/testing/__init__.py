"""The fake upstream: a real OpenAI / Anthropic wire peer with scriptable faults, for tests
and benchmarks. Nothing in the product imports it."""

from .fake_upstream import (
    Behaviour,
    FakeUpstream,
    Recorded,
    ToolCall,
    Usage,
    open_fake_upstream,
    refused_url,
)

__all__ = [
    "Behaviour",
    "FakeUpstream",
    "Recorded",
    "ToolCall",
    "Usage",
    "open_fake_upstream",
    "refused_url",
]
