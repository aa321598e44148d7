"""A connection's word that its client left, for the requests on it that want to stop then.

The server (``api.http.server``) gives every HTTP request's ASGI scope the
:class:`ClientGone` of its connection under ``scope["extensions"][CLIENT_GONE]`` and calls
:meth:`ClientGone.left` once its reading side has ended (the client closed or reset the
connection). A request that watches a cancel scope there has it cancelled at that moment,
with no task of its own waiting for ``http.disconnect`` (the ASGI way, which the chat front
still takes under a server that does not offer this).
"""

from __future__ import annotations

import trio

__all__ = ["CLIENT_GONE", "ClientGone"]

CLIENT_GONE = "llm_router.client_gone"


class ClientGone:
    """The cancel scopes to cancel when one connection's client leaves."""

    __slots__ = ("_scopes", "gone")

    def __init__(self) -> None:
        self._scopes: set[trio.CancelScope] = set()
        self.gone = False

    def watch(self, scope: trio.CancelScope) -> None:
        """Cancel ``scope`` when the client leaves (at once if it has left)."""
        if self.gone:
            scope.cancel()
        else:
            self._scopes.add(scope)

    def unwatch(self, scope: trio.CancelScope) -> None:
        self._scopes.discard(scope)

    def left(self) -> None:
        """The client left: cancel what is watched, and what will be."""
        self.gone = True
        scopes, self._scopes = self._scopes, set()
        for scope in scopes:
            scope.cancel()
