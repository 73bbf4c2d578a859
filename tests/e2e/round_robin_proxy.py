"""A round-robin TCP load balancer on loopback for tests: each new connection goes to the next ready replica.

It works like a cloud load balancer in front of a Deployment: bytes are piped as they are (HTTP and
websockets alike, no parsing beyond noting each connection's request line for the test's accounting),
a replica is taken out of the rotation when its `/readyz` stops answering 200 (polled every `health_every`
seconds; three probes in a row without an answer count as a failure) or a connection to it is refused, and
put back when `/readyz` answers 200 again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field

PIPE_CHUNK = 65536
HEALTH_TIMEOUT_SECS = 2.0
SILENT_PROBES_MAX = 3  # probes in a row without an answer before a replica leaves the rotation


@dataclass
class Backend:
    """One replica behind the proxy and what the proxy sent it."""

    name: str
    host: str
    port: int
    ready: bool = False
    silent: int = 0  # health probes in a row that timed out
    kinds: Counter[str] = field(default_factory=Counter)  # "METHOD /first/two" (path's start) -> connections


@dataclass
class Picked:
    """One balanced connection: where it went and what its first request was."""

    backend: str
    method: str
    path: str


class RoundRobinProxy:
    """`async with RoundRobinProxy([(name, host, port), ...]) as proxy:` then talk to `proxy.url`."""

    def __init__(self, backends: list[tuple[str, str, int]], *, health_every: float = 0.2) -> None:
        self.backends = [Backend(name, host, port) for name, host, port in backends]
        self.health_every = health_every
        self.picked: list[Picked] = []
        self.refused = 0  # connections no replica took
        self._next = 0
        self._server: asyncio.Server | None = None
        self._health: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self._conns: set[asyncio.Task[None]] = set()
        self.url = ""

    async def __aenter__(self) -> RoundRobinProxy:
        await self._check_all()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        self._health = asyncio.create_task(self._health_loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._health is not None:
            self._health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health
        if self._server is not None:
            self._server.close()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)

    def report(self) -> str:
        """What went where (for a failing test's output)."""
        rows = [f"{b.name}: ready={b.ready} {dict(b.kinds)}" for b in self.backends]
        return f"proxy: {len(self.picked)} connections, {self.refused} refused; " + "; ".join(rows)

    def backend(self, name: str) -> Backend:
        return next(b for b in self.backends if b.name == name)

    async def wait_ready(self, name: str, ready: bool = True, timeout: float = 15.0) -> None:
        """Until the proxy has `name` in (or, `ready=False`, out of) its rotation."""
        backend = self.backend(name)
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: backend.ready is ready), timeout)
            except TimeoutError:
                state = "ready" if ready else "out of rotation"
                raise AssertionError(f"proxy: {name} not {state} within {timeout} s") from None

    # ------------------------------------------------------------------ health

    async def _probe(self, backend: Backend) -> bool | None:
        """True: /readyz answered 200; False: another status or the connection refused; None: no answer yet."""
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_SECS):
                reader, writer = await asyncio.open_connection(backend.host, backend.port)
                try:
                    writer.write(
                        f"GET /readyz HTTP/1.1\r\nHost: {backend.host}:{backend.port}\r\n"
                        "Connection: close\r\n\r\n".encode()
                    )
                    status_line = await reader.readline()
                finally:
                    writer.close()
        except TimeoutError:
            return None
        except OSError:
            return False
        return status_line.split(b" ")[1:2] == [b"200"]

    async def _set(self, backend: Backend, ready: bool) -> None:
        if backend.ready is not ready:
            async with self._changed:
                backend.ready = ready
                self._changed.notify_all()

    async def _check_all(self) -> None:
        verdicts = await asyncio.gather(*(self._probe(b) for b in self.backends))
        for backend, ready in zip(self.backends, verdicts, strict=True):
            backend.silent = 0 if ready is not None else backend.silent + 1
            if ready is not None:
                await self._set(backend, ready)
            elif backend.silent >= SILENT_PROBES_MAX:  # a busy replica is slow, not gone, at first
                await self._set(backend, False)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_every)
            await self._check_all()

    # ------------------------------------------------------------------ connections

    async def _upstream(self) -> tuple[Backend, asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The next ready replica that accepts a connection (a refusal takes it out of the rotation)."""
        for _ in range(len(self.backends)):
            backend = self.backends[self._next % len(self.backends)]
            self._next += 1
            if not backend.ready:
                continue
            try:
                reader, writer = await asyncio.open_connection(backend.host, backend.port)
            except OSError:
                await self._set(backend, False)
                continue
            return backend, reader, writer
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._conns.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first_line = await reader.readline()  # the request line, forwarded as is
        except (OSError, ValueError):
            return
        if not first_line:
            return
        upstream = await self._upstream()
        if upstream is None:
            self.refused += 1
            return
        backend, up_reader, up_writer = upstream
        method, _, rest = first_line.decode("latin-1").partition(" ")
        path = rest.split(" ", 1)[0].split("?", 1)[0]
        backend.kinds[f"{method} {'/'.join(path.split('/')[:3])}"] += 1
        self.picked.append(Picked(backend.name, method, path))
        up_writer.write(first_line)
        pipes = [
            asyncio.ensure_future(_pipe(reader, up_writer)),
            asyncio.ensure_future(_pipe(up_reader, writer)),
        ]
        try:
            # Either side closing closes both at once, as a load balancer does: a replica's socket must not
            # linger half-open (FIN_WAIT2 holds its port, and a replica restarting there could not bind it).
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            up_writer.close()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy until EOF or error, then close the other side."""
    with contextlib.suppress(OSError, asyncio.IncompleteReadError, RuntimeError):
        while data := await src.read(PIPE_CHUNK):
            dst.write(data)
            await dst.drain()
    with contextlib.suppress(Exception):
        dst.close()
