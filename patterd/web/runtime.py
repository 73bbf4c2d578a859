"""What the web layer needs from the running daemon (implemented by patterd.daemon.Daemon)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from patterd.calls.switchboard import Switchboard
    from patterd.metrics import Metrics
    from patterd.store import RecordStore
    from patterd.web.feed import EventFeed


@dataclass(frozen=True)
class ReloadResult:
    """How a reload went: applied, or refused with every config issue."""

    ok: bool
    generation: int
    issues: list[str] = field(default_factory=list)
    message: str = ""


class Runtime(Protocol):
    """The daemon as the web app sees it."""

    version: str
    started_at: datetime
    metrics: Metrics
    store: RecordStore
    feed: EventFeed
    token: str | None  # the dashboard/API token, when configured
    loopback: bool  # bound to loopback only

    @property
    def switchboard(self) -> Switchboard:
        """The call router of the running config."""
        ...

    @property
    def state(self) -> str:
        """Lifecycle state name: starting, serving, draining, stopped."""
        ...

    @property
    def config_digest(self) -> str:
        """sha256 of the running config text."""
        ...

    @property
    def public_host(self) -> str | None:
        """The host carriers reach (tunnel or webhook_url), if any."""
        ...

    async def reload(self, reason: str) -> ReloadResult:
        """Load, validate and build the config again; swap it in on success."""
        ...
