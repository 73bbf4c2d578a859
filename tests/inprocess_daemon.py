"""The real daemon on the test's own event loop (its app on Hypercorn, carriers, store), for tests that
need to reach inside it (its feed, its switchboard) or run many calls without a process per test."""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
from collections.abc import AsyncIterator
from pathlib import Path

from patterd.config import load_config
from patterd.daemon import ConfigSource, Daemon
from patterd.plugins import load_registry


class Stdout(io.StringIO):
    """The daemon's stdout: its first line ("patterd dashboard: URL") says it is serving."""

    def __init__(self) -> None:
        super().__init__()
        self.serving = asyncio.Event()

    def write(self, text: str) -> int:
        self.serving.set()
        return super().write(text)


async def serving(stdout: Stdout, task: asyncio.Task[int], timeout: float = 30.0) -> None:
    """Return once the daemon serves; a daemon that ended first raises what ended it, not a bare timeout."""
    waiting = asyncio.ensure_future(stdout.serving.wait())
    try:
        await asyncio.wait({waiting, task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
    if stdout.serving.is_set():
        return
    if task.done():
        raise AssertionError(f"the daemon ended before serving: {task.exception() or task.result()!r}")
    raise TimeoutError(f"the daemon did not serve within {timeout} s")


@contextlib.asynccontextmanager
async def running_daemon(
    path: Path, *, stop_timeout: float = 20.0, freeze_heap: bool = False
) -> AsyncIterator[tuple[Daemon, str, asyncio.Task[int]]]:
    """The real daemon on this event loop, on a pre-bound loopback socket."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    port = sock.getsockname()[1]
    stdout = Stdout()
    daemon = Daemon(
        ConfigSource(path),
        load_config(path, load_registry()),
        bind=f"fd://{sock.detach()}",
        stdout=stdout,
        watch=False,
        freeze_heap=freeze_heap,
    )
    task = asyncio.create_task(daemon.run())
    try:
        await serving(stdout, task)
        yield daemon, f"http://127.0.0.1:{port}", task
    finally:
        if not task.done():
            daemon.request_stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, stop_timeout)
