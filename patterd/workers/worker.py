"""Inside a worker: notice the supervisor going away, keep the shared metrics files current, reload peers."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable

import structlog

from patterd.sdnotify import Notifier
from patterd.workers.identity import RELOAD_PEERS, WorkerIdentity

log = structlog.get_logger("patterd.workers")

SYNC_INTERVAL_SECS = 1.0  # how stale this worker's live counters may be in a sibling's /metrics


@contextlib.asynccontextmanager
async def worker_services(
    identity: WorkerIdentity, *, request_stop: Callable[[], None], sync_metrics: Callable[[], None] | None
) -> AsyncIterator[None]:
    """While the worker serves: drain when the supervisor dies; copy live counters to the metrics files."""
    loop = asyncio.get_running_loop()
    fd = identity.parent_fd
    structlog.contextvars.bind_contextvars(worker=identity.index)

    def parent_readable() -> None:
        assert fd is not None
        try:
            data = os.read(fd, 64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # EOF: the supervisor is gone (killed); nobody will ever tell us to stop
            loop.remove_reader(fd)
            log.warning("supervisor gone: draining")
            request_stop()

    if fd is not None:
        os.set_blocking(fd, False)
        loop.add_reader(fd, parent_readable)

    async def sync_loop() -> None:
        assert sync_metrics is not None
        while True:
            await asyncio.sleep(SYNC_INTERVAL_SECS)
            try:
                sync_metrics()
            except Exception:  # metrics must never take a worker down
                log.exception("metrics sync failed")

    task = asyncio.create_task(sync_loop()) if sync_metrics is not None else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            with contextlib.suppress(Exception):
                assert sync_metrics is not None
                sync_metrics()  # the last counts of a draining worker stay in the sums
        if fd is not None:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(fd)


def reload_peers(notifier: Notifier) -> None:
    """Ask the supervisor to reload every other worker (this one reloaded through the API)."""
    notifier.notify(RELOAD_PEERS)
