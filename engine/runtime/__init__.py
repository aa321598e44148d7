"""The running router (trio): the gateway and what it runs, the executor, node decisions,
dedup flights (in the process, and across processes through Redis), failover, the upstream
client and transport, the routing policy, the sidecar, the workflow runner, and the feeds
that stream a background task's output to a client; and the socket and channel calls that
pass the scheduler only when they must wait (the server's connections use them too)."""

from .channels import receive as channel_receive
from .channels import send as channel_send
from .feed import ChatStream
from .gateway import Gateway, MetricsSnapshot, open_gateway
from .keys import KeyGate
from .models import Models, load_models
from .node import RunContext, Served
from .policy import FeedbackReport, RoutingPolicy, load_offline_policy
from .runs import Runs
from .socket_io import receive_some as socket_receive_some
from .socket_io import send_all as socket_send_all
from .tracing import RequestSpan, configure_tracing, request_span

__all__ = [
    "ChatStream",
    "FeedbackReport",
    "Gateway",
    "KeyGate",
    "MetricsSnapshot",
    "Models",
    "RequestSpan",
    "RoutingPolicy",
    "RunContext",
    "Runs",
    "Served",
    "channel_receive",
    "channel_send",
    "configure_tracing",
    "load_models",
    "load_offline_policy",
    "open_gateway",
    "request_span",
    "socket_receive_some",
    "socket_send_all",
]
