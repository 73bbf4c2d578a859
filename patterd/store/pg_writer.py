"""The thread that owns the PostgreSQL connections: writes records in order, retries through outages, runs queries.

asyncpg is asynchronous, the store's callers are not all on one loop: this thread runs its own
event loop, so writes never touch the daemon's loop and a slow or absent database never blocks a
call. Writes are batched (one transaction per batch) and retried with backoff in order until they
commit; the queue is bounded, so an outage longer than it can hold drops (and counts) the excess.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import structlog

from patterd.redact import redact_urls
from patterd.store.pg_schema import (
    DDL,
    INSERT_LINE,
    NEXT_SEQ,
    SCHEMA_LOCK,
    SCHEMA_VERSION,
    UPSERT_CALL,
    call_row,
    jsonb_text,
)
from patterd.store.writer import TRANSCRIPT, OnDone

log = structlog.get_logger(__name__)

T = TypeVar("T")

MAX_BATCH = 500  # ops per transaction
MAX_PENDING = 200_000  # ops held through an outage; beyond, new ones are dropped and counted
RETRY_MIN_SECS = 0.05
RETRY_MAX_SECS = 5.0
CONNECT_TIMEOUT_SECS = 5.0
COMMAND_TIMEOUT_SECS = 30.0
MAX_SEQ_CACHE = 20_000  # calls whose next line numbers are remembered (late recordings)
# Errors of the connection or the server's state: the same batch is retried. Anything else is the
# data's fault (or a bug): retrying would jam every call behind it, so ops are tried one by one.
TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.TransactionRollbackError,
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,
    asyncpg.exceptions.InvalidCatalogNameError,
)


@dataclass(frozen=True, slots=True)
class _Meta:
    call_id: str
    metadata: dict[str, Any]
    done: OnDone | None


@dataclass(frozen=True, slots=True)
class _Line:
    call_id: str
    table: str
    obj: dict[str, Any]


_Op = _Meta | _Line


def _call_id(relpath: str) -> str:
    return relpath.rsplit("/", 1)[-1]


class PgWriter:
    """A `RecordSink` writing to PostgreSQL from its own thread and loop; also runs the store's queries."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self.errors = 0
        self.dropped = 0
        self.new_calls = 0  # first records committed: a cached count of calls is stale after one
        self.down = False  # the last attempt to reach the database failed
        self.last_failure = 0.0  # time.monotonic() of it
        self._cond = threading.Condition()
        self._ops: deque[_Op] = deque()
        self._submitted = 0
        self._processed = 0
        self._idle = False
        self._closing = False
        self._schema_ready = False
        self._seq: dict[tuple[str, str], int] = {}
        self._pool: asyncpg.Pool | None = None
        self._loop = asyncio.new_event_loop()
        self._wake: asyncio.Event | None = None
        self._setup: asyncio.Lock | None = None
        self._stopping: asyncio.Event | None = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), name="store-postgres", daemon=True)
        self._thread.start()
        started.wait()

    # ------------------------------------------------------------------ the sink (any thread)

    def write_metadata(self, relpath: str, metadata: dict[str, Any], done: OnDone | None = None) -> None:
        self._put(_Meta(_call_id(relpath), metadata, done))

    def append(self, relpath: str, filename: str, obj: dict[str, Any]) -> None:
        self._put(
            _Line(_call_id(relpath), "transcript_lines" if filename == TRANSCRIPT else "call_events", obj)
        )

    def call_done(self, relpath: str) -> None:
        """Nothing to close: each batch is its own transaction."""

    def _put(self, op: _Op) -> None:
        with self._cond:
            if self._closing or len(self._ops) >= MAX_PENDING:
                self._drop(op, "closed" if self._closing else "queue full")
                return
            self._ops.append(op)
            self._submitted += 1
            wake = self._idle
            self._idle = False
        if wake:
            self._loop.call_soon_threadsafe(self._set_wake)

    def _drop(self, op: _Op, why: str) -> None:
        self.dropped += 1
        self.errors += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.warning("store_db_write_dropped", reason=why, dropped=self.dropped, pending=len(self._ops))
        if isinstance(op, _Meta) and op.done is not None:
            op.done(RuntimeError(f"record not written to the database: {why}"))

    def _set_wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _stop_now(self) -> None:
        """On the thread's loop: end the wait for work or for the next retry (close)."""
        self._set_wake()
        if self._stopping is not None:
            self._stopping.set()

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every op queued so far is committed (or dropped); False on timeout."""
        with self._cond:
            target = self._submitted
            return self._cond.wait_for(lambda: self._processed >= target, timeout)

    @property
    def pending(self) -> int:
        with self._cond:
            return self._submitted - self._processed

    def run(self, make: Callable[[asyncpg.Pool], Awaitable[T]], timeout: float) -> T:
        """Run a query coroutine on this thread's loop and wait for it (from another thread)."""

        if self._loop.is_closed():
            raise RuntimeError("the record store is closed")

        async def go() -> T:
            return await make(await self._ready_pool())

        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(go(), timeout), self._loop)
        return future.result(timeout + 1.0)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (for up to `timeout`), then close the connections and stop the thread."""
        if not self._thread.is_alive():
            return
        if not self.flush(timeout):
            log.warning("store_db_unwritten_at_close", ops=self.pending)
        with self._cond:
            self._closing = True
        self._loop.call_soon_threadsafe(self._stop_now)
        self._thread.join(timeout + 5.0)

    # ------------------------------------------------------------------ the thread

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._wake = asyncio.Event()
        self._setup = asyncio.Lock()
        self._stopping = asyncio.Event()
        started.set()
        try:
            self._loop.run_until_complete(self._consume())
        finally:
            if self._pool is not None:
                try:
                    self._loop.run_until_complete(asyncio.wait_for(self._pool.close(), 5.0))
                except Exception:  # a dead server: drop the connections without the goodbye
                    self._pool.terminate()
            self._loop.close()

    async def _ready_pool(self) -> asyncpg.Pool:
        """The pool, schema ensured; raises a TRANSIENT error while the database is unreachable."""
        if self._pool is not None and self._schema_ready:
            return self._pool
        assert self._setup is not None
        async with self._setup:  # the writer and a query may both be first
            if self._pool is None:
                pool = asyncpg.create_pool(
                    self._dsn,
                    min_size=0,
                    max_size=4,
                    timeout=CONNECT_TIMEOUT_SECS,
                    command_timeout=COMMAND_TIMEOUT_SECS,
                )
                await pool
                self._pool = pool
            if not self._schema_ready:
                await self._create_schema(self._pool)
        return self._pool

    async def _create_schema(self, pool: asyncpg.Pool) -> None:
        """Create the tables if missing (idempotent; replicas starting together take turns)."""
        async with pool.acquire(timeout=CONNECT_TIMEOUT_SECS) as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
            await conn.execute(DDL)
            found = await conn.fetchval("SELECT value FROM patterd_schema WHERE key = 'version'")
            if found is None:
                await conn.execute("INSERT INTO patterd_schema VALUES ('version', $1)", str(SCHEMA_VERSION))
            elif found != str(SCHEMA_VERSION):
                log.warning("store_db_schema_version", found=found, expected=SCHEMA_VERSION)
        self._schema_ready = True

    async def _consume(self) -> None:
        assert self._wake is not None
        while True:
            with self._cond:
                batch = [self._ops.popleft() for _ in range(min(MAX_BATCH, len(self._ops)))]
                if not batch:
                    if self._closing:
                        return
                    self._idle = True
                    self._wake.clear()
            if not batch:
                await self._wake.wait()
                continue
            await self._write_until_done(batch)

    async def _write_until_done(self, batch: list[_Op]) -> None:
        """Commit `batch`, retrying through outages; ops the database refuses are dropped one by one."""
        delay = RETRY_MIN_SECS
        while True:
            try:
                pool = await self._ready_pool()
                async with pool.acquire(timeout=CONNECT_TIMEOUT_SECS) as conn:
                    seq = await self._write(conn, batch)
                break
            except TRANSIENT as exc:
                self._failed(exc, len(batch), delay)
                if self._closing:  # close() already waited its timeout for the database
                    with self._cond:
                        batch.extend(self._ops)
                        self._ops.clear()
                    for op in batch:
                        self._drop(op, "closed while the database was unreachable")
                    self._done(batch, None, notify=False)
                    return
                assert self._stopping is not None
                with contextlib.suppress(TimeoutError):  # a close ends the wait at once
                    await asyncio.wait_for(self._stopping.wait(), delay)
                delay = min(delay * 2, RETRY_MAX_SECS)
            except Exception as exc:  # refused data or a bug: isolate the op(s) at fault
                log.warning("store_db_batch_refused", ops=len(batch), error=redact_urls(str(exc)))
                await self._one_by_one(batch)
                return
        if self.down:
            log.info("store_db_reachable_again", pending=self.pending)
        self.down = False
        self._seq.update(seq)
        while len(self._seq) > MAX_SEQ_CACHE:
            self._seq.pop(next(iter(self._seq)))
        self._done(batch, None)

    def _failed(self, exc: BaseException, ops: int, retry_in: float) -> None:
        self.errors += 1
        if not self.down or self.errors % 100 == 0:
            log.warning(
                "store_db_write_failed",
                ops=ops,
                error=redact_urls(f"{type(exc).__name__}: {exc}"),
                retry_in_secs=retry_in,
            )
        self.down = True
        self.last_failure = time.monotonic()

    async def _one_by_one(self, batch: list[_Op]) -> None:
        for op in batch:
            try:
                pool = await self._ready_pool()
                async with pool.acquire(timeout=CONNECT_TIMEOUT_SECS) as conn:
                    seq = await self._write(conn, [op])
                self._seq.update(seq)
                self._done([op], None)
            except Exception as exc:
                self.errors += 1
                log.warning("store_db_record_refused", call_id=op.call_id, error=redact_urls(str(exc)))
                self._done([op], exc)

    def _done(self, batch: list[_Op], exc: BaseException | None, *, notify: bool = True) -> None:
        if notify:
            for op in batch:
                if isinstance(op, _Meta) and op.done is not None:
                    self.new_calls += exc is None
                    op.done(exc)
        with self._cond:
            self._processed += len(batch)
            self._cond.notify_all()

    async def _write(self, conn: asyncpg.Connection, batch: list[_Op]) -> dict[tuple[str, str], int]:
        """One transaction: the calls' latest metadata, then their lines in order; the next seq numbers."""
        metas: dict[str, tuple[Any, ...]] = {}
        lines: dict[str, list[tuple[str, int, str]]] = {"transcript_lines": [], "call_events": []}
        unknown: dict[str, set[str]] = {table: set() for table in lines}
        for op in batch:
            if isinstance(op, _Meta):
                metas[op.call_id] = call_row(op.metadata)
            elif (op.table, op.call_id) not in self._seq:
                unknown[op.table].add(op.call_id)
        async with conn.transaction():
            if metas:
                await conn.executemany(UPSERT_CALL, list(metas.values()))
            # Lines of a call this writer has not numbered yet continue after what is stored: a
            # call may have begun on another replica (its webhook there, its media here).
            seq: dict[tuple[str, str], int] = {}
            for table, call_ids in unknown.items():
                if call_ids:
                    found = dict(await conn.fetch(NEXT_SEQ[table], list(call_ids)))
                    seq.update(((table, c), int(found.get(c, 0))) for c in call_ids)
            for op in batch:
                if isinstance(op, _Line):
                    key = (op.table, op.call_id)
                    if key not in seq:
                        seq[key] = self._seq[key]
                    lines[op.table].append((op.call_id, seq[key], jsonb_text(op.obj)))
                    seq[key] += 1
            for table, rows in lines.items():
                if rows:
                    await conn.executemany(INSERT_LINE[table], rows)
        return seq
