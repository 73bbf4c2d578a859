"""MediaSocket over a real loopback websocket: frames through, oversized frames dropped, silence detected, logs bounded."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
import structlog
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from patterd.errors import ProviderConnectionError
from patterd.protocols.frames import MAX_FRAME_CHARS
from patterd.providers import media_socket
from patterd.providers.media_socket import MediaSocket
from tests.serving import serve_app


@dataclass
class Counter:
    """The one CallRouter method a MediaSocket uses."""

    dropped: list[tuple[str, str]] = field(default_factory=list)

    def count_bad_frame(self, carrier: str, reason: str) -> None:
        self.dropped.append((carrier, reason))


@dataclass
class Server:
    """A websocket endpoint that reads through a MediaSocket and reports what it got and how it ended."""

    idle_secs: float
    ended: asyncio.Future[str]
    router: Counter = field(default_factory=Counter)
    frames: asyncio.Queue[str | bytes] = field(default_factory=asyncio.Queue)

    async def handle(self, websocket: WebSocket) -> None:
        await websocket.accept()
        sock = MediaSocket(websocket, "twilio", self.router, self.idle_secs)  # type: ignore[arg-type]
        try:
            while (frame := await sock.receive()) is not None:
                await self.frames.put(frame)
                if frame == "drop me":
                    sock.drop("bad_shape", "a test drop")
            self.ended.set_result(f"closed: {sock.end_reason}")
        except ProviderConnectionError as exc:
            self.ended.set_result(f"idle: {exc}")
            await websocket.close()


@contextlib.asynccontextmanager
async def connected(idle_secs: float) -> AsyncIterator[tuple[Server, aiohttp.ClientWebSocketResponse]]:
    server = Server(idle_secs, asyncio.get_running_loop().create_future())
    app = Starlette(routes=[WebSocketRoute("/ws", server.handle)])
    async with serve_app(app) as base, aiohttp.ClientSession() as http:
        ws = await http.ws_connect(base.replace("http", "ws") + "/ws")
        yield server, ws
        await ws.close()


async def test_frames_pass_and_oversized_ones_are_dropped_without_closing() -> None:
    async with connected(idle_secs=0) as (server, ws):
        await ws.send_str("hello")
        await ws.send_bytes(b"\x00\x01")
        await ws.send_str("x" * (MAX_FRAME_CHARS + 1))
        await ws.send_str("after")
        got = [await asyncio.wait_for(server.frames.get(), 5) for _ in range(3)]
        assert got == ["hello", b"\x00\x01", "after"]
        assert server.router.dropped == [("twilio", "too_large")]
        await ws.close()
        assert await asyncio.wait_for(server.ended, 5) == "closed: disconnected"


async def test_a_silent_peer_is_detected_and_a_chatty_one_is_not() -> None:
    async with connected(idle_secs=1.0) as (server, ws):
        loop = asyncio.get_running_loop()
        for _ in range(8):  # 0.8 s of frames every 0.1 s: never 1 s without one
            await ws.send_str("frame")
            last = loop.time()
            await asyncio.sleep(0.1)  # pacing a live stream
        assert not server.ended.done()
        outcome = await asyncio.wait_for(server.ended, 5)
        assert outcome.startswith("idle: no media frame from twilio for 1 s"), outcome
        assert loop.time() - last >= 0.99
        assert server.frames.qsize() == 8


async def test_dropped_frames_are_logged_at_a_bounded_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media_socket, "LOG_EVERY_SECS", 3600.0)
    with structlog.testing.capture_logs() as logs:
        async with connected(idle_secs=0) as (server, ws):
            for _ in range(200):
                await ws.send_str("drop me")
            await ws.send_str("last")
            for _ in range(201):
                await asyncio.wait_for(server.frames.get(), 5)
    dropped = [entry for entry in logs if entry["event"] == "media frame dropped"]
    assert len(server.router.dropped) == 200
    assert len(dropped) == media_socket.LOG_FIRST  # the rest are counted, not logged, within the interval
    assert all("Traceback" not in str(entry) for entry in dropped)
