"""Reload when the config file (or the .env beside it) changes on disk."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from patterd.config import Config

WATCH_INTERVAL_SECS = 1.0  # how often the config file is checked for changes
WATCH_DEBOUNCE_SECS = 0.5  # editors write in bursts: wait for the file to settle


def fingerprint(paths: list[Path]) -> tuple[Any, ...]:
    """mtime, size and inode of each path (None for a missing one)."""
    out: list[Any] = []
    for path in paths:
        try:
            st = path.stat()
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)


async def watch_config(path: Path, on_change: Callable[[], Awaitable[Any]]) -> None:
    """Call `on_change` after the config or its .env changed and settled; runs until cancelled."""
    paths = [path, path.parent / ".env"]
    last = fingerprint(paths)
    while True:
        await asyncio.sleep(WATCH_INTERVAL_SECS)
        current = fingerprint(paths)
        if current == last:
            continue
        await asyncio.sleep(WATCH_DEBOUNCE_SECS)
        settled = fingerprint(paths)
        if settled != current:
            continue  # still being written; look again next round
        last = settled
        await on_change()


def restart_only_changes(old: Config, new: Config) -> list[str]:
    """What a reload cannot apply (the running process keeps the old value until a restart)."""
    changed: list[str] = []
    if (new.server.host, new.server.port) != (old.server.host, old.server.port):
        changed.append("server.host/port")
    if (new.tunnel is None) != (old.tunnel is None):
        changed.append("tunnel")
    if new.persist != old.persist:
        changed.append("persist")
    if new.server.workers != old.server.workers:
        changed.append("server.workers")
    if new.server.dashboard != old.server.dashboard:
        changed.append("server.dashboard")
    return changed
