"""The dashboard: the page at ``/ui`` with its assets (package data in ``api/http/ui``), and
the small JSON endpoints it reads besides ``/stats``, ``/v1/backends`` and ``/health``.

The page and its assets carry no data, so they load without a key; the page asks for the
admin key (or an API key when no admin key is set) once and sends it with every data call.
The assets are read once, at start-up, and served with a Content-Security-Policy that lets
the page load nothing from another host (it works offline).

Data endpoints (docs/dashboard.md):

* ``GET /stats/recent``: the last chat requests (routing facts, never text), and the rate
  and latency percentiles over the last minute, per second for the sparklines; of every
  process sharing the Redis when there is one (``engine.runtime.shared_recent``); behind
  the same guard as ``/stats``.
* ``GET /stats/runs`` and ``GET /stats/runs/{id}``: every tenant's workflow runs, each with
  its DAG's edges and its ops' states, models and costs, without prompts or answers; behind
  the admin key when one is set (they cross tenants), else the guard of ``/stats``.
* ``GET /stats/events``: all of the above as server-sent events, pushed when it changes
  (``api.http.dashboard_events``); behind the guard of ``/stats``, with the runs for the
  callers the runs endpoints admit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

import orjson
from quart import Response, request
from quart_trio import QuartTrio

from engine.errors import NotFound, RouterError, echo
from engine.runtime import Gateway

from .dashboard_events import DashboardFeed, without_text
from .params import EVERY_LIMIT, int_arg, run_status
from .relay import SSE_HEADERS

__all__ = ["add_dashboard"]

_Handler = Callable[..., Awaitable[Response]]
_Guard = Callable[[_Handler], _Handler]

_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
# Everything from this router, nothing inline, nothing from another host.
_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


def _assets() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("api.http") / "ui"
    found = {}
    for item in folder.iterdir():
        suffix = "." + item.name.rpartition(".")[2]
        if item.is_file() and suffix in _TYPES:
            found[item.name] = (item.read_bytes(), _TYPES[suffix])
    return found


def _asset_response(asset: tuple[bytes, str]) -> Response:
    body, content_type = asset
    return Response(body, content_type=content_type, headers=_HEADERS)


def add_dashboard(app: QuartTrio, gateway: Callable[[], Gateway], *, guarded: _Guard,
                  cross_tenant: _Guard, needs_key: bool) -> None:
    """Serve the page and its data on ``app``: ``guarded`` admits what ``/stats`` admits,
    ``cross_tenant`` what may see every tenant's runs. ``needs_key``: the router admits no
    one without a key, so the page asks for one before its first call (a router that takes
    none is shown at once)."""
    assets = _assets()
    html, content_type = assets["index.html"]
    flag = b'<body data-needs-key="%s">' % (b"true" if needs_key else b"false")
    page = (html.replace(b"<body>", flag, 1), content_type)

    @app.get("/ui")
    @app.get("/ui/")
    async def dashboard() -> Response:
        return _asset_response(page)

    @app.get("/ui/<name>")
    async def dashboard_asset(name: str) -> Response:
        asset = assets.get(name)
        if asset is None:
            raise NotFound(f"the dashboard has no file {echo(name)}")
        return _asset_response(asset)

    @app.get("/stats/recent")
    @guarded
    async def recent() -> Response:
        return _json(await gateway().recent_snapshot())

    @app.get("/stats/runs")
    @cross_tenant
    async def all_runs() -> Response:
        status = run_status(request.args.get("status"))
        limit = int_arg(request.args.get("limit"), "limit", EVERY_LIMIT)
        found = await gateway().workflow_runs().list(tenant=None, status=status, limit=limit)
        return _json({"object": "list", "data": [r.summary() for r in found]})

    @app.get("/stats/runs/<run_id>")
    @cross_tenant
    async def one_run(run_id: str) -> Response:
        record = await gateway().workflow_runs().get(run_id, tenant=None)
        return _json(without_text(record.public()))

    feed = DashboardFeed(gateway)
    app.extensions["dashboard_feed"] = feed  # the tests count its open streams
    runs_check = cross_tenant(_nothing)

    async def runs_refusal() -> str | None:
        try:
            await runs_check()
        except RouterError as exc:
            return exc.message
        return None

    @app.get("/stats/events")
    @guarded
    async def events() -> Response:
        follow = request.args.get("run") or None
        body = feed.events(follow=follow, refusal=await runs_refusal())
        return Response(body, headers=SSE_HEADERS)



async def _nothing() -> Response:
    return Response(b"")


def _json(data: object) -> Response:
    return Response(orjson.dumps(data), content_type="application/json")
