"""The one error tree of the router.

Every error the engine or the API raises on purpose is a :class:`RouterError`. Each class
carries the HTTP status it maps to and a stable machine-readable ``code``; the API renders any
of them in the caller's protocol (an OpenAI or an Anthropic error object), so there is exactly
one place where errors become responses.

::

    RouterError                     500  internal_error
      ConfigInvalid                      (start-up: the configuration file is invalid)
      RequestInvalid                400  invalid_request
        NotFound                    404  not_found
        Conflict                    409  conflict
          ModelNotFound             404  model_not_found
          WorkflowNotFound          404  workflow_not_found
        PayloadTooLarge             413  request_too_large
        RequestTimeout              408  request_timeout
        WorkflowInvalid             400  workflow_invalid
          TemplateLimitExceeded          (a prompt template hit a render limit)
      Unauthorized                  401  unauthorized
      Forbidden                     403  permission_denied
      ClientTooSlow                 408  client_too_slow
      RateLimited                   429  rate_limited
      BudgetExceeded                429  budget_exceeded
      NoBackendAvailable            503  no_backend_available
      StoreUnavailable              503  store_unavailable
      DeadlineExceeded              504  deadline_exceeded
      OutputTooLarge                502  output_too_large
      RunCancelled                  409  run_cancelled
      UpstreamError                 502  upstream_error
        UpstreamTimeout             504  upstream_timeout
        UpstreamUnreachable         502  upstream_unreachable
        UpstreamRejected            400  upstream_rejected
        UpstreamRateLimited         429  upstream_rate_limited
        UpstreamBusy                503  upstream_busy

Foreign exceptions (httpx, networkx, YAML, Jinja) are translated into this tree at exactly one
seam each; nothing else catches third-party exceptions. Messages never contain provider keys.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "ECHO_MAX",
    "BudgetExceeded",
    "ClientTooSlow",
    "ConfigInvalid",
    "Conflict",
    "DeadlineExceeded",
    "Forbidden",
    "ModelNotFound",
    "NoBackendAvailable",
    "NotFound",
    "OutputTooLarge",
    "PayloadTooLarge",
    "RateLimited",
    "RequestInvalid",
    "RequestTimeout",
    "RouterError",
    "RunCancelled",
    "StoreUnavailable",
    "TemplateLimitExceeded",
    "Unauthorized",
    "UpstreamBusy",
    "UpstreamError",
    "UpstreamRateLimited",
    "UpstreamRejected",
    "UpstreamTimeout",
    "UpstreamUnreachable",
    "WorkflowInvalid",
    "WorkflowNotFound",
    "did_you_mean",
    "echo",
]

ECHO_MAX = 160


def echo(value: object, *, raw: bool = False) -> str:
    """A value the client sent, as an error message quotes it: its ``repr``, cut after
    :data:`ECHO_MAX` characters with an ellipsis and the full length, so that a message never
    hands a client's megabyte back to it. ``raw``: ``value`` is text to embed unquoted (a
    foreign error's message, which may itself quote the input).

    >>> echo("gpt-4o")
    "'gpt-4o'"
    >>> echo("x" * 1000)[-24:]
    "xxxx'… (1000 characters)"
    """
    if isinstance(value, str):
        if len(value) <= ECHO_MAX:
            return value if raw else repr(value)
        head = value[:ECHO_MAX]
        return f"{head if raw else repr(head)}… ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= ECHO_MAX else f"{text[:ECHO_MAX]}… ({len(text)} characters)"


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """A hint naming the closest of ``choices`` to a misspelt ``word`` (``difflib``), for an
    error message to end with; ``""`` when nothing is close.

    >>> did_you_mean("promt", ["prompt", "template", "tier"])
    " (did you mean 'prompt'?)"
    >>> did_you_mean("colour", ["prompt", "tier"])
    ''
    """
    if not isinstance(word, str) or len(word) > ECHO_MAX:
        return ""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


class RouterError(Exception):
    """Base of every error the router raises on purpose."""

    status: int = 500
    code: str = "internal_error"
    #: The model the error concerns: the backend that failed, or the last one tried.
    backend: str | None = None
    #: Where a chat request was routed before it failed (an ``engine.runtime.Served``): its
    #: error response carries the ``X-LLM-Router-*`` headers too. None: it failed before.
    routed: Any = None
    #: Further headers of its error response (a client key's X-RateLimit-*, a workflow
    #: run's id). None: no others.
    headers: dict[str, str] | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # A param is a path or a name, and is sent back as it is: cut one the client made huge.
        if param is not None and len(param) > ECHO_MAX:
            param = param[:ECHO_MAX] + "…"
        self.param = param


class RequestInvalid(RouterError):
    """The client's request is malformed or asks for something impossible."""

    status = 400
    code = "invalid_request"


class NotFound(RequestInvalid):
    """The request names something the router does not have (or no longer remembers)."""

    status = 404
    code = "not_found"


class Conflict(RequestInvalid):
    """The request conflicts with the state of what it names (cancelling a finished run)."""

    status = 409
    code = "conflict"


class ModelNotFound(NotFound):
    """The request names a model that is not configured."""

    status = 404
    code = "model_not_found"


class PayloadTooLarge(RequestInvalid):
    """The request body exceeds ``server.max_body_bytes``."""

    status = 413
    code = "request_too_large"


class RequestTimeout(RequestInvalid):
    """The request body did not arrive within ``server.read_timeout_sec``."""

    status = 408
    code = "request_timeout"


