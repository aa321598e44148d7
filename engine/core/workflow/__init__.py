"""Workflows: the YAML source, the checked spec, sandboxed templates, rendering, and the
plan with its cost and latency estimates."""

from .plan import RouteDecider, check_models, describe_plan, estimate_costs, plan_workflow
from .render import parse_output, render_request, resolve_variables
from .runs import (
    FINISHED,
    RUN_STATUSES,
    TERMINAL_EVENTS,
    OpState,
    RunChange,
    RunEvent,
    RunRecord,
    RunSpec,
    iso_time,
    memo_key,
    new_run_id,
)
from .source import check_variables, parse_yaml
from .spec import OpOutput, Workflow, WorkflowLimits, check_workflow, load_workflow

__all__ = [
    "FINISHED",
    "RUN_STATUSES",
    "TERMINAL_EVENTS",
    "OpOutput",
    "OpState",
    "RouteDecider",
    "RunChange",
    "RunEvent",
    "RunRecord",
    "RunSpec",
    "Workflow",
    "WorkflowLimits",
    "check_models",
    "check_variables",
    "check_workflow",
    "describe_plan",
    "estimate_costs",
    "iso_time",
    "load_workflow",
    "memo_key",
    "new_run_id",
    "parse_output",
    "parse_yaml",
    "plan_workflow",
    "render_request",
    "resolve_variables",
]
