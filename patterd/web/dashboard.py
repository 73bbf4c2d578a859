"""The web dashboard: live calls, history, call pages, login form (templates + static, no build step)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from patterd.web.runtime import Runtime


def dashboard_routes(runtime: Runtime) -> list[BaseRoute]:
    """Dashboard pages."""

    async def index(request: Request) -> Response:
        return HTMLResponse(f"<!doctype html><title>patterd</title><h1>patterd {runtime.version}</h1>")

    return [Route("/", index, methods=["GET"])]