class WorkflowInvalid(RequestInvalid):
    """A workflow definition failed validation; ``op`` names the op at fault, if any.

    ``problems`` holds every problem found, each a ``WorkflowInvalid`` of its own; for a
    single problem it is ``(self,)``. :meth:`collect` makes one error of several, whose
    message lists them all and whose ``op`` is the first one's.
    """

    code = "workflow_invalid"

    def __init__(self, message: str, *, op: str | None = None,
                 problems: Sequence[WorkflowInvalid] = ()) -> None:
        super().__init__(message, param=op)
        self.op = op
        self.problems: tuple[WorkflowInvalid, ...] = tuple(problems) or (self,)

    def describe(self) -> str:
        """The message, naming the op if it does not already."""
        if self.op is not None and repr(self.op) not in self.message:
            return f"op {self.op!r}: {self.message}"
        return self.message

    @classmethod
    def collect(cls, problems: Sequence[WorkflowInvalid]) -> WorkflowInvalid:
        """One error for ``problems`` (at least one): the problem itself when alone.

        >>> both = WorkflowInvalid.collect([WorkflowInvalid("tier must be 1-10", op="a"),
        ...                                 WorkflowInvalid("cycle: b -> b", op="b")])
        >>> both.message, both.op, len(both.problems)
        ("2 problems: op 'a': tier must be 1-10; op 'b': cycle: b -> b", 'a', 2)
        """
        if len(problems) == 1:
            return problems[0]
        listed = "; ".join(p.describe() for p in problems)
        return cls(f"{len(problems)} problems: {listed}", op=problems[0].op, problems=problems)


class TemplateLimitExceeded(WorkflowInvalid):
    """Rendering an op's prompt template hit one of its limits: its work budget, the size
    of what it may build, its loop steps or ``workflows.render_timeout_sec``. A dry run
    reports it (its stand-ins for upstream answers are as long as answers may be), where it
    estimates around other render failures."""


class WorkflowNotFound(NotFound):
    """``POST /v1/workflows/{name}`` names no ready pipeline."""

    status = 404
    code = "workflow_not_found"


class Unauthorized(RouterError):
    """The client key is missing or not one of ``server.api_keys``."""

    status = 401
    code = "unauthorized"


class Forbidden(RouterError):
    """The client key may not do this (a model outside its ``models``)."""

    status = 403
    code = "permission_denied"


class BudgetExceeded(RouterError):
    """The client key has spent its budget for the period; ``retry_after``: seconds until the
    period ends (None for a ``total`` budget)."""

    status = 429
    code = "budget_exceeded"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ClientTooSlow(RouterError):
    """A streaming client read so slowly that it fell more than ``server.stream_buffer_bytes``
    behind the other clients sharing its upstream stream; its stream ends with this error."""

    status = 408
    code = "client_too_slow"


class RateLimited(RouterError):
    """Every backend that could serve is rate-limited; ``retry_after`` is in seconds."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NoBackendAvailable(RouterError):
    """No configured backend could take the request (down, unconfigured, or all failed);
    ``retry_after``: seconds until one may be tried again, when the router knows."""

    status = 503
    code = "no_backend_available"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreUnavailable(RouterError):
    """The router's store (runs, feedback) cannot be read or written: a full disk, a corrupt
    file, an unreachable server. The message names the store and the cause."""

    status = 503
    code = "store_unavailable"


class DeadlineExceeded(RouterError):
    """The router's own deadline for the request ran out."""

    status = 504
    code = "deadline_exceeded"


class OutputTooLarge(RouterError):
    """A workflow op's answer is over ``workflows.max_output_bytes``."""

    status = 502
    code = "output_too_large"


class RunCancelled(RouterError):
    """The workflow run a synchronous or streaming caller waits for was cancelled;
    ``cancelled_by`` is who asked."""

    status = 409
    code = "run_cancelled"

    def __init__(self, message: str, *, cancelled_by: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.cancelled_by = dict(cancelled_by)


class UpstreamError(RouterError):
    """An upstream provider failed. ``upstream_status`` is its HTTP status, if it sent one.

    ``retryable`` says whether another backend may succeed where this one failed.
    """

    status = 502
    code = "upstream_error"
    retryable = True

    def __init__(
        self, message: str, *, upstream_status: int | None = None, backend: str | None = None
    ) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status
        self.backend = backend


class UpstreamTimeout(UpstreamError):
    """The upstream did not connect, answer or continue its stream in time."""

    status = 504
    code = "upstream_timeout"


class UpstreamBusy(UpstreamError):
    """Every connection the router may open to the upstream's host is in use
    (``upstream.max_connections_per_origin``), and none came free in time: the router's own
    limit, not the upstream's fault, so it says nothing of the backend's health. Another
    backend (on another host) may take the request; ``retry_after``: when to come back."""

    status = 503
    code = "upstream_busy"

    def __init__(self, message: str, *, retry_after: float | None = 1.0,
                 backend: str | None = None) -> None:
        super().__init__(message, backend=backend)
        self.retry_after = retry_after


class UpstreamUnreachable(UpstreamError):
    """The upstream refused or dropped the connection."""

    code = "upstream_unreachable"


class UpstreamRejected(UpstreamError):
    """The upstream rejected the request itself (its 400/413/422): another backend would too."""

    status = 400
    code = "upstream_rejected"
    retryable = False


class UpstreamRateLimited(UpstreamError):
    """The upstream answered 429; ``retry_after`` (seconds) is from its ``Retry-After``."""

    status = 429
    code = "upstream_rate_limited"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        upstream_status: int | None = 429,
        backend: str | None = None,
    ) -> None:
        super().__init__(message, upstream_status=upstream_status, backend=backend)
        self.retry_after = retry_after


class ConfigInvalid(RouterError):
    """The configuration is invalid; ``problems`` lists each one with its key path."""

    code = "config_invalid"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))
        self.problems = problems
