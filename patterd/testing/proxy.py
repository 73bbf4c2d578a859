"""A loopback TCP relay in front of a fake server that counts and can cut its client connections.

A fake that cannot count its sockets (or cut them mid-stream) gets both by being reached through
this relay: point the provider's base_url at `proxy.port` instead of the fake's port.
"""

from __future__ import annotations

import asyncio
import contextlib


class CountingProxy:
    """`async with CountingProxy(fake_port) as proxy:` relays 127.0.0.1:proxy.port to the fake, byte for byte."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.accepted = 0  # connections ever opened through the relay
        self._open: set[asyncio.StreamWriter] = set()  # client-side writers still open
        self._pumps: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    def open_connections(self) -> int:
        """Client connections open through the relay now."""
        return len(self._open)

    def drop_all(self) -> None:
        """Cut every open connection without a goodbye (RST where the OS allows)."""
        for writer in list(self._open):
            writer.transport.abort()

    async def __aenter__(self) -> CountingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.drop_all()
        for task in list(self._pumps):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._pumps, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._open.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._open.discard(writer)
            writer.transport.abort()
            return
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        self._pumps.update(pumps)
        try:
            # Either side closing ends the pair: a client that hangs up frees the fake's socket too.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._pumps.difference_update(pumps)
            for w in (writer, up_writer):
                w.transport.abort() if w.transport.is_closing() else w.close()
            self._open.discard(writer)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
