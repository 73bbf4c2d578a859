"""The file backend of the record store: `<root>/calls/…` written off the loop, a SQLite index to list them.

Layout and fields are contracts.md §4. Modules: `writer` (the one thread doing disk writes),
`index` (SQLite index for listing), `hydrate` (rebuild the index from the tree), `retention`
(delete old days); the in-memory part every backend shares is `memory`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from patterd import hash_key
from patterd.clock import SYSTEM_CLOCK, Clock
from patterd.store.hydrate import HydrateReport, Progress, hydrate_tree, read_jsonl, read_metadata
from patterd.store.hydrate_proc import ChildFailed, HydrateChild, has_calls
from patterd.store.index import INDEX_NAME, CallIndex, Row, row_of
from patterd.store.locks import hydrate_turn, index_lock, turn_if_free
from patterd.store.memory import InMemory, MemoryStore, Query
from patterd.store.records import day_path
from patterd.store.retention import SWEEP_INTERVAL_SECS, sweep
from patterd.store.writer import EVENTS, METADATA, TRANSCRIPT, RecordWriter

log = structlog.get_logger(__name__)

# Finished calls kept in memory: for late events (recordings) and detail before the disk caught
# up; without a root this is the whole call history of the process.
RECENT_WITH_ROOT = 500
RECENT_WITHOUT_ROOT = 10_000
# A history of at least this many call directories is hydrated in a child process (hydrate_proc):
# below it, starting a Python process (~0.5 s of CPU) costs more than the parsing it moves.
PROCESS_MIN_RECORDS = 2000


class CallStore(MemoryStore):
    """Call records in memory and (with a root) on disk.

    `root=None` keeps records in memory only. Queries (`list_calls`, `get_call`, `live_calls`,
    `stats`) are thread-safe and fast (index lookups, at most one call's files read); `hydrate`
    and `sweep_retention` walk the tree and belong in a thread (`asyncio.to_thread`).
    """

    def __init__(
        self,
        root: Path | None,
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
            max_recent=RECENT_WITH_ROOT if root is not None else RECENT_WITHOUT_ROOT,
        )
        self.root = Path(root).expanduser() if root is not None else None
        # hash_only hashes with the key kept beside these records (made on first use, never in other modes)
        hash_key.use_root(self.root)
        self._index_lock = threading.Lock()
        self._read_index: CallIndex | None = None
        self._write_index: CallIndex | None = None
        self._index_failed = False
        # Index rows of written records not yet in the index (a hydrate held it): relpath → row.
        self._rows_lock = threading.Lock()
        self._pending_rows: dict[str, Row] = {}
        self._flusher: threading.Thread | None = None  # writes pending rows the writer could not
        self._turn_stop = threading.Event()  # set by stop_hydrate: stop waiting for the hydrate turn
        self.last_hydrate = HydrateReport()
        self.progress = Progress()  # of the running (or last) hydrate: /api/v1/status and listings show it
        self._child: HydrateChild | None = None  # the hydrate process while one runs
        self._writer = (
            RecordWriter(self.root / "calls", on_metadata=self._indexed) if self.root is not None else None
        )
        self._sink = self._writer

    # ------------------------------------------------------------------ index plumbing

    def _index(self, *, write: bool) -> CallIndex | None:
        """The reader's or the writer's connection to the index, opened on first use."""
        if self.root is None or self._index_failed:
            return None
        with self._index_lock:
            current = self._write_index if write else self._read_index
            if current is not None and current.replaced():
                # another worker replaced a corrupt index: this connection reads and writes a deleted file
                log.info("store_index_reopened", path=str(self.root / INDEX_NAME))
                current.close()
                current = None
            if current is not None:
                return current
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                opened = CallIndex(self.root / INDEX_NAME, verify=write)
            except sqlite3.OperationalError as exc:  # busy or locked: try again on the next use
                self._other_errors += 1
                log.warning("store_index_busy", path=str(self.root / INDEX_NAME), error=str(exc))
                return None
            except (OSError, sqlite3.Error) as exc:
                self._index_failed = True
                self._other_errors += 1
                log.warning("store_index_unavailable", path=str(self.root / INDEX_NAME), error=str(exc))
                return None
            if write:
                self._write_index = opened
            else:
                self._read_index = opened
            return opened

    def _drop_index(self) -> None:
        """Close both connections and delete the index files; the next use recreates them."""
        with self._index_lock:
            for index in (self._read_index, self._write_index):
                if index is not None:
                    index.close()
            self._read_index = self._write_index = None
            if self.root is not None:
                with index_lock(self.root / INDEX_NAME):
                    CallIndex.remove_files(self.root / INDEX_NAME)

    def _indexed(self, relpath: str, metadata: dict[str, Any], mtime_ns: int) -> None:
        """Writer thread: metadata.json landed, so index it (now, or soon by the flusher if a hydrate holds the index)."""
        with self._rows_lock:
            self._pending_rows[relpath] = row_of(relpath, metadata, mtime_ns)
        self._index_pending(wait=False)

    def _index_pending(self, *, wait: bool) -> None:
        """Write the rows waiting for the index. Without `wait` (the writer thread, which the next
        call's answer waits on) nothing queues behind a hydrate's chunk, ours or a hydrate process's:
        the rows go to the flusher thread, which writes them as soon as the index is free. Rows are
        never left waiting for a later write: the other workers list them from the index only.
        Order does not matter: the row of the newest metadata.json wins (CallIndex.upsert)."""
        # A hydrate process writes the index: SQLite would make the writer thread wait.
        if not wait and self._child is not None:
            self._kick_flusher()
            return
        index = self._index(write=True)
        if index is None:
            return
        with self._rows_lock:
            taken, self._pending_rows = self._pending_rows, {}
        if not taken:
            return
        rows = list(taken.values())
        try:
            if wait:
                index.upsert(rows)
            elif not index.try_upsert(rows):
                with self._rows_lock:
                    for relpath, row in taken.items():
                        self._pending_rows.setdefault(relpath, row)  # a newer row taken meanwhile stays
                self._kick_flusher()
        except sqlite3.Error as exc:
            self._other_errors += 1
            log.warning("store_index_write_failed", rows=len(rows), error=str(exc))

    def _kick_flusher(self) -> None:
        """Start the thread writing pending rows, waiting for the index, unless it runs already."""
        with self._rows_lock:
            if self._flusher is not None:
                return
            self._flusher = threading.Thread(target=self._flush_rows, name="patterd-index-flush", daemon=True)
            self._flusher.start()

    def _flush_rows(self) -> None:
        while True:
            usable = self._index(write=True) is not None
            self._index_pending(wait=True)
            with self._rows_lock:
                if not self._pending_rows or not usable:
                    self._flusher = None
                    return

    # ------------------------------------------------------------------ lifecycle

    def hydrate(self) -> HydrateReport:
        """Rebuild the index from the tree (blocking: run in a thread). Idempotent.

        Safe while calls run and listings are served: `progress` says how far it has got, and
        listings meanwhile answer from what the index holds (the newest days are loaded first).
        """
        if self.root is None:
            return self.last_hydrate
        self.progress = progress = Progress(loading=True, stopping=self.progress.stopping)
        try:
            # Workers sharing this root hydrate one after the other: two walks repairing the same
            # tree, one deleting rows the other is about to write, were a race (locks.py).
            with hydrate_turn(self.root, self._turn_stop) as turn:
                if not turn:  # stopped while another process hydrated
                    return self.last_hydrate
                try:
                    report = self._hydrate_once(progress)
                except sqlite3.OperationalError:
                    raise  # busy, not corrupt: the index stays, a restart retries
                except sqlite3.DatabaseError as exc:  # corrupt beyond what opening noticed: start afresh
                    log.warning(
                        "store_index_corrupt",
                        path=str(self.root / INDEX_NAME),
                        error=str(exc),
                        action="rebuilding",
                    )
                    self._drop_index()
                    progress.loaded = 0
                    report = self._hydrate_once(progress)
        finally:
            progress.loading = False
        self._index_pending(wait=True)  # rows of calls that ended while the hydrate held the index
        self.last_hydrate = report
        return report

    def _hydrate_once(self, progress: Progress) -> HydrateReport:
        """One hydrate: in a child process when the history is large (see hydrate_proc), else here."""
        assert self.root is not None
        index = self._index(write=True)  # opened here first: a stale or corrupt index is replaced once
        live = InMemory(self)
        if index is not None and has_calls(self.root / "calls", PROCESS_MIN_RECORDS):
            child = HydrateChild(self.root, now=self.clock.now(), live=live, progress=progress)
            self._child = child
            try:
                return child.run()
            except ChildFailed as exc:  # the tree is still there: load it here, as without processes
                log.warning("store_hydrate_process_failed", error=str(exc), action="hydrating in-process")
            finally:
                self._child = None
        return hydrate_tree(self.root, index, now=self.clock.now(), live=live, progress=progress)

    def stop_hydrate(self) -> None:
        """Ask a running hydrate to stop at its next record (shutdown); what it read so far stays indexed."""
        self.progress.stopping = True
        self._turn_stop.set()
        child = self._child
        if child is not None:
            child.stop()

    def history(self) -> dict[str, Any]:
        """How far loading the call history has got: {"loading", "loaded", "total"} (call directories)."""
        return self.progress.as_dict()

    def sweep_retention(self, now: datetime | None = None) -> int:
        """Delete day directories older than retention_days (blocking); the number deleted."""
        if self.root is None or self.retention_days <= 0:
            return 0
        with self._lock:
            keep = {day_path(e.record.started_at) for e in self._live.values()}
        with turn_if_free(self.root) as turn:
            if not turn:  # another worker hydrates or sweeps this root now: the next interval runs
                return 0
            deleted = sweep(
                self.root,
                self.retention_days,
                now or self.clock.now(),
                index=self._index(write=True),
                keep_days=keep,
            )
        if deleted:
            gone = set(deleted)
            with self._lock:
                for call_id in [c for c, e in self._recent.items() if day_path(e.record.started_at) in gone]:
                    del self._recent[call_id]
        return len(deleted)

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
        """Block until every queued write is on disk and indexed (shutdown, tests); False on timeout."""
        done = self._writer.flush(timeout) if self._writer is not None else True
        self._index_pending(wait=True)
        return done

    def close(self) -> None:
        """Write what is queued, stop the writer, close the index."""
        if self._writer is not None:
            self._writer.close()
        flusher = self._flusher
        if flusher is not None:
            flusher.join(30.0)
        self._index_pending(wait=True)
        with self._index_lock:
            for index in (self._read_index, self._write_index):
                if index is not None:
                    index.close()
            self._read_index = self._write_index = None
            self._index_failed = True  # closed for good

    # ------------------------------------------------------------------ queries

    @property
    def write_errors(self) -> int:
        """Failed disk/index writes so far (exported as patterd_store_errors_total)."""
        return super().write_errors + self.last_hydrate.write_errors

    def _stored_page(self, query: Query) -> list[dict[str, Any]]:
        index = self._index(write=False)
        if index is None:
            return []
        try:
            return index.query(
                status=query.status,
                agent=query.agent,
                since=query.since,
                until=query.until,
                after=query.after,
                limit=query.limit,
            )
        except sqlite3.Error as exc:
            log.warning("store_index_query_failed", error=str(exc))
            return []

    def _stored_call(self, call_id: str) -> dict[str, Any] | None:
        index = self._index(write=False)
        if index is None or self.root is None:
            return None
        try:
            hit = index.get(call_id)
        except sqlite3.Error as exc:
            log.warning("store_index_query_failed", error=str(exc))
            return None
        if hit is None:
            return None
        relpath, indexed = hit
        directory = self.root / "calls" / relpath
        return {
            "metadata": read_metadata(directory / METADATA, call_id) or indexed,
            "transcript": read_jsonl(directory / TRANSCRIPT),
            "events": read_jsonl(directory / EVENTS),
        }

    def stats(self) -> dict[str, int]:
        """Counters for /api/v1/status and metrics."""
        index = self._index(write=False)
        try:
            indexed = index.count() if index is not None else 0
        except sqlite3.Error:
            indexed = 0
        return {
            "records": indexed if index is not None else self.in_memory(),
            "skipped_corrupt": self.last_hydrate.skipped_corrupt,
            "recovered_in_progress": self.last_hydrate.recovered_in_progress,
            "recovered_tmp": self.last_hydrate.recovered_tmp,
            **self.memory_stats(),
        }
