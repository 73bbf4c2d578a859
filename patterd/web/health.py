"""Probes and metrics: /healthz (alive), /readyz (serving), /health (Patter-compatible), /metrics."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from patterd.metrics import CONTENT_TYPE
from patterd.web.runtime import Runtime


def health_routes(runtime: Runtime) -> list[BaseRoute]:
    """The probe and metrics routes."""

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        state = runtime.state
        return JSONResponse(
            {"status": "ready" if state == "serving" else state},
            status_code=200 if state == "serving" else 503,
        )

    async def health(request: Request) -> Response:
        # Patter's SDK answers {"status": "ok", "mode": ...}; keep its keys and add ours.
        return JSONResponse(
            {
                "status": "ok",
                "mode": runtime.switchboard.graph.config.carrier.type,
                "version": runtime.version,
                "state": runtime.state,
                "active_calls": runtime.switchboard.live_count,
            }
        )

    async def metrics(request: Request) -> Response:
        return Response(runtime.metrics.render(), media_type=CONTENT_TYPE)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
