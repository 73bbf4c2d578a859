"""The HTTP server under every carrier REST fake: aiohttp on 127.0.0.1, an ephemeral port, every path to one handler."""

from __future__ import annotations

import asyncio
from typing import Self

from aiohttp import web


class LoopbackRest:
    """Serves `_handle` for every method and path on 127.0.0.1:<port> between `start()` and `close()`."""

    def __init__(self) -> None:
        self._changed = asyncio.Condition()  # notified when requests or calls change (the fakes' waits)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        """What patterd's `carrier.base_url` should be."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _handle(self, request: web.Request) -> web.Response:
        raise NotImplementedError
