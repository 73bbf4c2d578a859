"""The listening socket(s): inherited (`fd://N`, systemd socket activation) or bound to host:port."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import stat
from pathlib import Path

import structlog

log = structlog.get_logger("patterd.listen")

BACKLOG = 1024


def parse_bind(bind: str | None, host: str, port: int) -> tuple[str, int]:
    """`HOST:PORT` from `--bind` (IPv6 in brackets), else the config's host and port."""
    if bind is None:
        return host, port
    host_text, _, port_text = bind.rpartition(":")
    return host_text.strip("[]") or "127.0.0.1", int(port_text)


def inherited_fd(bind: str | None) -> int | None:
    """The descriptor of an inherited listening socket: `fd://N`, or fd 3 from systemd socket activation."""
    if bind is None and os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS"):
        return 3  # systemd socket activation hands us fd 3
    if bind is not None and bind.startswith("fd://"):
        return int(bind[5:])
    return None


def open_socket(bind: str | None, host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """The listening socket: inherited, or bound to `bind` / host:port.

    `reuse_port` sets SO_REUSEPORT so that sibling workers may bind sockets of their own to the same
    address and the kernel spreads new connections over them.
    """
    fd = inherited_fd(bind)
    if fd is not None:
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        return sock
    host, port = parse_bind(bind, host, port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def local_url(sock: socket.socket) -> tuple[str, str]:
    """(bound host, the URL this machine reaches the socket at) — a wildcard bind is shown as 127.0.0.1."""
    host, port = sock.getsockname()[:2]
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    shown = f"[{shown_host}]" if ":" in str(shown_host) else shown_host
    return str(host), f"http://{shown}:{port}"


def raise_fd_limit() -> None:
    """Raise the soft open-files limit to the hard one: every connection is a descriptor, and the usual
    soft default (1024) lets a thousand idle clients starve new calls (systemd's unit sets LimitNOFILE)."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and hard != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            log.info("open files limit raised", soft=hard, was=soft)
    except (ValueError, OSError) as exc:  # not allowed here (some containers): keep what we have
        log.warning("cannot raise the open files limit", error=str(exc))


def bind_unix(path: Path) -> socket.socket:
    """A listening AF_UNIX stream socket at `path` (a stale file there is replaced), private to its owner."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.remove(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock
