"""Tunnel providers: a supervised `cloudflared` child process, or a static public hostname.

cloudflared behaviour followed (cloudflare/cloudflared, cmd/cloudflared/tunnel/quick_tunnel.go
and the TryCloudflare docs): `cloudflared tunnel --no-autoupdate --url http://127.0.0.1:PORT`
asks trycloudflare.com for a random hostname and logs it to stderr inside an ASCII box, one
zerolog console line per row::

    2024-05-01T12:00:00Z INF |  Your quick Tunnel has been created! Visit it at (it may take some time to be reachable):  |
    2024-05-01T12:00:00Z INF |  https://fancy-words-here.trycloudflare.com                                                |

A named tunnel (`cloudflared tunnel run`, token in $TUNNEL_TOKEN so it never shows in `ps`)
keeps the hostname configured in the Cloudflare dashboard, whose ingress must point at the
daemon's local URL; it is up once a line says "Registered tunnel connection".

The child runs in its own session so a Ctrl-C in the terminal reaches patterd (which drains
calls first) and not cloudflared (which would cut the media websockets at once). If it dies
it is restarted with exponential backoff; a quick tunnel then gets a new hostname, and every
callback registered with `subscribe` is told, so the daemon can re-point the carrier webhooks.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import shutil
import signal
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import structlog

from patterd.errors import ProviderConnectionError, ProviderError
from patterd.providers.spec import BuildContext, Capabilities, ProviderSpec
from patterd.providers.tunnel_options import INSTALL_HELP

# The options moved to tunnel_options; their old import path still works.
from patterd.providers.tunnel_options import CloudflaredOptions as CloudflaredOptions
from patterd.providers.tunnel_options import StaticOptions as StaticOptions
from patterd.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

HostCallback = Callable[[str], Any]  # may return an awaitable, which is awaited in a task

QUICK_TUNNEL_URL = re.compile(r"https://([a-z0-9-]+\.trycloudflare\.com)\b")
REGISTERED = "Registered tunnel connection"
_SERVICE_HOSTS = frozenset({"api.trycloudflare.com"})
_LEVEL = re.compile(r"^\S+\s+(DBG|INF|WRN|ERR|FTL)\s")
MAX_BACKOFF_SECS = 60.0
STABLE_SECS = 60.0  # a child that lived this long restarts with the initial backoff again
STOP_TIMEOUT_SECS = 5.0  # SIGTERM, then SIGKILL after this long
# Variables meant for patterd alone: cloudflared would otherwise send READY=1 to our systemd
# socket, claim socket-activated fds, or run a named tunnel from a stray token.
_CHILD_ENV_DROP = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "TUNNEL_TOKEN",
)


class CloudflaredTunnel:
    """A running cloudflared child process and the public host it provides (kinds.Tunnel)."""

    def __init__(
        self,
        options: CloudflaredOptions,
        local_url: str | None,
        *,
        stop_timeout_secs: float = STOP_TIMEOUT_SECS,
    ) -> None:
        self.options = options
        self.local_url = local_url
        self.stop_timeout_secs = stop_timeout_secs
        self.restarts = 0  # how many times the child was started again after dying
        self.pid: int | None = None  # the current child's pid, None when none runs
        self._host: str | None = options.hostname
        self._subscribers: list[HostCallback] = []
        self._callbacks: set[asyncio.Task[Any]] = set()
        self._tail: deque[str] = deque(maxlen=20)
        self._up = asyncio.Event()  # set once the tunnel has come up the first time
        self._connected = False
        self._task: asyncio.Task[None] | None = None

    @property
    def public_host(self) -> str:
        """host the carriers reach (no scheme); the last one cloudflared reported."""
        return self._host or ""

    @property
    def connected(self) -> bool:
        """True while the current child has reported its tunnel up."""
        return self._connected

    def subscribe(self, callback: HostCallback) -> Callable[[], None]:
        """Call `callback(new_host)` whenever the public host changes; returns an unsubscribe function."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def command(self, binary: str) -> list[str]:
        """The child's argv."""
        if self.options.token is not None:
            return [binary, "tunnel", "--no-autoupdate", *self.options.extra_args, "run"]
        assert self.local_url is not None
        return [binary, "tunnel", "--no-autoupdate", "--url", self.local_url, *self.options.extra_args]

    async def start(self) -> None:
        """Start the child and wait until the tunnel is up; raise ProviderError if it cannot come up."""
        binary = shutil.which(self.options.binary)
        if binary is None:
            raise ProviderError(
                f"tunnel.cloudflared: binary {self.options.binary!r} not found or not executable; {INSTALL_HELP}",
                provider="tunnel.cloudflared",
            )
        self._task = asyncio.create_task(self._supervise(binary), name="tunnel.cloudflared")
        up = asyncio.create_task(self._up.wait())
        try:
            await asyncio.wait(
                {self._task, up}, timeout=self.options.start_timeout_secs, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            up.cancel()
        if self._up.is_set():
            return
        if self._task.done():
            self._task.result()  # raises the reason it gave up
        await self.close()
        raise ProviderConnectionError(
            f"tunnel.cloudflared: no tunnel after {self.options.start_timeout_secs} s; last output:\n{self._tail_text()}",
            provider="tunnel.cloudflared",
        )

    async def close(self) -> None:
        """Stop supervising and end the child (SIGTERM, then SIGKILL)."""
        if self._task is not None:
            failed = await cancel_and_wait(self._task)
            if failed is not None:
                raise failed
        for task in list(self._callbacks):
            task.cancel()
        if self._callbacks:
            await asyncio.gather(*self._callbacks, return_exceptions=True)

    async def _supervise(self, binary: str) -> None:
        backoff = self.options.restart_backoff_secs
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            try:
                returncode: int | None = await self._run_once(binary)
            except OSError as exc:
                if not self._up.is_set():
                    raise ProviderError(
                        f"tunnel.cloudflared: cannot run {binary!r}: {exc}", provider="tunnel.cloudflared"
                    ) from exc
                log.error("tunnel.cloudflared.spawn_failed", binary=binary, error=str(exc))
                returncode = None
            self._connected = False
            if not self._up.is_set():
                raise ProviderConnectionError(
                    f"tunnel.cloudflared: cloudflared exited with status {returncode} before the tunnel was up; "
                    f"last output:\n{self._tail_text()}",
                    provider="tunnel.cloudflared",
                )
            if loop.time() - began >= STABLE_SECS:
                backoff = self.options.restart_backoff_secs
            log.warning("tunnel.cloudflared.exited", returncode=returncode, restart_in_secs=backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECS)
            self.restarts += 1

    async def _run_once(self, binary: str) -> int:
        env = {k: v for k, v in os.environ.items() if k not in _CHILD_ENV_DROP}
        if self.options.token is not None:
            env["TUNNEL_TOKEN"] = self.options.token.get_secret_value()
        argv = self.command(binary)
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,  # cloudflared logs to stderr; one stream keeps the order
            env=env,
            start_new_session=True,
            limit=1 << 20,
        )
        self.pid = process.pid
        log.info("tunnel.cloudflared.started", pid=process.pid, argv=argv)
        try:
            assert process.stdout is not None
            async for raw in process.stdout:
                self._on_line(raw.decode(errors="replace").rstrip())
            return await process.wait()
        finally:
            if process.returncode is None:
                await self._terminate(process)
            self.pid = None

    async def _terminate(self, process: asyncio.subprocess.Process) -> None:
        with suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self.stop_timeout_secs)
        except TimeoutError:
            log.warning("tunnel.cloudflared.kill", pid=process.pid, after_secs=self.stop_timeout_secs)
            with suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    def _on_line(self, line: str) -> None:
        if not line:
            return
        self._tail.append(line)
        level = _LEVEL.match(line)
        if level and level.group(1) in ("WRN", "ERR", "FTL"):
            log.warning("tunnel.cloudflared.output", line=line)
        else:
            log.debug("tunnel.cloudflared.output", line=line)
        if self.options.token is None:
            found = QUICK_TUNNEL_URL.search(line)
            # Error lines quote the quick-tunnel service itself (https://api.trycloudflare.com/tunnel).
            if (
                found
                and found.group(1) not in _SERVICE_HOSTS
                and not (level and level.group(1) in ("ERR", "FTL"))
            ):
                self._came_up(found.group(1))
        elif REGISTERED in line:
            self._came_up(self.public_host)

    def _came_up(self, host: str) -> None:
        self._connected = True
        previous, self._host = self._host, host
        first = not self._up.is_set()
        self._up.set()
        if first:
            log.info("tunnel.cloudflared.up", public_host=host)
        elif host != previous:
            log.warning("tunnel.cloudflared.host_changed", public_host=host, previous=previous)
            for callback in list(self._subscribers):
                self._call(callback, host)
        else:
            log.info("tunnel.cloudflared.reconnected", public_host=host)

    def _call(self, callback: HostCallback, host: str) -> None:
        try:
            result = callback(host)
        except Exception:
            log.exception("tunnel.subscriber_failed", public_host=host)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._callbacks.add(task)
            task.add_done_callback(self._callback_done)

    def _callback_done(self, task: asyncio.Future[Any]) -> None:
        self._callbacks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("tunnel.subscriber_failed", error=repr(task.exception()))

    def _tail_text(self) -> str:
        return "\n".join(self._tail) or "(nothing)"


