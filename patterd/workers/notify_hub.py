"""The supervisor's side of sd_notify: workers send their READY=1 / STOPPING=1 here, not to systemd.

Each worker's $NOTIFY_SOCKET names this datagram socket; the kernel attaches the sender's pid
(SO_PASSCRED / SCM_CREDENTIALS, as systemd itself does), so a message needs no other identification.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from pathlib import Path

import structlog

log = structlog.get_logger("patterd.workers")

MAX_DATAGRAM = 4096
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def parse_lines(payload: bytes) -> dict[str, str]:
    """`KEY=value` lines of one datagram (malformed lines are skipped)."""
    out: dict[str, str] = {}
    for line in payload.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep and key:
            out[key] = value
    return out


class NotifyHub:
    """A bound AF_UNIX datagram socket; `on_message(pid, fields)` for every datagram received."""

    def __init__(self, path: Path, on_message: Callable[[int, dict[str, str]], None]) -> None:
        self.path = path
        self._on_message = on_message
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._sock.bind(str(path))
        self._sock.setblocking(False)
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Start reading on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._readable)

    def _readable(self) -> None:
        while True:
            try:
                data, ancillary, _flags, _addr = self._sock.recvmsg(
                    MAX_DATAGRAM, socket.CMSG_SPACE(_UCRED.size)
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("notify socket read failed", error=str(exc))
                return
            pid = 0
            for level, kind, value in ancillary:
                if (
                    level == socket.SOL_SOCKET
                    and kind == socket.SCM_CREDENTIALS
                    and len(value) >= _UCRED.size
                ):
                    pid = _UCRED.unpack_from(value)[0]
            try:
                self._on_message(pid, parse_lines(data))
            except Exception:  # one bad message must not stop the supervisor
                log.exception("notify message handling failed")

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
