"""Each engine package's public surface (its ``__all__``), pinned: a name joins or leaves a
front door on purpose, with this test changed alongside."""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

SURFACES: dict[str, set[str]] = {
    "engine": {"errors", "messages"},
    "engine.core": {
        "DEFAULT_MODEL_PATH", "FORMAT_VERSION", "Adjustment", "BackendPool", "BackendState",
        "CacheHit", "Config", "Embedder", "FINISHED", "LATENCY_BUCKETS", "FeatureConfig",
        "KeyRecord", "KeySettings", "Features", "LearnedRouter",
        "Matcher", "ModelConfig", "Node", "OpOutput", "OpState", "Plan", "PreparedText",
        "RUN_STATUSES", "RedactingFilter", "Redactor", "Report", "RequestKey", "ResponseCache",
        "Route",
        "RouteDecider", "RunEvent", "RunRecord", "RunSpec",
        "Score", "SemanticMatcher", "Stats", "StreamRedactor", "TextEmbedder", "Workflow",
        "WorkflowLimits", "blend", "calibrate", "check_models", "check_variables",
        "check_workflow", "cost_usd", "decide_route", "describe_plan", "estimate_costs",
        "extract_features", "iso_time", "load_config", "load_workflow", "new_request_id",
        "parse_output", "parse_yaml",
        "plan_chat", "plan_workflow", "render_request", "request_for_prompt", "request_key",
        "resolve_variables", "score_request", "tag_of", "tier_for_score", "weight_to_end",
        "without_userinfo",
    },
    "engine.core.cache": {
        "CacheHit", "Embedder", "Matcher", "PreparedText", "RequestKey", "ResponseCache",
        "SemanticMatcher", "request_key",
    },
    "engine.core.routing": {
        "DEFAULT_MODEL_PATH", "FORMAT_VERSION", "Adjustment", "FeatureConfig", "Features",
        "LearnedRouter", "Report", "Route", "Score", "TextEmbedder", "blend", "calibrate",
        "decide_route", "extract_features", "request_for_prompt", "score_request",
        "tier_for_score",
    },
    "engine.core.workflow": {
        "FINISHED", "OpOutput", "OpState", "RUN_STATUSES", "RouteDecider", "RunChange",
        "RunEvent", "RunRecord", "RunSpec", "TERMINAL_EVENTS", "Workflow", "WorkflowLimits",
        "check_models", "check_variables", "check_workflow", "describe_plan", "estimate_costs",
        "iso_time", "load_workflow", "memo_key", "new_run_id", "parse_output", "parse_yaml",
        "plan_workflow", "render_request", "resolve_variables",
    },
    "engine.runtime": {
        "ChatStream", "FeedbackReport", "Gateway", "KeyGate", "MetricsSnapshot", "Models",
        "RequestSpan", "RoutingPolicy", "RunContext", "Runs", "Served", "configure_tracing",
        "load_models", "load_offline_policy", "open_gateway", "request_span",
        # socket and channel calls that wait only when they must (the server's connections)
        "channel_receive", "channel_send", "socket_receive_some", "socket_send_all",
    },
    "engine.stores": {"FeedbackStore", "Memo", "RunStore", "SqliteRunStore"},
    "engine.testing": {
        "Behaviour", "FakeUpstream", "Recorded", "ToolCall", "Usage", "open_fake_upstream",
        "refused_url",
    },
    "engine.training": {
        "MONOTONE", "SPLITS", "RoutingRow", "Split", "cheapest_at", "curve_at", "evaluate_choices",
        "model_ladder", "multi_tier_points", "parse_rows", "split_of", "split_rows", "summarize",
        "tier_split", "train_router",
    },
    "engine.wire": {
        "ANTHROPIC", "OPENAI", "Encoder", "Provider", "SSEDecoder", "StreamDecoder",
        "WireProtocol", "decode_events", "parse_count_request", "provider_for", "render_count",
        # request bodies declared once: read by validators and by /openapi.json
        "ROUTER_CACHE", "Anything", "Fields", "Flag", "Num", "Text", "to_schema",
    },
}


@pytest.mark.parametrize("name", sorted(SURFACES))
def test_exported_members(name: str) -> None:
    package = importlib.import_module(name)
    assert set(package.__all__) == SURFACES[name]
    assert all(hasattr(package, member) for member in package.__all__)


@pytest.mark.parametrize("name", sorted(SURFACES))
def test_nothing_exported_by_accident(name: str) -> None:
    """Every public name a package holds, other than its submodules, is in its ``__all__``."""
    package = importlib.import_module(name)
    public = {
        member for member, value in vars(package).items()
        if not member.startswith("_") and not isinstance(value, ModuleType)
    }
    assert public <= set(package.__all__)
