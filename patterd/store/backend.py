"""What the daemon and the web/ops API need from a record store, whichever backend keeps the records."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from patterd.protocols.events import CallEvent
from patterd.store.hydrate import HydrateReport


class RecordStore(Protocol):
    """A call-record store: files under a directory (`CallStore`) or PostgreSQL (`PostgresStore`).

    `handle` runs on the event loop and never blocks or raises; the queries are thread-safe;
    `hydrate`, `sweep_retention`, `flush` and `close` block and belong in a thread.
    """

    def handle(self, event: CallEvent) -> None: ...

    async def wait_durable(self, call_id: str, timeout: float = ...) -> bool: ...

    def hydrate(self) -> HydrateReport: ...

    def stop_hydrate(self) -> None: ...

    def history(self) -> dict[str, Any]: ...

    def sweep_retention(self, now: datetime | None = None) -> int: ...

    async def run_retention_loop(
        self, interval_secs: float = ..., *, on_sweep: Callable[[int], None] | None = None
    ) -> None: ...

    def flush(self, timeout: float | None = None) -> bool: ...

    def close(self) -> None: ...

    @property
    def write_errors(self) -> int: ...

    def live_calls(self) -> list[dict[str, Any]]: ...

    def list_calls(
        self,
        *,
        status: str | None = None,
        agent: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]: ...

    def get_call(self, call_id: str) -> dict[str, Any] | None: ...

    def recent_metadata(self, call_id: str) -> dict[str, Any] | None: ...

    def stats(self) -> dict[str, int]: ...
