"""The composition root: builds everything from a config and owns the lifecycle (ready, reload, drain)."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import signal
import sys
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import structlog
from hypercorn.asyncio import serve

from patterd import __version__, heap
from patterd.calls.switchboard import Switchboard
from patterd.clock import SYSTEM_CLOCK, Clock
from patterd.cluster.node import join_cluster
from patterd.config import Config, load_config, load_config_text
from patterd.config.model import is_loopback
from patterd.config_watch import restart_only_changes, watch_config
from patterd.daemon_wiring import (
    CallObservers,
    load_history,
    mount_other_carriers,
    open_tunnel,
    serving_binds,
    warn_about,
)
from patterd.errors import ConfigError, PatterdError
from patterd.graph import Graph, build_graph
from patterd.http_server import hypercorn_config
from patterd.http_session import SharedSession
from patterd.listen import local_url, open_socket, raise_fd_limit
from patterd.live_counters import switchboard_counters
from patterd.metrics import Metrics
from patterd.metrics_mp import multiprocess_dir
from patterd.notify.setup import fleet_notifier
from patterd.plugins import Registry, load_registry
from patterd.providers.kinds import Tunnel
from patterd.redact import redact_call_data
from patterd.sdnotify import Notifier
from patterd.store import open_store
from patterd.store.hydrate_proc import in_own_thread
from patterd.store.recording_path import open_recording
from patterd.tracing import tracer_from_environment
from patterd.warmup import warm_up
from patterd.web.app import create_app
from patterd.web.feed import EventFeed
from patterd.web.runtime import ReloadResult
from patterd.workers.identity import WorkerIdentity
from patterd.workers.peers import Peers
from patterd.workers.worker import reload_peers, worker_services

log = structlog.get_logger("patterd.daemon")


class State(enum.Enum):
    """The daemon's lifecycle."""

    STARTING = "starting"  # loading config, building providers, binding the socket
    SERVING = "serving"  # accepting calls; /readyz answers 200
    DRAINING = "draining"  # refusing new calls; live calls finishing (up to drain_timeout_secs)
    STOPPED = "stopped"  # everything closed, records flushed


@dataclass(frozen=True)
class ConfigSource:
    """Where the config comes from: a file, or the built-in offline default."""

    path: Path | None  # None: the embedded default
    text: str | None = None  # the default's text


