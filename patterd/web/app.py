"""Assembles the one Starlette app: carrier routes, probes and metrics, ops API, dashboard."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from patterd.web.auth import csrf_refused, is_authorized
from patterd.web.carrier_routes import carrier_routes
from patterd.web.dashboard import dashboard_routes
from patterd.web.errors import error_response, http_exception_handler
from patterd.web.health import health_routes
from patterd.web.ops_api import ops_routes
from patterd.web.runtime import Runtime

# Paths with their own authentication (carrier signatures) or none by design (the login form itself).
OPEN_PREFIXES = ("/webhooks/", "/ws/", "/login", "/static/")


class TokenMiddleware:
    """Applies the token rule to the ops API, probes, metrics and dashboard."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        path = scope["path"]
        if is_authorized(request, self.runtime.token, loopback=self.runtime.loopback):
            if path.startswith("/api/") and csrf_refused(request, scope["method"]):
                await error_response(403, "a browser POST needs the header X-Patterd-CSRF: 1")(
                    scope, receive, send
                )
                return
            await self.app(scope, receive, send)
            return
        if scope["method"] == "GET" and (path in ("/", "/phone") or path.startswith("/calls")):
            await RedirectResponse(f"/login?next={path}", status_code=303)(scope, receive, send)
            return
        response = error_response(401, "a valid token is required: Authorization: Bearer <token>")
        response.headers["WWW-Authenticate"] = 'Bearer realm="patterd"'
        await response(scope, receive, send)


def create_app(runtime: Runtime) -> Starlette:
    """The ASGI app for a running daemon."""
    routes = [
        *carrier_routes(runtime),
        *health_routes(runtime),
        *ops_routes(runtime),
        *dashboard_routes(runtime),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(TokenMiddleware, runtime=runtime)],
        exception_handlers={HTTPException: http_exception_handler},
    )
