"""A real Runtime for web tests: offline graph, switchboard, store and feed, served by Hypercorn on loopback."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from patterd import __version__
from patterd.calls.switchboard import Switchboard
from patterd.config import Config, load_config_text
from patterd.graph import build_graph
from patterd.metrics import Metrics
from patterd.plugins import load_registry
from patterd.protocols.events import CallEvent
from patterd.store import CallStore
from patterd.web.app import create_app
from patterd.web.feed import EventFeed
from patterd.web.runtime import ReloadResult
from tests.serving import serve_app

CONFIG = """
carrier: {type: local}
agents:
  - name: front-desk
    first_message: Hello from the test desk.
    stt: {type: offline}
    llm:
      type: script
      fallback: Sorry?
      intents:
        - {name: bye, examples: [bye], reply: Goodbye!, tool: {name: end_call}}
    tts: {type: offline}
    tools: [{type: end_call}]
"""


@dataclass
class FakeRuntime:
    """The daemon as the web app sees it, without the process around it."""

    config: Config | None = None
    store: CallStore = field(default_factory=lambda: CallStore(None))
    token: str | None = None
    loopback: bool = True
    version: str = __version__
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    feed: EventFeed = field(default_factory=EventFeed)
    metrics: Metrics = field(default_factory=lambda: Metrics(__version__))
    reloads: list[str] = field(default_factory=list)
    reload_result: ReloadResult = field(default_factory=lambda: ReloadResult(True, 1, message="reloaded"))
    _switchboard: Switchboard | None = None

    @property
    def switchboard(self) -> Switchboard:
        assert self._switchboard is not None
        return self._switchboard

    @property
    def state(self) -> str:
        return "serving"

    @property
    def config_digest(self) -> str:
        return self.config.digest if self.config else ""

    @property
    def public_host(self) -> str | None:
        return self.config.public_host if self.config else None

    async def reload(self, reason: str) -> ReloadResult:
        self.reloads.append(reason)
        return self.reload_result

    def emit(self, event: CallEvent) -> None:
        self.store.handle(event)
        self.metrics.observe(event)
        self.feed.observe(event)


def make_app(runtime: Any = None) -> Starlette:
    """The app around a runtime (routes only need the object, not a running graph)."""
    return create_app(runtime or FakeRuntime())


@dataclass
class Served:
    """A runtime and its app listening on 127.0.0.1."""

    runtime: FakeRuntime
    base_url: str


@contextlib.asynccontextmanager
async def serve_runtime(
    tmp_path: Path,
    *,
    token: str | None = None,
    loopback: bool = True,
    config_text: str = CONFIG,
    dashboard: bool = True,
) -> AsyncIterator[Served]:
    """Build an offline graph and serve the app on a loopback socket for the test's duration."""
    registry = load_registry()
    config = load_config_text(config_text, registry)
    runtime = FakeRuntime(
        config=config, store=CallStore(tmp_path / "records"), token=token, loopback=loopback
    )
    graph = await build_graph(config, registry, local_url="http://127.0.0.1:0")
    runtime._switchboard = Switchboard(graph, emit=runtime.emit)
    try:
        async with serve_app(create_app(runtime, dashboard=dashboard)) as base_url:
            try:
                yield Served(runtime, base_url)
            finally:  # end calls and live feeds first, so the server stops without waiting on them
                await runtime.switchboard.end_all("test over")
                runtime.feed.close()
    finally:
        await graph.aclose()
        runtime.store.close()
