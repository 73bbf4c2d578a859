"""Assembles the one Starlette app: carrier routes, probes and metrics, ops API, dashboard."""

from __future__ import annotations

import math

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from patterd.plugins.registry import Registry, load_registry
from patterd.web.auth import check_access, csrf_refused
from patterd.web.carrier_routes import carrier_routes
from patterd.web.dashboard import dashboard_routes
from patterd.web.errors import error_response, http_exception_handler
from patterd.web.fleet_routes import fleet_routes
from patterd.web.health import health_routes
from patterd.web.limits import PROBES, EdgeLimits, EdgeSettings
from patterd.web.ops_api import ops_routes
from patterd.web.recording_route import recording_routes
from patterd.web.runtime import Runtime
from patterd.web.throttle import FailureThrottle
from patterd.web.workers_view import PeerView, handover_routes

# Paths with their own authentication (carrier signatures) or none by design (the login form itself).
# `/api/v1/fleet/` is signed by its sender (web/fleet_routes.py), so it needs no bearer token.
OPEN_PREFIXES = ("/webhooks/", "/ws/", "/login", "/static/", "/api/v1/fleet/")


class TokenMiddleware:
    """Applies the token rule to the ops API, metrics and dashboard (probes are open to everyone)."""

    def __init__(
        self, app: ASGIApp, runtime: Runtime, throttle: FailureThrottle, dashboard: bool = True
    ) -> None:
        self.app = app
        self.runtime = runtime
        self.throttle = throttle
        self.dashboard = dashboard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(OPEN_PREFIXES) or path in PROBES:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        access = check_access(
            request, self.runtime.token, loopback=self.runtime.loopback, throttle=self.throttle
        )
        if access.retry_after > 0:
            wait = math.ceil(access.retry_after)
            response = error_response(429, f"too many wrong tokens from this address; retry in {wait} s")
            response.headers["Retry-After"] = str(wait)
            await response(scope, receive, send)
            return
        if access.ok:
            if path.startswith("/api/") and csrf_refused(request, scope["method"]):
                await error_response(403, "a browser POST needs the header X-Patterd-CSRF: 1")(
                    scope, receive, send
                )
                return
            await self.app(scope, receive, send)
            return
        if (
            self.dashboard
            and scope["method"] == "GET"
            and (path in ("/", "/phone") or path.startswith("/calls"))
        ):
            await RedirectResponse(f"/login?next={path}", status_code=303)(scope, receive, send)
            return
        response = error_response(401, "a valid token is required: Authorization: Bearer <token>")
        response.headers["WWW-Authenticate"] = 'Bearer realm="patterd"'
        await response(scope, receive, send)


def create_app(
    runtime: Runtime,
    *,
    dashboard: bool = True,
    edge: EdgeSettings | None = None,
    registry: Registry | None = None,
    peers: PeerView | None = None,
) -> Starlette:
    """The ASGI app for a running daemon; `dashboard=False` (`server.dashboard: false`) leaves out its pages.

    Carrier routes come from the carriers in `registry` (the installed plugins when None).
    """
    registry = load_registry() if registry is None else registry
    throttle = FailureThrottle()  # one per app: the token rule, the login form and the browser phone share it
    routes = [
        *carrier_routes(runtime, registry, throttle),
        *health_routes(runtime),
        *ops_routes(runtime, peers),
        *handover_routes(runtime, peers),
        *recording_routes(runtime),
        *fleet_routes(runtime),
        *(dashboard_routes(runtime, throttle, registry) if dashboard else ()),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(EdgeLimits, settings=edge),  # outermost: limits apply before anything reads a body
            Middleware(TokenMiddleware, runtime=runtime, throttle=throttle, dashboard=dashboard),
        ],
        exception_handlers={HTTPException: http_exception_handler},
    )
    app.state.throttle = throttle  # carrier routes mounted after ready share it (daemon_wiring)
    return app
