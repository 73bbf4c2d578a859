"""Serve a Starlette app (or one carrier's routes) with Hypercorn on a loopback socket, for tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from patterd.providers.kinds import CallRouter, Carrier


@contextlib.asynccontextmanager
async def serve_app(app: Starlette) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 (a socket bound first, so no port races); yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # Hypercorn owns and closes the listening socket
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1
    stop = asyncio.Event()
    server = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)


def carrier_app(carrier: Carrier, router: CallRouter, webhook_path: str, media_path: str) -> Starlette:
    """The daemon's two routes for one carrier (webhooks and media), delegating to the provider."""

    async def webhook(request: Request) -> Response:
        return await carrier.handle_webhook(request, request.path_params["hook"], router)

    async def media(websocket: WebSocket) -> None:
        await carrier.handle_media(websocket, websocket.path_params["call_id"], router)

    return Starlette(
        routes=[Route(webhook_path, webhook, methods=["POST"]), WebSocketRoute(media_path, media)]
    )
