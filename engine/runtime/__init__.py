"""The running router (trio): the gateway and what it runs, the executor, node decisions,
dedup flights (in the process, and across processes through Redis), failover, the upstream
client and transport, the routing policy, the sidecar, the workflow runner, and the feeds
that stream a background task's output to a client."""

from .feed import ChatStream
from .gateway import Gateway, Models, load_models, open_gateway
from .keys import KeyGate
from .node import RunContext, Served
from .policy import FeedbackReport, RoutingPolicy, load_offline_policy
from .runs import Runs

__all__ = [
    "ChatStream",
    "FeedbackReport",
    "Gateway",
    "KeyGate",
    "Models",
    "RoutingPolicy",
    "RunContext",
    "Runs",
    "Served",
    "load_models",
    "load_offline_policy",
    "open_gateway",
]
