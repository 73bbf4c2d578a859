"""The hydrate child process: `python -m patterd.store.hydrate_child FD`, started by store.hydrate_proc.

It runs `hydrate_tree` on its own SQLite connection to the index and talks to the daemon over the
socket FD, one JSON object per line:
- daemon → child: first `{"root", "now", "stopping"}`; then `{"k": "live", "live": bool}` answering a question,
  and `{"k": "stop"}` (stop at the next record; what is indexed stays).
- child → daemon: `{"k": "progress", "total", "loaded"}` (every PROGRESS_SECS while it changes),
  `{"k": "live", "id"}` (is this open or damaged record's call running in the daemon? asked rarely),
  `{"k": "log", "level", "event", "fields"}` (the daemon logs it), then `{"k": "done", "report",
  "total", "loaded"}` or `{"k": "corrupt", "error"}` (the index is corrupt: the daemon rebuilds it).
EOF on the socket means the daemon is gone: the child exits at once, so a `kill -9` of the daemon
leaves no loader behind (on Linux PR_SET_PDEATHSIG kills it even sooner).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import signal
import socket
import sqlite3
import sys
import threading
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from patterd.store.hydrate import Progress, hydrate_tree
from patterd.store.hydrate_proc import report_fields
from patterd.store.index import INDEX_NAME, CallIndex

PROGRESS_SECS = 0.02  # the daemon's `history.loaded` lags the child by at most this
PR_SET_PDEATHSIG = 1
# The loader runs at a lower CPU priority than the daemon: on a busy machine the kernel gives the
# daemon's listings and calls the CPU first and the history loads with what is left.
NICE = 10


class Link:
    """The socket to the daemon: sends from any thread; a reader thread takes its messages."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()
        self._lines = sock.makefile("rb")
        self.answers: queue.SimpleQueue[bool] = queue.SimpleQueue()

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, default=str).encode() + b"\n"
        with self._lock:
            try:
                self.sock.sendall(data)
            except OSError:
                os._exit(1)  # the daemon is gone: nobody wants the rest

    def first(self) -> dict[str, Any]:
        line = self._lines.readline()
        if not line:
            os._exit(1)
        message: dict[str, Any] = json.loads(line)
        return message

    def read(self, progress: Progress) -> None:
        """Reader thread: answers to `live` questions, `stop`; EOF (the daemon died) ends the process."""
        for line in self._lines:
            message = json.loads(line)
            if message["k"] == "stop":
                progress.stopping = True
            elif message["k"] == "live":
                self.answers.put(bool(message["live"]))
        os._exit(1)


class Live:
    """`call_id in live`, asked of the daemon (only for open or damaged records: rare)."""

    def __init__(self, link: Link) -> None:
        self.link = link

    def __contains__(self, call_id: object) -> bool:
        self.link.send({"k": "live", "id": call_id})
        return self.link.answers.get()


def forwarder(link: Link) -> Any:
    """A structlog processor sending every event to the daemon's log instead of printing it."""

    def forward(_: Any, method: str, event_dict: dict[str, Any]) -> Any:
        event = str(event_dict.pop("event", ""))
        if event_dict.pop("exc_info", None):
            event_dict["exception"] = traceback.format_exc()
        level = "error" if method in ("exception", "critical") else method
        link.send({"k": "log", "level": level, "event": event, "fields": event_dict})
        raise structlog.DropEvent

    return forward


def report_progress(link: Link, progress: Progress, done: threading.Event) -> None:
    """Ticker thread: send (total, loaded) whenever it changed, every PROGRESS_SECS."""
    last = (-1, -1)
    while not done.wait(PROGRESS_SECS):
        now = (progress.total, progress.loaded)
        if now != last:
            link.send({"k": "progress", "total": now[0], "loaded": now[1]})
            last = now


def die_with_parent() -> None:
    """Linux: the kernel SIGKILLs this process when the daemon dies (the socket EOF is the fallback)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def main(fd: int) -> int:
    parent = os.getppid()
    die_with_parent()
    if os.getppid() != parent or parent == 1:  # the daemon died before the prctl
        return 1
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the daemon's to handle
    with contextlib.suppress(OSError):
        os.nice(NICE)
    link = Link(socket.socket(fileno=fd))
    structlog.configure(processors=[forwarder(link)], cache_logger_on_first_use=False)
    setup = link.first()
    progress = Progress(loading=True, stopping=bool(setup.get("stopping")))
    # SIGTERM to the whole group (systemd's stop): stop at the next record and report, as the daemon would.
    signal.signal(signal.SIGTERM, lambda *_: setattr(progress, "stopping", True))
    threading.Thread(target=link.read, args=(progress,), name="hydrate-link", daemon=True).start()
    done = threading.Event()
    ticker = threading.Thread(target=report_progress, args=(link, progress, done), daemon=True)
    ticker.start()
    root = Path(setup["root"])
    now = datetime.fromisoformat(setup["now"].replace("Z", "+00:00"))
    try:
        index = CallIndex(root / INDEX_NAME)
        try:
            report = hydrate_tree(root, index, now=now, live=Live(link), progress=progress)
        finally:
            index.close()
    except sqlite3.DatabaseError as exc:
        done.set()
        link.send({"k": "corrupt", "error": str(exc)})
        return 0
    done.set()
    ticker.join()
    link.send(
        {"k": "done", "report": report_fields(report), "total": progress.total, "loaded": progress.loaded}
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
