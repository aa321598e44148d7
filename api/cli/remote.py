"""A running router as the command line talks to it: one ``httpx`` client with the caller's
key, and every way a call can fail turned into one line.

This is the command line's one seam for ``httpx``: a transport error (refused, reset, a
stream cut half-way) becomes :class:`RouterUnavailable`, as does a 5xx answer; a 4xx answer
becomes a :class:`CommandFailed` with the router's own message. Imported only by the
commands that call a router (``httpx`` takes a while to import).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from .failure import EXIT_FAILED, EXIT_INVALID, CommandFailed
from .progress import Event, read_events

__all__ = ["Router", "RouterUnavailable", "error_message", "json_of", "open_router"]

_CALL_TIMEOUT = httpx.Timeout(30.0)  # a cancel waits up to 10 s for the run to stop
_STREAM_TIMEOUT = httpx.Timeout(30.0, read=None)  # an op may take minutes between events


class RouterUnavailable(CommandFailed):
    """The router could not be reached, dropped the connection or answered a 5xx: a later
    try may succeed (a watcher reconnects on it)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_FAILED)


@contextmanager
def open_router(server: str, api_key: str | None) -> Iterator[Router]:
    """The router at ``server`` (its base URL), called with ``api_key`` as a bearer token."""
    try:
        url = httpx.URL(server)
    except httpx.InvalidURL as exc:
        raise CommandFailed(f"--server {server!r} is not a URL: {exc}", EXIT_INVALID) from None
    if url.scheme not in ("http", "https") or not url.host:
        raise CommandFailed(f"--server must be the router's http(s) URL, such as "
                            f"http://127.0.0.1:8080, got {server!r}", EXIT_INVALID)
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(headers=headers, timeout=_CALL_TIMEOUT) as http:
        yield Router(http, server.rstrip("/"))


class Router:
    """Calls to one router, through one connection pool; see :func:`open_router`."""

    def __init__(self, http: httpx.Client, server: str) -> None:
        self.http = http
        self.server = server

    def call(self, method: str, path: str, *, body: Any = None,
             params: dict[str, Any] | None = None,
             headers: dict[str, str] | None = None) -> httpx.Response:
        """One request, answered with a 2xx.

        Raises:
            RouterUnavailable: unreachable, or a 5xx.
            CommandFailed: a 4xx, with the router's message (exit 2).
        """
        with self._translated("cannot reach"):
            response = self.http.request(method, self.server + path, json=body,
                                         params=params, headers=headers)
        _check(response)
        return response

    @contextmanager
    def events(self, method: str, path: str, *, body: Any = None,
               headers: dict[str, str] | None = None, after: int = 0
               ) -> Iterator[Iterator[Event]]:
        """An event stream, connected and answered 200 on entering; the events as they
        arrive. ``after`` resumes after that event id (``Last-Event-ID``).

        Raises:
            RouterUnavailable: unreachable, a 5xx, or the stream broke off.
            CommandFailed: a 4xx, with the router's message.
        """
        headers = dict(headers or {})
        if after:
            headers["last-event-id"] = str(after)
        request = self.http.build_request(method, self.server + path, json=body,
                                          headers=headers, timeout=_STREAM_TIMEOUT)
        with self._translated("cannot reach"):
            response = self.http.send(request, stream=True)
        try:
            if not response.is_success:
                with self._translated("cannot reach"):
                    response.read()
                _check(response)
            with self._translated("lost the connection to"):
                yield read_events(response.iter_lines())
        finally:
            response.close()

    @contextmanager
    def _translated(self, failed_to: str) -> Iterator[None]:
        try:
            yield
        except httpx.TransportError as exc:
            raise RouterUnavailable(f"{failed_to} the router at {self.server}: "
                                    f"{exc or type(exc).__name__}") from None


def _check(response: httpx.Response) -> None:
    if response.is_success:
        return
    message = error_message(response.content, response.status_code)
    if response.status_code >= 500:
        raise RouterUnavailable(message)
    raise CommandFailed(message, EXIT_INVALID)


def json_of(response: httpx.Response) -> Any:
    """A 2xx answer's JSON body; a body that is not JSON (``--server`` names something else)
    is one line, not a traceback."""
    try:
        return json.loads(response.content)
    except ValueError:
        start = " ".join(response.text.split())[:80]
        raise RouterUnavailable(f"{response.request.url} answered {response.status_code} with "
                                f"something other than JSON ({start!r}): is it an llm-router?"
                                ) from None


def error_message(body: bytes, status: int) -> str:
    """The message of an OpenAI error object, else the start of the body on one line.

    >>> error_message(b'{"error": {"message": "no workflow run run_1", "code": "x"}}', 404)
    'no workflow run run_1'
    >>> error_message(b"<html>\\n  <h1>Bad Gateway</h1>\\n</html>", 502)
    'the router answered 502: <html> <h1>Bad Gateway</h1> </html>'
    """
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        text = " ".join(body.decode(errors="replace").split())
        return f"the router answered {status}" + (f": {text[:200]}" if text else "")
