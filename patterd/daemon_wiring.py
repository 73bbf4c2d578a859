"""How the daemon's parts are connected: call events to every observer, the tunnel, the sockets and routes served."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import socket
from collections.abc import Callable, Collection, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, cast

import structlog
from starlette.applications import Starlette

from patterd.clock import Clock
from patterd.config import Config
from patterd.graph import Graph, build_context
from patterd.listen import bind_unix
from patterd.plugins import Registry
from patterd.protocols.events import CallEnded, CallEvent
from patterd.providers.kinds import Tunnel
from patterd.web.carrier_routes import carrier_routes
from patterd.web.runtime import Runtime
from patterd.workers.identity import WorkerIdentity

if TYPE_CHECKING:
    from patterd.store import HydrateReport, RecordStore

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
    """Hypercorn binds: the listening socket, and a worker's own unix socket (siblings, operators).

    Each descriptor is handed over (detached): Hypercorn wraps it in a socket object of its own and closes
    it. Kept here too, it was closed a second time when the daemon's frame was freed, by then perhaps
    another socket's number (an in-process daemon started next died at start with EBADF).
    """
    binds = [f"fd://{sock.detach()}"]
    if worker is not None:  # the same app on this worker's own socket
        private = bind_unix(worker.http_socket)  # bound before READY=1: siblings find it
        binds.append(f"fd://{private.detach()}")  # Hypercorn owns and closes it
    return binds


async def mount_other_carriers(
    app: Starlette, runtime: Runtime, registry: Registry, mounted: Collection[str], *, done: asyncio.Event
) -> None:
    """After ready: the routes of every installed carrier the config does not use, as before issue 14.

    Before ready only the built carriers' routes are mounted (their modules are imported anyway); the
    others answer "not configured" until a reload switches to one (a reload waits for `done`), so they
    need not delay readiness. Their modules are imported in a thread (the loop keeps serving), their
    routes mounted on the loop.
    """
    try:
        await asyncio.to_thread(_import_all, registry.pending_modules("carrier"))
        others = [name for name in registry.names("carrier") if name not in mounted]
        routes = carrier_routes(runtime, registry.only_carriers(others), app.state.throttle)
        app.router.routes[0:0] = routes  # first, like create_app's; requests read the list each time
        log.info("carrier routes mounted", carriers=others)
    except Exception:  # the configured carriers serve on; only a reload to another one would miss routes
        log.exception("carrier routes could not be mounted")
    finally:
        done.set()


async def load_history(store: RecordStore, hydrating: asyncio.Task[HydrateReport]) -> None:
    """Wait for the hydrate running while serving (the list API shows its progress), then run retention."""
    try:
        report = await asyncio.shield(hydrating)
        log.info("call records loaded", report=str(report))
    except asyncio.CancelledError:
        raise
    except Exception:  # the tree stays the truth: listings show what the index has, a restart retries
        log.exception("call records could not be loaded")
    await store.run_retention_loop()


def _import_all(modules: Collection[str]) -> None:
    for module in modules:
        with contextlib.suppress(Exception):  # a broken plugin: the registry's own load records why
            importlib.import_module(module)


def warn_about(graph: Graph) -> None:
    """Log what the built providers warn about (at start and after each reload)."""
    for built in graph.providers:
        for warning in getattr(built.instance, "warnings", ()) or ():
            log.warning("provider warning", provider=built.key, warning=warning)
