"""The daemon's side of a hydrate run in a child process: start it, answer it, mirror its progress.

A large history is parsed and indexed by `python -m patterd.store.hydrate_child`, so the JSON
parsing and SQLite writes of 100,000 records never hold this process's GIL: listings and calls
served meanwhile do not queue behind them. The child writes the SQLite index itself (WAL: this
process's reader sees each committed chunk). One socket pair carries JSON lines both ways (the
protocol is in hydrate_child's docstring). The child dies with this process: it reads EOF on the
socket when we are gone (and on Linux the kernel kills it at once, PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Container
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import structlog

from patterd.clock import iso_ms
from patterd.store.hydrate import HydrateReport, Progress
from patterd.store.tree_read import digit_subdirs

log = structlog.get_logger("patterd.store.hydrate")

T = TypeVar("T")
CHILD_MODULE = "patterd.store.hydrate_child"
LOG_LEVELS = frozenset({"debug", "info", "warning", "error", "critical"})


class ChildFailed(RuntimeError):
    """The hydrate process could not start, or exited without its report."""


class HydrateChild:
    """One hydrate child process; `run` blocks (in a thread of its own) until it has finished."""

    def __init__(self, root: Path, *, now: datetime, live: Container[str], progress: Progress) -> None:
        self.root = root
        self.now = now
        self.live = live
        self.progress = progress
        self._send_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.pid: int | None = None

    def _send(self, message: dict[str, Any]) -> None:
        sock = self._sock
        if sock is None:
            return
        with self._send_lock, contextlib.suppress(OSError):  # the child is gone: run() notices the EOF
            sock.sendall(json.dumps(message).encode() + b"\n")

    def stop(self) -> None:
        """Ask the child to stop at its next record (shutdown); what it indexed so far stays."""
        self._send({"k": "stop"})

    def run(self) -> HydrateReport:
        """Start the child and serve it until it reports; sqlite3.DatabaseError when the index is corrupt."""
        mine, theirs = socket.socketpair()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", CHILD_MODULE, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            mine.close()
            raise ChildFailed(f"the hydrate process could not start: {exc}") from exc
        finally:
            theirs.close()  # the child's copy only: its EOF then means the child is gone
        self.pid = proc.pid
        try:
            setup = {"root": str(self.root), "now": iso_ms(self.now), "stopping": self.progress.stopping}
            with contextlib.suppress(OSError):
                mine.sendall(json.dumps(setup).encode() + b"\n")
            self._sock = mine
            if self.progress.stopping:  # asked while the socket was not ours to send on: not lost
                self.stop()
            try:
                report = self._serve(mine.makefile("rb"))
            except OSError:  # a reset: the child died with our setup unread
                report = None
        finally:
            self._sock = None
            mine.close()
            code = proc.wait()
        if report is None:
            raise ChildFailed(
                f"the hydrate process (pid {proc.pid}) exited with code {code} before reporting"
            )
        return report

    def _serve(self, lines: Any) -> HydrateReport | None:
        """Handle the child's messages until its report (None if it died first)."""
        progress = self.progress
        for line in lines:
            message = json.loads(line)
            kind = message["k"]
            if kind == "progress":
                progress.total, progress.loaded = message["total"], message["loaded"]
            elif kind == "live":  # an open or damaged record: is its call one of ours, still running?
                self._send({"k": "live", "live": message["id"] in self.live})
            elif kind == "log":
                level = message["level"] if message["level"] in LOG_LEVELS else "warning"
                getattr(log, level)(message["event"], **message["fields"])
            elif kind == "corrupt":
                raise sqlite3.DatabaseError(message["error"])
            elif kind == "done":
                progress.total, progress.loaded = message["total"], message["loaded"]
                return HydrateReport(**message["report"])
        return None


def has_calls(calls_root: Path, at_least: int) -> bool:
    """True when the tree holds `at_least` call directories; counts newest days first and stops there."""
    base = str(calls_root)
    found = 0
    for year in reversed(digit_subdirs(base, 4)):
        for month in reversed(digit_subdirs(f"{base}/{year}", 2)):
            for day in reversed(digit_subdirs(f"{base}/{year}/{month}", 2)):
                try:
                    with os.scandir(f"{base}/{year}/{month}/{day}") as it:
                        found += sum(1 for e in it if not e.name.startswith("."))
                except OSError:
                    continue
                if found >= at_least:
                    return True
    return False


def report_fields(report: HydrateReport) -> dict[str, Any]:
    """The report as JSON-ready fields (the child's `done` message)."""
    return dataclasses.asdict(report)


async def in_own_thread(fn: Callable[[], T], name: str) -> T:
    """`fn()` in a new thread, awaited: a long job must not hold one of the loop's executor threads.

    asyncio.to_thread shares a small pool (6 threads on 2 cores) with listings and call work; a
    hydrate holding one for its whole run left listings queued behind STT flushes for seconds.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result, exc = fn(), None
        except BaseException as error:  # handed to the awaiting task
            result, exc = None, error
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(settle, result, exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await future