@dataclass
class StaticTunnel:
    """A public host routed here by something else; it never changes (kinds.Tunnel)."""

    public_host: str

    def subscribe(self, callback: HostCallback) -> Callable[[], None]:
        """Accepted for symmetry with cloudflared; a static host never changes."""
        return lambda: None


def _local_url(ctx: BuildContext) -> str:
    value = ctx.extra.get("local_url")
    if (
        not isinstance(value, str)
        or urlsplit(value).scheme not in ("http", "https")
        or not urlsplit(value).port
    ):
        raise ProviderError(
            f"tunnel.cloudflared: BuildContext.extra['local_url'] is {value!r}; "
            "expected the daemon's local URL such as 'http://127.0.0.1:8000'",
            provider="tunnel.cloudflared",
        )
    return value


@asynccontextmanager
async def build_cloudflared(
    options: CloudflaredOptions, ctx: BuildContext
) -> AsyncIterator[CloudflaredTunnel]:
    """Start cloudflared toward `ctx.extra["local_url"]`; stop it on exit."""
    local_url = None if options.token is not None else _local_url(ctx)
    tunnel = CloudflaredTunnel(options, local_url)
    await tunnel.start()
    try:
        yield tunnel
    finally:
        await tunnel.close()


async def check_cloudflared(tunnel: CloudflaredTunnel) -> None:
    """The child is running and its tunnel is up."""
    if not tunnel.connected:
        raise ProviderConnectionError(
            f"tunnel.cloudflared: not connected (last host {tunnel.public_host!r}, {tunnel.restarts} restarts)",
            provider="tunnel.cloudflared",
        )


@asynccontextmanager
async def build_static(options: StaticOptions, ctx: BuildContext) -> AsyncIterator[StaticTunnel]:
    """Nothing to run: the host is given."""
    yield StaticTunnel(options.hostname)


CLOUDFLARED = ProviderSpec(
    kind="tunnel",
    name="cloudflared",
    options=CloudflaredOptions,
    build=build_cloudflared,
    summary="Cloudflare Tunnel via a supervised cloudflared process (quick *.trycloudflare.com or named)",
    check=check_cloudflared,
    capabilities=Capabilities(streaming=False, notes="needs the cloudflared binary"),
)

STATIC = ProviderSpec(
    kind="tunnel",
    name="static",
    options=StaticOptions,
    build=build_static,
    summary="A fixed public hostname routed to the daemon by your own proxy or port forward",
    capabilities=Capabilities(streaming=False, needs_network=False),
)
