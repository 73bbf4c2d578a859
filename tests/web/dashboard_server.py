"""An in-process daemon stand-in for browser tests: the real app on an offline graph, in its own thread, restartable on the same port."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig

from patterd.calls.switchboard import Switchboard
from patterd.clock import iso_ms
from patterd.config import load_config_text
from patterd.graph import build_graph
from patterd.plugins import load_registry
from patterd.store import CallStore
from patterd.web.app import create_app
from tests.web.fake_runtime import CONFIG, FakeRuntime


class DashboardServer:
    """The app for a FakeRuntime with a store under `root`, served by Hypercorn from a background thread.

    `stop()` then `start()` is a daemon restart: same port, same records, a new start time.
    """

    def __init__(self, root: Path, config_text: str = CONFIG) -> None:
        self.root = root
        self.config_text = config_text
        self.port = 0
        self.runtime: FakeRuntime | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        ready = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(self._main(ready))
            except BaseException as exc:  # surfaced by start() below
                failed.append(exc)
                ready.set()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(30)
        if failed:
            raise failed[0]

    async def _main(self, ready: threading.Event) -> None:
        registry = load_registry()
        config = load_config_text(self.config_text, registry)
        runtime = FakeRuntime(config=config, store=CallStore(self.root))
        runtime.store.hydrate()
        graph = await build_graph(config, registry, local_url="http://127.0.0.1:0")
        runtime._switchboard = Switchboard(graph, emit=runtime.emit)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart binds the same port again
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        hconfig = HypercornConfig()
        hconfig.bind = [f"fd://{sock.detach()}"]
        hconfig.accesslog = None
        hconfig.errorlog = None
        hconfig.graceful_timeout = 0.5
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.runtime = runtime
        server = asyncio.create_task(serve(create_app(runtime), hconfig, shutdown_trigger=self._stop.wait))  # type: ignore[arg-type]
        ready.set()
        try:
            await self._stop.wait()
            await runtime.switchboard.end_all("test over")
            runtime.feed.close()
            await asyncio.wait_for(server, 10)
        finally:
            await graph.aclose()
            runtime.store.close()

    def call_soon(self, fn: Callable[[], Any]) -> None:
        """Run `fn` on the server's event loop (e.g. push text into a live call)."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(20)
        self._loop = self._stop = self._thread = None


def write_record(
    root: Path,
    call_id: str,
    *,
    started: datetime,
    transcript: list[dict[str, Any]],
    events: list[dict[str, Any]] | None = None,
    **metadata: Any,
) -> None:
    """A finished call record written straight into the store layout (contracts §4), as another process would."""
    directory = root / "calls" / started.strftime("%Y/%m/%d") / call_id
    directory.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "schema_version": "1.0",
        "call_id": call_id,
        "trace_id": "0" * 32,
        "started_at": iso_ms(started),
        "ended_at": iso_ms(started + timedelta(seconds=30)),
        "duration_ms": 30_000,
        "status": "completed",
        "caller": "+15551234567",
        "callee": "+15550001111",
        "telephony_provider": "local",
        "provider_mode": "pipeline",
        "agent": {"name": "front-desk", "provider": "pipeline"},
        "turns": len(transcript),
        "cost": {"total": 0.0, "stt": 0.0, "tts": 0.0, "llm": 0.0, "telephony": 0.0},
        "latency": {"p50_ms": None, "p95_ms": None, "p99_ms": None},
        "error": None,
        "direction": "inbound",
        **metadata,
    }
    (directory / "metadata.json").write_text(json.dumps(meta), encoding="utf-8")
    lines = [{"schema_version": "1.0", "ts": iso_ms(started), **line} for line in transcript]
    (directory / "transcript.jsonl").write_text(
        "".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8"
    )
    evs = [{"schema_version": "1.0", "ts": iso_ms(started), **e} for e in events or []]
    (directory / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in evs), encoding="utf-8")


def now() -> datetime:
    return datetime.now(UTC)
