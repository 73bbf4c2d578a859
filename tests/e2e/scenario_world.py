"""What an end-to-end call scenario needs beside the carrier: the webhook tool, the config, the ops API, the records."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from tests.fakes.openai_realtime import FakeRealtimeServer

if TYPE_CHECKING:
    from tests.e2e.scenarios import Carrier

PUBLIC_HOST = "gw.example.com"
NUMBER = "+15550001234"
CALLER = "+15551230001"
VOICEMAIL_TO = "+15557770000"
ENGINE_KEY = "sk-test"


@dataclass
class ToolServer:
    """A tiny HTTP endpoint a `webhook` tool POSTs to; records the JSON it got."""

    answer: dict[str, Any] = field(default_factory=lambda: {"status": "shipped", "eta": "tomorrow"})
    received: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/lookup", self._lookup)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/lookup"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _lookup(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        return web.json_response(self.answer)


def daemon_config(carrier: Carrier, engine_url: str, tool_url: str, records: Path) -> str:
    """A patter.yaml for the carrier under test with the fake Realtime engine."""
    return (
        carrier.config()
        + f"""phone_number: "{NUMBER}"
webhook_url: {PUBLIC_HOST}
persist: {records}
logging: {{level: info}}
server: {{drain_timeout_secs: 5}}
agents:
  - name: receptionist
    engine:
      type: openai_realtime
      base_url: {engine_url}
      api_key: {ENGINE_KEY}
      voice: nova
      max_retries: 1
      retry_backoff_secs: 0.05
      connect_timeout_secs: 2
    system_prompt: You are a friendly receptionist for {{company}}.
    first_message: Thanks for calling {{company}}!
    variables: {{company: Acme}}
    tools:
      - {{type: end_call}}
      - type: webhook
        name: lookup_order
        description: Look up an order by number.
        parameters: {{type: object, properties: {{order_number: {{type: string}}}}, required: [order_number]}}
        url: {tool_url}
        timeout_secs: 3
"""
    )


class Api:
    """The daemon's ops API over aiohttp (the fakes live on this event loop, so no blocking calls)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Api:
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        assert self._session is not None
        async with self._session.request(method, self.base_url + path, json=body) as resp:
            text = await resp.text()
            if "json" in resp.headers.get("content-type", ""):
                return resp.status, json.loads(text)
            return resp.status, text

    async def metric(self, name: str, match: Callable[[str], bool] = lambda _: True) -> float:
        """The sum of a Prometheus metric's samples whose line satisfies `match`."""
        _, text = await self.request("GET", "/metrics")
        total = 0.0
        for line in str(text).splitlines():
            if line.startswith(name) and (line[len(name)] in " {") and match(line):
                total += float(line.rsplit(" ", 1)[1])
        return total

    async def wait_call(
        self, call_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15.0
    ) -> dict[str, Any]:
        """Poll GET /api/v1/calls/{id} until `predicate(body)` holds (records are written off the loop)."""
        deadline = time.monotonic() + timeout
        body: Any = None
        while time.monotonic() < deadline:
            status, body = await self.request("GET", f"/api/v1/calls/{call_id}")
            if status == 200 and predicate(body):
                return dict(body)
            await asyncio.sleep(0.05)  # polling an HTTP-observable state of another process
        raise AssertionError(f"call {call_id} did not reach the expected state; last: {body!r:.2000}")


def record_dir(records: Path, call_id: str) -> Path:
    """The on-disk directory of a call record (contracts §4 layout)."""
    found = list(records.glob(f"calls/*/*/*/{call_id}"))
    assert len(found) == 1, f"expected one record directory for {call_id}, found {found}"
    return found[0]


async def wait_record(records: Path, call_id: str, status: str, timeout: float = 10.0) -> Path:
    """The record directory once its metadata.json says `status` (the store writes off the event loop)."""
    deadline = time.monotonic() + timeout
    meta: Any = None
    while time.monotonic() < deadline:
        found = list(records.glob(f"calls/*/*/*/{call_id}/metadata.json"))
        if found:
            with contextlib.suppress(ValueError, OSError):
                meta = json.loads(found[0].read_text())
                if meta.get("status") == status:
                    return found[0].parent
        await asyncio.sleep(0.05)  # polling files another process writes
    raise AssertionError(f"record of {call_id} never reached status {status!r}; last metadata {meta!r:.1000}")


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Until `predicate()` holds, or fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)  # the fakes change on their own sockets


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@asynccontextmanager
async def engine_server(**kwargs: Any) -> AsyncIterator[FakeRealtimeServer]:
    async with FakeRealtimeServer(api_key=ENGINE_KEY, **kwargs) as fake:
        yield fake
