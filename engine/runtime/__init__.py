"""The running router (trio): the gateway and what it runs, the executor, node decisions,
dedup flights, failover, the upstream client and transport, the routing policy, the sidecar
and the workflow runner."""

from .gateway import ChatStream, Gateway, Models, WorkflowEvents, load_models, open_gateway
from .node import RunContext, Served
from .policy import load_offline_policy

__all__ = [
    "ChatStream",
    "Gateway",
    "Models",
    "RunContext",
    "Served",
    "WorkflowEvents",
    "load_models",
    "load_offline_policy",
    "open_gateway",
]
