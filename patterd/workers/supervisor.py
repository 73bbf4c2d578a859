"""The supervisor of `server.workers: N`: starts N worker daemons on one port and owns the lifecycle.

One READY=1 to systemd once every worker is serving; SIGHUP fans out to every worker; SIGTERM/SIGINT
drain every worker and the supervisor exits when the last one has; a worker that dies is replaced
(same listening socket, fresh process) while the others and their calls carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import structlog
from prometheus_client import multiprocess

from patterd.listen import inherited_fd, open_socket
from patterd.sdnotify import Notifier
from patterd.workers.identity import (
    MULTIPROC_ENV,
    PARENT_FD_ENV,
    RELOAD_PEERS,
    RUN_DIR_ENV,
    SECRET_ENV,
    WORKER_ENV,
    WORKERS_ENV,
)
from patterd.workers.notify_hub import NotifyHub

log = structlog.get_logger("patterd.workers")

RESTART_BACKOFF_SECS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # a worker that keeps dying is restarted ever slower
STABLE_SECS = 30.0  # a worker that served this long resets its backoff


@dataclass
class Worker:
    """One worker slot: its index, its listening socket, the process filling it now."""

    index: int
    sock: socket.socket
    proc: asyncio.subprocess.Process | None = None
    ready: bool = False
    failures: int = 0
    started: float = 0.0
    pids: list[int] = field(default_factory=list)  # every pid this slot has had (the last is current)


@dataclass(frozen=True)
class WorkerCommand:
    """How to start a worker: the `patterd run` arguments and the extra environment."""

    args: list[str]
    env: dict[str, str]


class Supervisor:
    """N worker processes, one lifecycle."""

    def __init__(
        self,
        command: WorkerCommand,
        sockets: list[socket.socket],
        *,
        count: int,
        run_dir: Path,
        url: str,
        note: str = "",
        stdout: IO[str] = sys.stdout,
    ) -> None:
        self.command = command
        self.run_dir = run_dir
        self.metrics_dir = run_dir / "metrics"
        self.metrics_dir.mkdir(exist_ok=True)
        self.url = url
        self.note = note
        self.stdout = stdout
        self.notifier = Notifier()
        # Shared inherited socket (fd://, socket activation): every worker gets it; else one SO_REUSEPORT socket each.
        self.workers = [Worker(i + 1, sockets[min(i, len(sockets) - 1)]) for i in range(count)]
        self._parent_read, self._parent_write = os.pipe()  # workers hold the read end; EOF = supervisor gone
        self.hub = NotifyHub(run_dir / "notify.sock", self._on_message)
        self._announced = False
        self._reloading: set[int] = set()
        self._draining = False
        self._exit_code = 0
        self._done = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ run

    async def run(self) -> int:
        """Run until every worker has stopped; the exit code (0, or the first failing worker's)."""
        loop = asyncio.get_running_loop()
        self.hub.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        log.info("starting workers", workers=len(self.workers), run_dir=str(self.run_dir))
        try:
            for worker in self.workers:
                await self._spawn(worker)
                self._tasks.append(asyncio.create_task(self._watch(worker)))
            await asyncio.gather(*self._tasks)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            self.hub.close()
            os.close(self._parent_write)
            os.close(self._parent_read)
        log.info("stopped", code=self._exit_code)
        return self._exit_code

    async def _spawn(self, worker: Worker) -> None:
        env = {
            **os.environ,
            **self.command.env,
            WORKER_ENV: str(worker.index),
            WORKERS_ENV: str(len(self.workers)),
            RUN_DIR_ENV: str(self.run_dir),
            PARENT_FD_ENV: str(self._parent_read),
            MULTIPROC_ENV: str(self.metrics_dir),
            "NOTIFY_SOCKET": str(self.hub.path),
        }
        for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(key, None)  # meant for the supervisor only
        fd = worker.sock.fileno()
        worker.ready = False
        worker.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "patterd",
            "run",
            *self.command.args,
            "--bind",
            f"fd://{fd}",
            env=env,
            pass_fds=(fd, self._parent_read),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # the one "patterd dashboard: URL" line is the supervisor's
            process_group=0,  # a terminal's Ctrl-C reaches the supervisor only; it forwards one signal
        )
        worker.started = asyncio.get_running_loop().time()
        worker.pids.append(worker.proc.pid)
        log.info("worker started", worker=worker.index, pid=worker.proc.pid)

    async def _watch(self, worker: Worker) -> None:
        """Wait for the worker's exit; replace it unless the supervisor is stopping."""
        loop = asyncio.get_running_loop()
        while True:
            assert worker.proc is not None
            code = await worker.proc.wait()
            pid = worker.proc.pid
            worker.ready = False
            self._reloading.discard(pid)
            with contextlib.suppress(OSError):
                multiprocess.mark_process_dead(pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]
            if self._draining:
                log.info("worker stopped", worker=worker.index, pid=pid, code=code)
                if code != 0 and self._exit_code == 0:
                    self._exit_code = code if code > 0 else 1
                return
            if not self._announced:  # a worker that cannot start (config, port): the whole service cannot
                log.error("worker failed to start", worker=worker.index, pid=pid, code=code)
                self._exit_code = code if code > 0 else 1
                self._begin_stop(signal.SIGTERM)
                return
            served = loop.time() - worker.started
            worker.failures = 0 if served >= STABLE_SECS else worker.failures + 1
            delay = RESTART_BACKOFF_SECS[min(worker.failures, len(RESTART_BACKOFF_SECS) - 1)]
            log.warning(
                "worker died; replacing it", worker=worker.index, pid=pid, code=code, restart_in=delay
            )
            stopping = asyncio.create_task(self._done.wait())
            await asyncio.wait({stopping}, timeout=delay)
            stopping.cancel()
            if self._draining:
                return
            await self._spawn(worker)

    # ------------------------------------------------------------------ messages from workers

    def _worker_by_pid(self, pid: int) -> Worker | None:
        return next((w for w in self.workers if w.proc is not None and w.proc.pid == pid), None)

    def _on_message(self, pid: int, fields: dict[str, str]) -> None:
        worker = self._worker_by_pid(pid)
        if worker is None:
            log.debug("notify message from an unknown process", pid=pid, fields=sorted(fields))
            return
        if fields.get("READY") == "1":
            self._on_ready(worker, pid)
        if RELOAD_PEERS.partition("=")[0] in fields:
            # Reloaded through the API on one worker: every other one reloads too.
            for other in self.workers:
                if other is not worker:
                    self._signal(other, signal.SIGHUP)

    def _on_ready(self, worker: Worker, pid: int) -> None:
        first = not worker.ready
        worker.ready = True
        if not self._announced:
            if all(w.ready for w in self.workers):
                self._announced = True
                print(f"patterd dashboard: {self.url}/{self.note}", file=self.stdout, flush=True)
                self.notifier.ready(f"serving with {len(self.workers)} workers")
                log.info("serving", url=self.url, workers=len(self.workers))
            return
        if pid in self._reloading:
            self._reloading.discard(pid)
            if not self._reloading:
                self.notifier.ready(f"reloaded: {len(self.workers)} workers")
        elif first and not self._draining:
            log.info("worker replaced", worker=worker.index, pid=pid)
            self.notifier.status(f"worker {worker.index} replaced (pid {pid})")

    # ------------------------------------------------------------------ signals

    def reload(self) -> None:
        """SIGHUP: every worker reloads its config (each keeps its calls)."""
        if self._draining:
            return
        log.info("reloading every worker")
        self.notifier.reloading()
        self._reloading = {w.proc.pid for w in self.workers if w.proc is not None and w.ready}
        for worker in self.workers:
            self._signal(worker, signal.SIGHUP)

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        if self._draining:
            if sig == signal.SIGINT:  # a second Ctrl-C: every worker stops at once
                for worker in self.workers:
                    self._signal(worker, sig)
            return
        log.info("stop requested", signal=sig.name)
        self._begin_stop(sig)

    def _begin_stop(self, sig: signal.Signals) -> None:
        self._draining = True
        self._done.set()
        self.notifier.stopping("draining every worker")
        for worker in self.workers:
            self._signal(worker, sig)

    def _signal(self, worker: Worker, sig: signal.Signals) -> None:
        if worker.proc is not None and worker.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(sig)


