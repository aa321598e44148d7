"""How a command of ``llm-router workflow`` ends when it cannot do what was asked: one line
on standard error, ``llm-router: ...``, and an exit status a script can act on."""

from __future__ import annotations

__all__ = ["EXIT_CANCELLED", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_INVALID", "CommandFailed"]

EXIT_FAILED = 1  # the run failed, or the router could not be reached or answered a 5xx
EXIT_INVALID = 2  # the request was wrong: a bad workflow, option, or a 4xx from the router
EXIT_CANCELLED = 3  # the run was cancelled (distinct from failed, for scripts that wait)
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


class CommandFailed(Exception):
    """Ends a command with ``message`` on standard error and exit status ``code``."""

    def __init__(self, message: str, code: int = EXIT_INVALID) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
