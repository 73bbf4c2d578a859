"""Helpers for tests of replicas sharing Redis: configs, softphone calls over real sockets, waits."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from patterd.protocols.audio import silence_ulaw

SECRET = "cluster-secret-for-the-tests-0123456789"


def replica_config(
    root: Path, name: str, redis_url: str, prefix: str, *, timeout_secs: float = 5.0, persist: str = ""
) -> Path:
    """A softphone daemon that is replica `name` of a cluster on `redis_url` under `prefix`.

    Records go to its own directory, or to `persist` (a PostgreSQL URL every replica shares).
    """
    path = root / f"{name}.yaml"
    path.write_text(
        f"""
carrier: {{type: local}}
persist: {persist or root / name}
cluster:
  secret: {SECRET}
  redis: {redis_url}
  replica_id: {name}
  key_prefix: "{prefix}"
  heartbeat_secs: 0.2
  replica_timeout_secs: {timeout_secs}
agents:
  - name: desk
    stt: {{type: offline}}
    llm: {{type: script}}
    tts: {{type: offline}}
"""
    )
    return path


async def answer(session: aiohttp.ClientSession, base_url: str) -> dict[str, Any]:
    """The softphone webhook on one replica: {call_id, agent, media_path (with its call token)}."""
    async with session.post(base_url + "/webhooks/local/voice", json={}) as resp:
        body: dict[str, Any] = await resp.json()
        assert resp.status == 201, body
        return body


async def connect_media(
    session: aiohttp.ClientSession, base_url: str, media_path: str
) -> aiohttp.ClientWebSocketResponse:
    """The call's media websocket on (maybe another) replica, started, with a frame of silence."""
    ws = await session.ws_connect(base_url.replace("http", "ws") + media_path)
    await ws.send_str(json.dumps({"event": "start"}))
    payload = base64.b64encode(silence_ulaw(20)).decode()
    await ws.send_str(json.dumps({"event": "media", "media": {"payload": payload}}))
    return ws


async def refused(session: aiohttp.ClientSession, base_url: str, media_path: str) -> bool:
    """True when a replica refuses a media websocket: closed (1008) before the handshake completes (403)."""
    try:
        ws = await session.ws_connect(base_url.replace("http", "ws") + media_path)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status == 403
    async with asyncio.timeout(10):
        async for _ in ws:
            pass
    return ws.close_code == 1008


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as resp:
        return await resp.json()


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 15.0) -> None:
    """Wait until `check()` holds (polling a real server), else fail naming `what`."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def metric(session: aiohttp.ClientSession, base_url: str, line_start: str) -> float:
    """The value of the /metrics sample whose line starts with `line_start` (0 when absent)."""
    async with session.get(base_url + "/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@contextlib.asynccontextmanager
async def redis_keys_cleaned(redis_url: str, prefix: str) -> AsyncIterator[None]:
    """Delete every key under `prefix` afterwards."""
    import redis.asyncio

    try:
        yield
    finally:
        client = redis.asyncio.Redis.from_url(redis_url)
        async for key in client.scan_iter(match=prefix + "*"):
            await client.delete(key)
        await client.aclose()


class CuttableProxy:
    """A TCP proxy in front of Redis that a test can cut (every connection dropped, no new ones) and restore."""

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self._path = parts.path
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}{self._path}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))
