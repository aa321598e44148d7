"""Workflows: the YAML source, the checked spec, sandboxed templates, rendering, and the
plan with its cost and latency estimates."""

from .plan import RouteDecider, check_models, describe_plan, estimate_costs, plan_workflow
from .render import parse_output, render_request, resolve_variables
from .source import check_variables, parse_yaml
from .spec import OpOutput, Workflow, WorkflowLimits, check_workflow, load_workflow

__all__ = [
    "OpOutput",
    "RouteDecider",
    "Workflow",
    "WorkflowLimits",
    "check_models",
    "check_variables",
    "check_workflow",
    "describe_plan",
    "estimate_costs",
    "load_workflow",
    "parse_output",
    "parse_yaml",
    "plan_workflow",
    "render_request",
    "resolve_variables",
]
