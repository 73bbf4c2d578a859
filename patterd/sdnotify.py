"""systemd integration without libsystemd: sd_notify datagrams, the watchdog and socket activation.

Follows the documented protocols (man sd_notify(3), sd_watchdog_enabled(3), sd_listen_fds(3)):
state lines ("READY=1", "STATUS=...") joined by newlines are sent as one datagram to the
AF_UNIX socket named by $NOTIFY_SOCKET (a filesystem path, or "@name" for the abstract
namespace). Outside systemd every call is a no-op, and a failed send is logged, never raised,
so notification can never take the daemon down.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, MutableMapping

import structlog

log = structlog.get_logger(__name__)

SD_LISTEN_FDS_START = 3  # the first inherited socket, by the socket activation protocol


class Notifier:
    """Sends service state to systemd; does nothing when $NOTIFY_SOCKET is unset."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._environ = env
        raw = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if raw.startswith("@"):
            self.address = "\0" + raw[1:]  # abstract namespace: leading NUL instead of "@"
        elif raw.startswith("/"):
            self.address = raw
        elif raw:
            # vsock: and other transports are not used for a local service manager.
            log.warning(
                "sd_notify.unsupported_socket", notify_socket=raw, expected="a path or @abstract name"
            )
        self._warned = False

    @property
    def enabled(self) -> bool:
        """True when running under a service manager that listens for notifications."""
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send `lines` ("KEY=value") as one datagram; True if it was sent."""
        if self.address is None:
            return False
        payload = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(payload, self.address)
        except OSError as exc:
            # Logged once at warning, then at debug: a gone manager would otherwise flood the log.
            emit = log.debug if self._warned else log.warning
            emit("sd_notify.failed", notify_socket=self._environ.get("NOTIFY_SOCKET"), error=str(exc))
            self._warned = True
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Startup finished: the service is serving."""
        return self.notify("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def reloading(self) -> bool:
        """A reload started; systemd needs MONOTONIC_USEC with it (Type=notify-reload); send ready() after."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown (drain) started."""
        return self.notify("STOPPING=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def status(self, text: str) -> bool:
        """A one-line human status shown by `systemctl status`."""
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        """Keep-alive ping for WatchdogSec=; send at least every watchdog_interval() / 2."""
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, secs: float) -> bool:
        """Ask for `secs` more before a start/stop timeout fires (a long drain)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(secs * 1_000_000)}")

    def watchdog_interval(self) -> float | None:
        """The watchdog timeout in seconds when systemd expects pings from this process, else None."""
        raw = self._environ.get("WATCHDOG_USEC", "")
        if not raw:
            return None
        pid = self._environ.get("WATCHDOG_PID", "")
        if pid and pid != str(os.getpid()):
            return None  # meant for another process (we were forked or exec'd by a wrapper)
        try:
            usec = int(raw)
        except ValueError:
            log.warning("sd_notify.bad_watchdog_usec", watchdog_usec=raw, expected="an integer of µs")
            return None
        return usec / 1_000_000 if usec > 0 else None


def listen_fds(environ: MutableMapping[str, str] | None = None, *, unset: bool = True) -> list[int]:
    """File descriptors passed by socket activation ($LISTEN_FDS for our $LISTEN_PID), from 3 up.

    With `unset`, the variables are removed so child processes (cloudflared) do not claim them.
    """
    env = os.environ if environ is None else environ
    try:
        if env.get("LISTEN_PID") != str(os.getpid()):
            return []
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        log.warning("sd_listen_fds.bad_env", listen_fds=env.get("LISTEN_FDS"), expected="an integer")
        return []
    finally:
        if unset:
            for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
                env.pop(key, None)
    fds = list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + max(count, 0)))
    for fd in fds:
        os.set_inheritable(fd, False)  # what sd_listen_fds does: FD_CLOEXEC on each
    return fds


def _one_line(text: str) -> str:
    # A newline would start a new assignment in the datagram.
    return " ".join(text.splitlines())