class Daemon:
    """One running patterd: config, providers, calls, web app, lifecycle."""

    def __init__(
        self,
        source: ConfigSource,
        config: Config,
        *,
        registry: Registry | None = None,
        bind: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        stdout: IO[str] = sys.stdout,
        watch: bool = True,
        worker: WorkerIdentity | None = None,
        freeze_heap: bool = False,
    ) -> None:
        self.source = source
        self.freeze_heap = freeze_heap  # gc.freeze once warmed up (the CLI; in-process tests keep gc as is)
        self.config = config
        self.registry = registry or load_registry()
        self.bind = bind
        self.clock = clock
        self.stdout = stdout
        self.watch = watch and source.path is not None
        self.version = __version__
        self.started_at: datetime = clock.now()
        self._state = State.STARTING
        self.notifier = Notifier()
        self.feed = EventFeed(redact=self._redact_feed)
        self.token = (
            config.server.dashboard_token.get_secret_value() if config.server.dashboard_token else None
        )
        self.loopback = True
        self.store = open_store(
            config.persist,
            redact_phone=config.logging.redact_phone,
            retention_days=config.logging.retention_days,
            pricing=config.pricing,
            clock=clock,
        )
        self._switchboard: Switchboard | None = None
        # call tokens; with cluster.redis, shared state
        self.gate, self.cluster = join_cluster(config.cluster)
        self.worker = worker  # one of a supervisor's `server.workers` processes, or None
        self.metrics = Metrics(
            self.version,
            switchboard_counters(lambda: self._switchboard, lambda: self.store.write_errors),
            multiprocess_dir=multiprocess_dir() if worker is not None else None,
        )
        self.peers = Peers(worker, lambda: self.token) if worker is not None else None
        if (node := self.cluster) is not None:  # patterd_cluster_redis_errors_total
            self.metrics.live.cluster_errors = lambda: node.link.errors
        tracer = tracer_from_environment(self.version)
        self._emit = CallObservers(
            [self.store.handle, self.metrics.observe, self.feed.observe], ended=self._count_cost
        )
        if self.cluster is not None:
            self._emit.add(self.cluster.observe)
        self.fleet = fleet_notifier(config, self.metrics)  # dashboard.notify_url: report calls to a central
        if self.fleet is not None:
            self._emit.add(self.fleet.observe)
        if tracer is not None:
            self._emit.add(tracer.observe)
        self._stop = asyncio.Event()
        self._stop_now = asyncio.Event()
        self._drain_requested = asyncio.Event()
        self._serving = asyncio.Event()
        self._carriers_mounted = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._generation = 0
        self._tunnel: Tunnel | None = None
        self._local_url = ""
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ Runtime (seen by the web app)

    @property
    def state(self) -> str:
        return self._state.value

    @property
    def config_digest(self) -> str:
        return self.config.digest

    @property
    def public_host(self) -> str | None:
        """The host carriers reach: the tunnel's, else webhook_url's."""
        return self._tunnel.public_host if self._tunnel is not None else self.config.public_host

    @property
    def switchboard(self) -> Switchboard:
        assert self._switchboard is not None, "the switchboard exists once the daemon has started"
        return self._switchboard

    # ------------------------------------------------------------------ run

    async def run(self) -> int:
        """Serve until stopped; returns the process exit code."""
        raise_fd_limit()
        loop = asyncio.get_running_loop()
        sock = open_socket(self.bind, self.config.server.host, self.config.server.port)
        host, self._local_url = local_url(sock)
        self.loopback = is_loopback(host)
        if not self.loopback and not self.token and self.config.server.dashboard:
            log.error("refusing to listen beyond loopback without server.dashboard_token", host=host)
            sock.close()
            return 78
        async with AsyncExitStack() as stack:
            http = SharedSession()  # opened by its first request: aiohttp is not imported before that
            stack.push_async_callback(http.aclose)
            if self.fleet is not None:
                self.fleet.start(http.get())
            try:
                # A quick tunnel that restarts gets a new hostname: rebuild the providers around it
                # (carrier signature URLs, the number's webhook) the way a reload does.
                self._tunnel = await open_tunnel(
                    self.config,
                    stack,
                    local_url=self._local_url,
                    clock=self.clock,
                    on_host=lambda host: self._spawn_reload(f"tunnel host changed to {host}"),
                )
                graph = await build_graph(
                    self.config,
                    self.registry,
                    local_url=self._local_url,
                    clock=self.clock,
                    tunnel=self._tunnel,
                )
            except PatterdError as exc:
                log.error("cannot start", error=str(exc))
                sock.close()
                return 1
            self._switchboard = Switchboard(
                graph,
                emit=self._emit,
                clock=self.clock,
                http=http,
                recorded=self.store.wait_durable,
                gate=self.gate,
            )
            # Without a cluster relay, the worker that takes a call's media tells the one that answered it.
            peers = self.peers
            if peers is not None and self.gate.on_adopted is None:
                self.gate.on_adopted = lambda claim: peers.hand_over(claim.call_id)
            # recording: local
            self._switchboard.open_recording = functools.partial(open_recording, self.store)
            warn_about(graph)
            if self.cluster is not None:
                await self.cluster.start(
                    self._switchboard,
                    emit=self._emit,
                    feed=self.feed,
                    known_record=lambda call_id: self.store.get_call(call_id) is not None,
                    recover_orphans=getattr(self.store, "recover_orphans", None),  # PostgreSQL: shared
                    forget_record=getattr(self.store, "forget", None),  # a handed-over call's memory copy
                )
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_stop_signal, sig)
            loop.add_signal_handler(signal.SIGHUP, self._spawn_reload, "SIGHUP")
            if self.watch:
                assert self.source.path is not None
                self._spawn(watch_config(self.source.path, lambda: self.reload("config file changed")))
            if self.worker is not None:
                await stack.enter_async_context(
                    worker_services(
                        self.worker,
                        request_stop=self.request_stop,
                        sync_metrics=self.metrics.live_sync.sync if self.metrics.live_sync else None,
                    )
                )
            built = list(graph.carriers)  # the other carriers' routes are mounted after ready (issue 14)
            app = create_app(
                self,
                dashboard=self.config.server.dashboard,
                peers=self.peers,
                registry=self.registry.only_carriers(built),
            )
            hyper = hypercorn_config(serving_binds(sock, self.worker))
            server = asyncio.create_task(serve(app, hyper, shutdown_trigger=self._stop.wait))  # type: ignore[arg-type]
            self._become_serving()
            self._spawn(self._warm_up(graph))  # numpy, offline models: loaded behind readiness (issue 14)
            del graph  # the switchboard holds it; this frame lives as long as the daemon and would pin it
            self._spawn(mount_other_carriers(app, self, self.registry, built, done=self._carriers_mounted))
            # The call history loads while calls are served (100k records take seconds); retention starts after it.
            # Its own thread, not the loop's small executor pool that listings and calls share.
            hydrating = asyncio.create_task(in_own_thread(self.store.hydrate, "patterd-hydrate"))
            history = asyncio.create_task(load_history(self.store, hydrating))
            await self._wait_for_stop(server)
            self._state = State.DRAINING
            self.notifier.stopping()
            log.info("draining", live_calls=self.switchboard.live_count)
            drain = asyncio.create_task(self.switchboard.drain(self.config.server.drain_timeout_secs))
            stop_now = asyncio.create_task(self._stop_now.wait())
            await asyncio.wait({drain, stop_now}, return_when=asyncio.FIRST_COMPLETED)
            if not drain.done():
                drain.cancel()
                await self.switchboard.end_all("daemon stopped at once")
            stop_now.cancel()
            if self.cluster is not None:
                await self.cluster.close()  # its calls are over: leave the registry, stop relaying
            self.feed.close()
            self._stop.set()
            with contextlib.suppress(Exception):
                await server
            for task in list(self._tasks):
                task.cancel()
            self.store.stop_hydrate()  # a hydrate still running stops at its next record
            history.cancel()
            # The hydrate thread must be out of the index before the store closes it.
            await asyncio.gather(history, hydrating, return_exceptions=True)
            await self.switchboard.graph.aclose()
            if self.fleet is not None:  # the last calls' ends, while the HTTP session is still open
                await self.fleet.close()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        await asyncio.to_thread(self.store.close)
        self._state = State.STOPPED
        log.info("stopped")
        return 0

    def _become_serving(self) -> None:
        self._state = State.SERVING
        self._serving.set()
        note = "" if self.source.path else " (built-in offline default config: no patter.yaml found)"
        print(f"patterd dashboard: {self._local_url}/{note}", file=self.stdout, flush=True)
        self.notifier.ready(f"serving {len(self.switchboard.graph.agents)} agent(s)")
        log.info("serving", url=self._local_url, config=str(self.source.path or "<built-in default>"))

    async def _wait_for_stop(self, server: asyncio.Task[None]) -> None:
        stop = asyncio.create_task(self._stop_requested())
        done, _ = await asyncio.wait({server, stop}, return_when=asyncio.FIRST_COMPLETED)
        if server in done:  # the server died on its own: still drain and close cleanly
            stop.cancel()
            if server.exception() is not None:
                log.error("server failed", error=str(server.exception()))
        else:
            await stop

    async def _stop_requested(self) -> None:
        await self._drain_requested.wait()

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        if self._drain_requested.is_set():
            if sig == signal.SIGINT:  # a second Ctrl-C: stop at once (records are still flushed)
                log.warning("second interrupt: stopping at once")
                self._stop_now.set()
            return
        log.info("stop requested", signal=sig.name)
        self._drain_requested.set()

    def request_stop(self) -> None:
        """Begin draining (what SIGTERM does)."""
        self._drain_requested.set()

    # ------------------------------------------------------------------ reload

    def _spawn_reload(self, reason: str) -> None:
        self._spawn(self.reload(reason))

    async def reload(self, reason: str) -> ReloadResult:
        """Load, validate and build the config again; on any error the running config stays."""
        if self._state is State.STARTING:  # e.g. the tunnel moved while we were starting: reload once up
            await self._serving.wait()
        await self._carriers_mounted.wait()  # a reload may switch to a carrier mounted after ready
        async with self._reload_lock:
            if self._state is not State.SERVING:
                return ReloadResult(False, self._generation, message=f"cannot reload while {self.state}")
            self.notifier.reloading()
            log.info("reloading config", reason=reason)
            try:
                config = await asyncio.to_thread(self._load)
            except ConfigError as exc:
                return self._reload_failed([str(i) for i in exc.issues], "the new config is invalid")
            except OSError as exc:
                return self._reload_failed([f"{self.source.path}: {exc}"], "the config file cannot be read")
            try:
                graph = await build_graph(
                    config,
                    self.registry,
                    local_url=self._local_url,
                    clock=self.clock,
                    generation=self._generation + 1,
                    tunnel=self._tunnel,
                )
            except PatterdError as exc:
                return self._reload_failed([str(exc)], "the new providers could not be built")
            self._generation += 1
            for key in restart_only_changes(self.config, config):
                log.warning(f"{key} changed: takes effect after a restart")
            self.config = config
            if self.freeze_heap:
                heap.thaw()  # the graph being replaced must be collectable once its calls end
            await self.switchboard.swap_graph(graph)
            warn_about(graph)
            # A provider new in this config loads now, not at its first call.
            self._spawn(self._warm_up(graph))
            self.metrics.reloads.labels("ok").inc()
            self.notifier.ready(f"reloaded: generation {self._generation}")
            self.feed.publish("config.reloaded", {"generation": self._generation, "digest": config.digest})
            if self.worker is not None and reason == "api":
                reload_peers(self.notifier)  # the API reached one worker: the supervisor reloads the others
            log.info("config reloaded", generation=self._generation, agents=list(graph.agents))
            return ReloadResult(True, self._generation, message="reloaded")

    async def _warm_up(self, graph: Graph) -> None:
        await warm_up(graph)
        if self.freeze_heap and graph.generation == self._generation:  # (a newer reload freezes its own)
            heap.freeze(graph.generation)

    def _reload_failed(self, issues: list[str], message: str) -> ReloadResult:
        for issue in issues:
            log.error("config reload refused", issue=issue)
        self.metrics.reloads.labels("error").inc()
        self.metrics.config_errors.inc(len(issues))
        self.notifier.ready("reload failed; previous config still serving")
        return ReloadResult(False, self._generation, issues=issues, message=message)

    def _load(self) -> Config:
        if self.source.path is None:
            return load_config_text(self.source.text or "", self.registry, source="<built-in default>")
        return load_config(self.source.path, self.registry)

    # ------------------------------------------------------------------ events

    def _count_cost(self, call_id: str) -> None:
        # metadata only: no transcript copy at every call end
        self.metrics.count_cost(self.store.recent_metadata(call_id))

    def _redact_feed(self, data: dict[str, Any]) -> dict[str, Any]:
        return redact_call_data(data, self.config.logging.redact_phone)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