def listening_sockets(bind: str | None, host: str, port: int, count: int) -> list[socket.socket]:
    """One inherited socket shared by every worker, or `count` SO_REUSEPORT sockets on one address."""
    first = open_socket(bind, host, port, reuse_port=True)
    if inherited_fd(bind) is not None:
        return [first]  # fd:// or socket activation: the workers share it (the kernel hands out accepts)
    bound_host, bound_port = first.getsockname()[:2]
    address = f"[{bound_host}]:{bound_port}" if ":" in str(bound_host) else f"{bound_host}:{bound_port}"
    # port 0 picked a free port for the first: the others join that one
    return [first, *(open_socket(address, host, port, reuse_port=True) for _ in range(count - 1))]


def run_supervisor(
    args: list[str],
    *,
    count: int,
    bind: str | None,
    host: str,
    port: int,
    note: str = "",
    secret_configured: bool = False,
    stdout: IO[str] = sys.stdout,
) -> int:
    """Bind, start `count` workers running `patterd run ARGS`, supervise them to the end; the exit code."""
    from patterd.listen import local_url, raise_fd_limit

    raise_fd_limit()
    sockets = listening_sockets(bind, host, port, count)
    _host, url = local_url(sockets[0])
    run_dir = Path(tempfile.mkdtemp(prefix="patterd-"))  # 0700: sockets and metrics files are ours alone
    env: dict[str, str] = {}
    if not os.environ.get(SECRET_ENV) and not secret_configured:
        # Call tokens signed by one worker must verify on every other: one secret for all of them.
        env[SECRET_ENV] = secrets.token_urlsafe(32)
    try:
        supervisor = Supervisor(
            WorkerCommand(args, env), sockets, count=count, run_dir=run_dir, url=url, note=note, stdout=stdout
        )
        return asyncio.run(supervisor.run())
    finally:
        for sock in sockets:
            sock.close()
        shutil.rmtree(run_dir, ignore_errors=True)
