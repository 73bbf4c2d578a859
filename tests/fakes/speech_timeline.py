"""What the streaming vendor fakes share: serving on loopback, scripted turns and faults, audio cut into frames."""

from __future__ import annotations

import collections
import ssl
from typing import Generic, Self, TypeVar

from aiohttp import web

FRAME_MS = 20  # every fake's VAD and timeline step

F = TypeVar("F")


class LoopbackServer:
    """An aiohttp app on 127.0.0.1 at a free port; a subclass adds its routes in `routes()`."""

    client_max_size = 1024**2  # aiohttp's default request body limit

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.ssl_context = ssl_context  # serve https/wss instead

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        app = web.Application(client_max_size=self.client_max_size)
        self.routes(app)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def tcp_connections(self) -> int:
        """Client TCP connections open on the server now (idle keep-alive ones included)."""
        server = self._runner.server if self._runner is not None else None
        return len(server.connections) if server is not None else 0


class ControlledServer(LoopbackServer):
    """A LoopbackServer with patterd.testing's one-shot controls; the subclass decides where each one bites."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(ssl_context)
        self._fail: collections.deque[int] = collections.deque()
        self._drop = 0
        self._stall = 0

    def fail_next(self, status: int) -> None:
        """Answer the next request or handshake with `status` and the vendor's error for it."""
        self._fail.append(status)

    def drop_next(self) -> None:
        """Cut the next stream's TCP connection after its first chunk, without a goodbye."""
        self._drop += 1

    def stall_next(self) -> None:
        """Accept the next stream request, then send nothing until the client gives up."""
        self._stall += 1

    def _take_drop(self) -> bool:
        if self._drop:
            self._drop -= 1
            return True
        return False

    def open_connections(self) -> int:
        return self.tcp_connections()


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
