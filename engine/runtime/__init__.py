"""The running router (trio): the gateway and what it runs, the executor, node decisions,
dedup flights (in the process, and across processes through Redis), failover, the upstream
client and transport, the routing policy, the sidecar, the workflow runner, and the feeds
that stream a background task's output to a client."""

from .feed import ChatStream
from .gateway import Gateway, MetricsSnapshot, Models, load_models, open_gateway
from .keys import KeyGate
from .node import RunContext, Served
from .policy import FeedbackReport, RoutingPolicy, load_offline_policy
from .runs import Runs
from .tracing import RequestSpan, configure_tracing, request_span

__all__ = [
    "ChatStream",
    "FeedbackReport",
    "Gateway",
    "KeyGate",
    "MetricsSnapshot",
    "Models",
    "RoutingPolicy",
    "RunContext",
    "RequestSpan",
    "Runs",
    "Served",
    "load_models",
    "load_offline_policy",
    "configure_tracing",
    "open_gateway",
    "request_span",
]
