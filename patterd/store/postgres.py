"""The PostgreSQL backend of the record store (`persist: postgresql://…`): every replica lists every call.

Records are the files' content in three tables (store.pg_schema). Writes go through one thread
(store.pg_writer) and never wait on the event loop; listings and a call's detail are SQL queries,
merged with this process's in-memory calls (the freshest view, and all there is while the
database is unreachable).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog

from patterd import hash_key
from patterd.clock import SYSTEM_CLOCK, Clock, iso_ms
from patterd.config.persist import DatabaseURL
from patterd.protocols.jsontext import loads
from patterd.redact import redact_urls
from patterd.store.hydrate import HydrateReport, Progress
from patterd.store.memory import MemoryStore, Query
from patterd.store.pg_schema import CLOSE_OPEN, COUNT, DELETE_OLDER, GET_CALL, call_row, list_sql, parse_ts
from patterd.store.pg_writer import PgWriter
from patterd.store.records import OPEN_STATUSES, closed_by_crash
from patterd.store.retention import SWEEP_INTERVAL_SECS, cutoff_day

log = structlog.get_logger(__name__)

RECENT = 500  # finished calls kept in memory (late events, detail before the commit)
QUERY_TIMEOUT_SECS = 2.0  # a listing waits this long for the database, then answers from memory
# While the database is unreachable a query is tried at most this often (each try can take up to
# the timeout, on the caller's thread).
PROBE_INTERVAL_SECS = 5.0
# `records` in /api/v1/status: count(*) scans a big table, so it is cached this long (other
# replicas' new calls show after it; this one's at once).
COUNT_CACHE_SECS = 5.0
CLOSE_TIMEOUT_SECS = 10.0  # at shutdown, queued records wait this long for an unreachable database


class PostgresStore(MemoryStore):
    """Call records in memory and in PostgreSQL; several daemons may share one database."""

    def __init__(
        self,
        url: DatabaseURL,
        *,
        redact_phone: str = "full",
        retention_days: int = 30,
        pricing: Mapping[str, Mapping[str, float]] = {},
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(
            redact_phone=redact_phone,
            retention_days=retention_days,
            pricing=pricing,
            clock=clock,
            max_recent=RECENT,
        )
        self.url = url
        # hash_only: a per-process key (no directory to keep the install's key in); see configuration.md
        hash_key.use_root(None)
        self._writer = PgWriter(url.url)
        self._sink = self._writer
        self.last_hydrate = HydrateReport()
        self.progress = Progress()
        self._count: tuple[float, int, int] | None = None  # (when, writer.new_calls then, count)
        self._query_errors = 0

    # ------------------------------------------------------------------ queries against the database

    def _query(self, make: Callable[[asyncpg.Pool], Any], what: str) -> Any:
        """Run a query on the writer's thread; None (logged, counted) when the database does not answer."""
        writer = self._writer
        if writer.down and time.monotonic() - writer.last_failure < PROBE_INTERVAL_SECS:
            return None
        try:
            return writer.run(make, QUERY_TIMEOUT_SECS)
        except (Exception, TimeoutError) as exc:
            self._query_errors += 1
            writer.down, writer.last_failure = True, time.monotonic()
            log.warning(
                "store_db_query_failed", query=what, error=redact_urls(f"{type(exc).__name__}: {exc}")
            )
            return None

    def _stored_page(self, query: Query) -> list[dict[str, Any]]:
        sql, args = list_sql(query)  # a bad cursor raises ValueError here, before any I/O

        async def fetch(pool: asyncpg.Pool) -> list[str]:
            return [r[0] for r in await pool.fetch(sql, *args)]

        rows = self._query(fetch, "list")
        return [loads(text) for text in rows or ()]

    def _stored_call(self, call_id: str) -> dict[str, Any] | None:
        async def fetch(pool: asyncpg.Pool) -> tuple[str, str, str] | None:
            row = await pool.fetchrow(GET_CALL, call_id)
            return None if row is None else (row[0], row[1], row[2])

        found = self._query(fetch, "get")
        if found is None:
            return None
        meta, transcript, events = found
        return {"metadata": loads(meta), "transcript": loads(transcript), "events": loads(events)}

    def _stored_count(self) -> int | None:
        now, new_calls = time.monotonic(), self._writer.new_calls
        cached = self._count
        if cached is not None and now - cached[0] < COUNT_CACHE_SECS and cached[1] == new_calls:
            return cached[2]

        async def fetch(pool: asyncpg.Pool) -> int:
            return int(await pool.fetchval(COUNT))

        counted = self._query(fetch, "count")
        if counted is not None:
            self._count = (now, new_calls, counted)
        return counted if counted is not None else (cached[2] if cached else None)

    # ------------------------------------------------------------------ lifecycle

    def hydrate(self) -> HydrateReport:
        """Connect, create the schema if missing, and count the stored calls (blocking: run in a thread).

        Nothing is read into memory: listings are queries. Records another daemon left open stay
        open here (a replica cannot tell a crashed peer's call from a live one).
        """
        began = time.perf_counter()
        self.progress = progress = Progress(loading=True, stopping=self.progress.stopping)
        try:
            self._count = None
            counted = self._stored_count()
        finally:
            progress.loading = False
        report = HydrateReport(records=counted or 0, seconds=round(time.perf_counter() - began, 3))
        progress.total = progress.loaded = report.records
        self.last_hydrate = report
        log.info(
            "store_hydrated", backend="postgresql", records=report.records, reachable=counted is not None
        )
        return report

    def recover_orphans(self, call_ids: Iterable[str]) -> int:
        """Close as `failed` the open records of calls whose daemon is gone (blocking); the number closed.

        For the cluster layer, which knows when a replica died: its calls' records are closed like a
        crash the file store finds at start (contracts §4: "daemon stopped during call"). Calls this
        process holds, and records closed meanwhile by their own daemon, are left alone.
        """
        with self._lock:
            wanted = [c for c in dict.fromkeys(call_ids) if c not in self._live and c not in self._recent]
        now = self.clock.now()
        closed = 0
        for call_id in wanted:
            stored = self._stored_call(call_id)
            if stored is None or stored["metadata"].get("status") not in OPEN_STATUSES:
                continue
            meta = closed_by_crash(stored["metadata"], stored["transcript"], stored["events"], now)
            row = call_row(meta)
            args = (call_id, parse_ts(meta["ended_at"]), meta["status"], row[-1], sorted(OPEN_STATUSES))

            async def close(pool: asyncpg.Pool, args: tuple[Any, ...] = args) -> str:
                return str(await pool.execute(CLOSE_OPEN, *args))

            if self._query(close, "recover") == "UPDATE 1":
                closed += 1
                log.warning("store_orphan_recovered", call_id=call_id, ended_at=meta["ended_at"])
        return closed

    def stop_hydrate(self) -> None:
        self.progress.stopping = True

    def history(self) -> dict[str, Any]:
        return self.progress.as_dict()

    def sweep_retention(self, now: datetime | None = None) -> int:
        """DELETE calls (and their lines) started before the retention cutoff day; the number deleted."""
        if self.retention_days <= 0:
            return 0
        day = cutoff_day(now or self.clock.now(), self.retention_days)
        cutoff = datetime(day.year, day.month, day.day, tzinfo=UTC)
        with self._lock:
            live = list(self._live)

        async def delete(pool: asyncpg.Pool) -> int:
            status = await pool.execute(DELETE_OLDER, cutoff, live)
            return int(status.rsplit(" ", 1)[-1])  # "DELETE 12"

        deleted = self._query(delete, "retention") or 0
        if deleted:
            stamp = iso_ms(cutoff)
            with self._lock:
                for call_id in [c for c, e in self._recent.items() if e.metadata()["started_at"] < stamp]:
                    del self._recent[call_id]
            self._count = None
            log.info("store_retention_swept", backend="postgresql", calls=deleted)
        return deleted

    async def run_retention_loop(
        self, interval_secs: float = SWEEP_INTERVAL_SECS, *, on_sweep: Callable[[int], None] | None = None
    ) -> None:
        """Sweep now and every `interval_secs`, in a thread, until cancelled."""
        while True:
            try:
                deleted = await asyncio.to_thread(self.sweep_retention)
            except Exception:  # a failed sweep is retried next interval
                log.exception("store_retention_failed")
                deleted = 0
            if on_sweep is not None:
                on_sweep(deleted)
            await asyncio.sleep(interval_secs)

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every queued write is committed (shutdown, tests); False on timeout."""
        return self._writer.flush(timeout)

    def close(self) -> None:
        """Commit what is queued (for a while, if the database is down), then close the connections."""
        self._writer.close(CLOSE_TIMEOUT_SECS)

    # ------------------------------------------------------------------ status

    def stats(self) -> dict[str, int]:
        """Counters for /api/v1/status and metrics."""
        counted = self._stored_count()
        return {
            "records": counted if counted is not None else self.in_memory(),
            "skipped_corrupt": 0,
            "recovered_in_progress": 0,
            "recovered_tmp": 0,
            **self.memory_stats(),
            "database_up": 0 if self._writer.down else 1,
            "database_pending_writes": self._writer.pending,
            "database_dropped_writes": self._writer.dropped,
            "database_query_errors": self._query_errors,
        }
