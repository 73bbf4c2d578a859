"""The database goes away mid-call: the call goes on, errors are counted, and the rest is written on recovery."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from patterd.config.persist import DatabaseURL
from patterd.protocols.events import CallEnded, TranscriptLine
from patterd.store import open_store, postgres
from patterd.store.postgres import PostgresStore
from tests.services import postgres_url  # noqa: F401  (fixture)
from tests.store.helpers import T0, call_events


class Gate:
    """A loopback TCP relay to PostgreSQL that can go down (cut every connection, refuse new ones) and up."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.open = True
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def down(self) -> None:
        self.open = False
        for writer in list(self._writers):
            writer.transport.abort()

    async def close(self) -> None:
        self.down()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.transport.abort()  # like a server that is gone: the connection is reset
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers.update((writer, up_writer))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._writers.difference_update((writer, up_writer))


@pytest.fixture
async def gate(postgres_url: str) -> AsyncIterator[tuple[Gate, str]]:  # noqa: F811
    parts = urlsplit(postgres_url)
    relay = Gate(parts.hostname or "127.0.0.1", parts.port or 5432)
    await relay.start()
    netloc = parts.netloc.rpartition("@")[0] + f"@127.0.0.1:{relay.port}"
    yield relay, urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    await relay.close()


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_database_outage_mid_call(gate: tuple[Gate, str], postgres_url: str) -> None:  # noqa: F811
    relay, through_gate = gate
    store = open_store(DatabaseURL(through_gate))
    assert isinstance(store, PostgresStore)
    try:
        events = call_events("survivor", end=False)
        for event in events[:2]:
            store.handle(event)
        assert await store.wait_durable("survivor", timeout=10)

        relay.down()
        for event in events[2:]:
            store.handle(event)  # the call goes on: nothing raises, nothing waits
        await until(lambda: store.write_errors > 0)
        for event in call_events("during", T0 + timedelta(minutes=1))[:1]:
            store.handle(event)
        began = time.monotonic()
        assert not await store.wait_durable("during", timeout=0.3)  # the answer goes out anyway
        assert time.monotonic() - began < 2
        page, _ = await asyncio.to_thread(store.list_calls)  # from memory while the database is away
        assert [m["call_id"] for m in page] == ["during", "survivor"]
        # Queries run on the caller's thread: from a thread here, as the relay runs on this loop.
        stats = await asyncio.to_thread(store.stats)
        assert stats["database_up"] == 0 and stats["database_pending_writes"] > 0
        assert stats["write_errors"] > 0 and stats["records_not_durable_in_time"] == 1

        relay.open = True
        store.handle(TranscriptLine("survivor", T0 + timedelta(seconds=50), role="user", text="still here"))
        store.handle(CallEnded("survivor", T0 + timedelta(seconds=60), status="completed", reason="hangup"))
        assert await asyncio.to_thread(store.flush, 30)
        assert (await asyncio.to_thread(store.stats))["database_up"] == 1
    finally:
        await asyncio.to_thread(store.close)

    fresh = open_store(DatabaseURL(postgres_url))
    try:
        stored = await asyncio.to_thread(fresh.get_call, "survivor")
        assert stored is not None
        assert stored["metadata"]["status"] == "completed"
        assert [t["text"] for t in stored["transcript"]] == ["Hi there", "Hello!", "Your order", "still here"]
        assert [e["type"] for e in stored["events"]][-1] == "call_ended"
        assert [e["ts"] for e in stored["events"]] == sorted(e["ts"] for e in stored["events"])  # in order
        assert await asyncio.to_thread(fresh.get_call, "during") is not None
    finally:
        await asyncio.to_thread(fresh.close)


async def test_connections_terminated_by_the_server_are_replaced(postgres_url: str) -> None:  # noqa: F811
    store = open_store(DatabaseURL(postgres_url))
    events = call_events("kept")
    try:
        for event in events[:3]:
            store.handle(event)
        assert await asyncio.to_thread(store.flush, 10)
        conn = await asyncpg.connect(postgres_url)
        try:
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()
        assert killed >= 1
        for event in events[3:]:
            store.handle(event)
        assert await asyncio.to_thread(store.flush, 10)
        fresh = open_store(DatabaseURL(postgres_url))
        stored = await asyncio.to_thread(fresh.get_call, "kept")
        await asyncio.to_thread(fresh.close)
        assert stored is not None and stored["metadata"]["status"] == "completed"
        assert len(stored["transcript"]) + len(stored["events"]) == len(events)
    finally:
        await asyncio.to_thread(store.close)


async def test_a_database_that_never_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start, calls and shutdown all go on with the database unreachable from the first moment."""
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(postgres, "CLOSE_TIMEOUT_SECS", 0.5)
    store = open_store(DatabaseURL(f"postgresql://u:secret-pw@127.0.0.1:{port}/none"))
    assert isinstance(store, PostgresStore)
    report = await asyncio.to_thread(store.hydrate)
    assert report.records == 0
    for event in call_events("alone"):
        store.handle(event)
    assert not await store.wait_durable("alone", timeout=0.3)
    await until(lambda: store.write_errors > 0)
    page, _ = await asyncio.to_thread(store.list_calls)
    assert [m["call_id"] for m in page] == ["alone"]  # from memory
    began = time.monotonic()
    await asyncio.to_thread(store.close)
    assert time.monotonic() - began < 10
    stats = store.stats()
    assert stats["database_dropped_writes"] == len(call_events("alone")) + 3  # lines + metadata writes
    assert stats["database_up"] == 0
