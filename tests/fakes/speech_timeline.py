"""What the streaming vendor fakes share: serving on loopback, scripted turns and faults, audio cut into frames."""

from __future__ import annotations

import collections
from typing import Generic, Self, TypeVar

from aiohttp import web

FRAME_MS = 20  # every fake's VAD and timeline step

F = TypeVar("F")


class LoopbackServer:
    """An aiohttp app on 127.0.0.1 at a free port; a subclass adds its routes in `routes()`."""

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self.port = 0

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


class FaultQueue(Generic[F]):
    """The misbehaviours the next connections get, one each, in order."""

    def __init__(self) -> None:
        self.faults: collections.deque[F] = collections.deque()

    def fail(self, *faults: F) -> None:
        self.faults.extend(faults)

    def next_fault(self) -> F | None:
        return self.faults.popleft() if self.faults else None


class TurnScript:
    """What the next turns of speech say, one string per turn ("" once the script is used up)."""

    def __init__(self) -> None:
        self.script: collections.deque[str] = collections.deque()

    def say(self, *turns: str) -> None:
        self.script.extend(turns)

    def next_turn(self) -> str:
        return self.script.popleft() if self.script else ""


def abort(ws: web.WebSocketResponse) -> None:
    """Abort the TCP connection under a websocket without a close frame (a crashed upstream)."""
    transport = ws._req.transport if ws._req is not None else None
    if transport is not None:
        transport.abort()


class FramedAudio:
    """One stream's audio cut into `frame_bytes` frames, each advancing its own timeline by FRAME_MS in `frame()`."""

    def __init__(self, ws: web.WebSocketResponse, frame_bytes: int) -> None:
        self.ws = ws
        self.frame_bytes = frame_bytes
        self.pending = b""
        self.cursor_ms = 0
        self.dropped = False

    def drop(self) -> None:
        self.dropped = True
        abort(self.ws)

    async def audio(self, data: bytes) -> None:
        self.pending += data
        while len(self.pending) >= self.frame_bytes and not self.dropped:
            frame, self.pending = self.pending[: self.frame_bytes], self.pending[self.frame_bytes :]
            await self.frame(frame)

    async def frame(self, frame: bytes) -> None:
        raise NotImplementedError
