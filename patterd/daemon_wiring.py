"""How the daemon's parts are connected: call events to every observer, the tunnel, the sockets served."""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import cast

import structlog

from patterd.clock import Clock
from patterd.config import Config
from patterd.graph import Graph, build_context
from patterd.listen import bind_unix
from patterd.protocols.events import CallEnded, CallEvent
from patterd.providers.kinds import Tunnel
from patterd.workers.identity import WorkerIdentity

log = structlog.get_logger("patterd.daemon")  # the daemon's logger, as before these moved here

Observer = Callable[[CallEvent], None]


class CallObservers:
    """Each call event to every observer (store, metrics, feed, cluster, fleet, tracer), in order."""

    def __init__(self, observers: Sequence[Observer], *, ended: Callable[[str], None]) -> None:
        self.observers = list(observers)
        self._ended = ended  # told the call id after the observers saw its CallEnded

    def add(self, observer: Observer) -> None:
        self.observers.append(observer)

    def __call__(self, event: CallEvent) -> None:
        for observer in self.observers:
            try:
                observer(event)
            except Exception:  # an observer must never break a call
                log.exception("call event observer failed", observer=getattr(observer, "__qualname__", "?"))
        if type(event) is CallEnded:
            self._ended(event.call_id)


async def open_tunnel(
    config: Config, stack: AsyncExitStack, *, local_url: str, clock: Clock, on_host: Callable[[str], None]
) -> Tunnel | None:
    """The configured tunnel, up, closed with `stack`; `on_host` hears each new public host (quick tunnels)."""
    if config.tunnel is None:
        return None
    tunnel_ctx = build_context(config, local_url=local_url, clock=clock)
    section = config.tunnel
    tunnel = cast(Tunnel, await stack.enter_async_context(section.spec.build(section.options, tunnel_ctx)))
    log.info("tunnel up", public_host=tunnel.public_host)
    tunnel.subscribe(on_host)
    return tunnel


def serving_binds(sock: socket.socket, worker: WorkerIdentity | None) -> list[str]:
    """Hypercorn binds: the listening socket, and a worker's own unix socket (siblings, operators)."""
    binds = [f"fd://{sock.fileno()}"]
    if worker is not None:  # the same app on this worker's own socket
        private = bind_unix(worker.http_socket)  # bound before READY=1: siblings find it
        binds.append(f"fd://{private.detach()}")  # Hypercorn owns and closes it
    return binds


def warn_about(graph: Graph) -> None:
    """Log what the built providers warn about (at start and after each reload)."""
    for built in graph.providers:
        for warning in getattr(built.instance, "warnings", ()) or ():
            log.warning("provider warning", provider=built.key, warning=warning)
