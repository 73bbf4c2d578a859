"""The carriers' webhook and media websocket routes, mounted from their specs' CarrierFacts (contracts §3)."""

from __future__ import annotations

import math
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from patterd.plugins.registry import Registry
from patterd.providers.carrier_spec import CarrierFacts
from patterd.providers.kinds import Carrier
from patterd.web.auth import check_access, csrf_refused
from patterd.web.errors import error_response
from patterd.web.runtime import Runtime
from patterd.web.throttle import FailureThrottle


def _carrier(runtime: Runtime, name: str, call_id: str | None = None) -> Carrier | None:
    """The carrier that owns a call (its graph may be an older one, draining), else the current one."""
    return runtime.switchboard.carrier_for(name, call_id)


def _cross_origin(websocket: WebSocket) -> bool:
    """A browser page from another site opening a dashboard-access socket (browsers always send Origin)."""
    origin = websocket.headers.get("origin")
    if origin is None:
        return False
    return urlsplit(origin).netloc != websocket.headers.get("host", "")


def carrier_routes(
    runtime: Runtime, registry: Registry, throttle: FailureThrottle | None = None
) -> list[BaseRoute]:
    """Every registered carrier's webhook route and media websocket route (contracts §3)."""
    guesses = (
        FailureThrottle() if throttle is None else throttle
    )  # wrong tokens on a dashboard-access carrier count like the dashboard's

    def webhook(name: str, facts: CarrierFacts) -> Route:
        dashboard = facts.access == "dashboard"

        async def handle(request: Request) -> Response:
            if dashboard:  # a browser phone follows the dashboard's rules
                access = check_access(request, runtime.token, loopback=runtime.loopback, throttle=guesses)
                if access.retry_after > 0:
                    wait = str(math.ceil(access.retry_after))
                    response = error_response(
                        429, f"too many wrong tokens from this address; retry in {wait} s"
                    )
                    response.headers["Retry-After"] = wait
                    return response
                if not access.ok:
                    return error_response(401, "a token is required")
                if csrf_refused(request, request.method):
                    return error_response(403, "a browser POST needs the header X-Patterd-CSRF: 1")
            carrier = _carrier(runtime, name, request.query_params.get("call_id"))
            if carrier is None:
                return error_response(404, f"carrier {name!r} is not configured")
            return await carrier.handle_webhook(request, request.path_params["hook"], runtime.switchboard)

        return Route(facts.webhook_route(name), handle, methods=["POST"], name=f"{name}_webhook")

    def media(name: str, facts: CarrierFacts) -> WebSocketRoute:
        dashboard = facts.access == "dashboard"

        async def handle(websocket: WebSocket) -> None:
            call_id = websocket.path_params["call_id"]
            if dashboard and (
                not check_access(websocket, runtime.token, loopback=runtime.loopback, throttle=guesses).ok
                or _cross_origin(websocket)
            ):
                runtime.switchboard.count_rejection(name, "token")
                await websocket.close(code=1008)
                return
            carrier = _carrier(runtime, name, call_id)
            if carrier is None:
                runtime.switchboard.count_rejection(name, "not_configured")
                await websocket.close(code=1008)
                return
            await carrier.handle_media(websocket, call_id, runtime.switchboard)

        return WebSocketRoute(facts.media_path, handle, name=f"{name}_media")

    routes: list[BaseRoute] = []
    for loaded in registry.of_kind("carrier"):  # only the carriers' modules get imported
        spec = loaded.spec
        if spec.carrier is None:
            continue  # a carrier without facts cannot be reached over HTTP
        routes.append(webhook(spec.name, spec.carrier))
        if spec.carrier.media_path:
            routes.append(media(spec.name, spec.carrier))
    return routes
