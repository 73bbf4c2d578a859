"""Call records: the store observing call events, writing `<root>/calls/…` off the loop, and answering queries.

Layout and fields are contracts.md §4. Modules: `records` (a call in memory, from events),
`writer` (the one thread doing disk writes), `index` (SQLite index for listing), `hydrate`
(rebuild the index from the tree), `retention` (delete old days), `redact` (phone numbers).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from patterd import hash_key
from patterd.clock import SYSTEM_CLOCK, Clock, iso_ms
from patterd.cost import pricing_problems
from patterd.protocols.events import CallEvent, TranscriptLine, TranscriptPartial
from patterd.redact import check_mode
from patterd.store.hydrate import HydrateReport, Progress, hydrate_tree, read_jsonl, read_metadata
from patterd.store.index import INDEX_NAME, CallIndex, Row, decode_cursor, encode_cursor, row_of
from patterd.store.records import CallRecord, call_path, day_path
from patterd.store.retention import SWEEP_INTERVAL_SECS, sweep
from patterd.store.writer import EVENTS, METADATA, TRANSCRIPT, RecordWriter

__all__ = ["CallStore", "HydrateReport"]

log = structlog.get_logger(__name__)


def _resolver(future: concurrent.futures.Future[None]) -> Callable[[BaseException | None], None]:
    """The writer's `done` callback for one metadata write: resolves `future` once, from any thread."""

    def done(exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is None:
            future.set_result(None)
        else:
            future.set_exception(exc)

    return done


MAX_LIMIT = 1000
# Finished calls kept in memory: for late events (recordings) and detail before the disk caught
# up; without a root this is the whole call history of the process.
RECENT_WITH_ROOT = 500
RECENT_WITHOUT_ROOT = 10_000
# How long a carrier's answer waits for the call's first metadata.json to be durable. A disk slower
# than this (a hung NFS mount) must not fail calls: the answer goes out anyway and it is counted.
DURABLE_TIMEOUT_SECS = 2.0


@dataclass
class _Entry:
    record: CallRecord
    transcript: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    cached: dict[str, Any] | None = None
    # Resolved once the first metadata.json is durable (or failed): what a carrier's answer waits for.
    durable: concurrent.futures.Future[None] | None = None

    def metadata(self) -> dict[str, Any]:
        if self.cached is None:
            self.cached = self.record.metadata()
        return self.cached


class _InMemory:
    """Call ids this process holds (live or just finished): hydrate must not recover them."""

    def __init__(self, store: CallStore) -> None:
        self._store = store

    def __contains__(self, call_id: object) -> bool:
        with self._store._lock:
            return call_id in self._store._live or call_id in self._store._recent


def _sort_key(meta: Mapping[str, Any]) -> tuple[str, str]:
    return (str(meta["started_at"]), str(meta["call_id"]))


class CallStore:
    """Observer of call events that keeps call records, in memory and (with a root) on disk.

    `handle` runs on the event loop for every call event: it updates memory and enqueues disk
    writes for the writer thread, never blocks and never raises. `root=None` keeps records in
    memory only. Queries (`list_calls`, `get_call`, `live_calls`, `stats`) are thread-safe and
    fast (index lookups, at most one call's files read); `hydrate` and `sweep_retention` walk
    the tree and belong in a thread (`asyncio.to_thread`).
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
        problems = pricing_problems(pricing)
        if problems:
            raise ValueError("pricing: " + "; ".join(problems))
        if retention_days < 0:
            raise ValueError(f"retention_days is {retention_days}; expected 0 (keep forever) or more")
        self.root = Path(root).expanduser() if root is not None else None
        self.redact = check_mode(redact_phone)
        # hash_only hashes with the key kept beside these records (made on first use, never in other modes)
        hash_key.use_root(self.root)
        self.retention_days = retention_days
        self.pricing = pricing
        self.clock = clock
        self._lock = threading.Lock()
        self._live: dict[str, _Entry] = {}
        self._recent: OrderedDict[str, _Entry] = OrderedDict()
        self._max_recent = RECENT_WITH_ROOT if self.root else RECENT_WITHOUT_ROOT
        self._index_lock = threading.Lock()
        self._read_index: CallIndex | None = None
        self._write_index: CallIndex | None = None
        self._index_failed = False
        self._other_errors = 0
        self._bugs = 0
        self._slow_durable = 0
        # Index rows of written records not yet in the index (a hydrate held it): relpath → row.
        self._rows_lock = threading.Lock()
        self._pending_rows: dict[str, Row] = {}
        self.last_hydrate = HydrateReport()
        self.progress = Progress()  # of the running (or last) hydrate: /api/v1/status and listings show it
        self._writer = (
            RecordWriter(self.root / "calls", on_metadata=self._indexed) if self.root is not None else None
        )

    # ------------------------------------------------------------------ observer

    def handle(self, event: CallEvent) -> None:
        """Fold a call event into its record and queue the disk writes; never raises."""
        if type(event) is TranscriptPartial:  # live views only; the final TranscriptLine is the record
            return
        try:
            self._handle(event)
        except Exception:  # an observer must never break a call
            self._bugs += 1
            log.exception(
                "store_handle_failed",
                call_id=getattr(event, "call_id", "?"),
                type=getattr(event, "type", "?"),
            )

    def _handle(self, event: CallEvent) -> None:
        writer = self._writer
        with self._lock:
            entry = self._live.get(event.call_id) or self._recent.get(event.call_id)
            new = entry is None
            if entry is None:
                call_path(event.call_id, event.ts)  # a call_id that cannot name a directory stops here
                entry = _Entry(CallRecord.start(event, self.redact, self.pricing))
                self._live[event.call_id] = entry
            record = entry.record
            was_finished = record.finished
            rewrite = record.apply(event) and not new
            entry.cached = None
            relpath = record.relpath
            if new and writer is not None:
                entry.durable = concurrent.futures.Future()
                # first, so the directory is a record
                writer.write_metadata(relpath, entry.metadata(), done=_resolver(entry.durable))
            if isinstance(event, TranscriptLine):
                line = record.transcript_line(event)
                entry.transcript.append(line)
                if writer is not None:
                    writer.append(relpath, TRANSCRIPT, line)
            else:
                line = record.event_line(event)
                entry.events.append(line)
                if writer is not None:
                    writer.append(relpath, EVENTS, line)
            if rewrite and writer is not None:
                writer.write_metadata(relpath, entry.metadata())
            if record.finished and not was_finished:
                self._live.pop(event.call_id, None)
                self._recent[event.call_id] = entry
                while len(self._recent) > self._max_recent:
                    self._recent.popitem(last=False)
                if writer is not None:
                    writer.call_done(relpath)

    async def wait_durable(self, call_id: str, timeout: float = DURABLE_TIMEOUT_SECS) -> bool:
        """Wait until the call's first metadata.json is on disk (fsynced, renamed, directory fsynced).

        Await it before telling a carrier a call is answered: then a crash at any later instant
        cannot lose a call the carrier knows about. True when durable (or nothing to wait for:
        memory-only store, unknown call); False when the write failed or took longer than `timeout`
        (logged and counted: the call goes on, the disk must not fail it).
        """
        with self._lock:
            entry = self._live.get(call_id) or self._recent.get(call_id)
            durable = entry.durable if entry is not None else None
        if durable is None:
            return True
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(durable)), timeout)
        except TimeoutError:
            self._slow_durable += 1
            log.warning("store_record_not_durable_in_time", call_id=call_id, timeout_secs=timeout)
            return False
        except Exception as exc:  # the write failed: the writer logged and counted it
            log.warning("store_record_not_durable", call_id=call_id, error=str(exc))
            return False
        return True

    # ------------------------------------------------------------------ index plumbing

    def _index(self, *, write: bool) -> CallIndex | None:
        """The reader's or the writer's connection to the index, opened on first use."""
        if self.root is None or self._index_failed:
            return None
        with self._index_lock:
            current = self._write_index if write else self._read_index
            if current is not None:
                return current
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                opened = CallIndex(self.root / INDEX_NAME, verify=write)
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
                CallIndex.remove_files(self.root / INDEX_NAME)

    def _indexed(self, relpath: str, metadata: dict[str, Any], mtime_ns: int) -> None:
        """Writer thread: metadata.json landed, so index it (now, or with the next write if a hydrate is)."""
        with self._rows_lock:
            self._pending_rows[relpath] = row_of(relpath, metadata, mtime_ns)
        self._index_pending(wait=False)

    def _index_pending(self, *, wait: bool) -> None:
        """Write the rows waiting for the index. Without `wait`, a hydrate holding the index (a chunk
        of thousands of rows) leaves them for later: the writer thread, which the next call's answer
        waits on, must never queue behind it. Listings meanwhile show those calls from memory."""
        index = self._index(write=True)
        if index is None:
            return
        with self._rows_lock:
            rows = list(self._pending_rows.values())
            if not rows:
                return
            try:
                if wait:
                    index.upsert(rows)
                elif not index.try_upsert(rows):
                    return
            except sqlite3.Error as exc:
                self._other_errors += 1
                log.warning("store_index_write_failed", rows=len(rows), error=str(exc))
            self._pending_rows.clear()

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
            try:
                report = hydrate_tree(
                    self.root,
                    self._index(write=True),
                    now=self.clock.now(),
                    live=_InMemory(self),
                    progress=progress,
                )
            except sqlite3.DatabaseError as exc:  # corrupt beyond what opening noticed: start afresh
                log.warning(
                    "store_index_corrupt",
                    path=str(self.root / INDEX_NAME),
                    error=str(exc),
                    action="rebuilding",
                )
                self._drop_index()
                progress.loaded = 0
                report = hydrate_tree(
                    self.root,
                    self._index(write=True),
                    now=self.clock.now(),
                    live=_InMemory(self),
                    progress=progress,
                )
        finally:
            progress.loading = False
        self._index_pending(wait=True)  # rows of calls that ended while the hydrate held the index
        self.last_hydrate = report
        return report

    def stop_hydrate(self) -> None:
        """Ask a running hydrate to stop at its next record (shutdown); what it read so far stays indexed."""
        self.progress.stopping = True

    def history(self) -> dict[str, Any]:
        """How far loading the call history has got: {"loading", "loaded", "total"} (call directories)."""
        return self.progress.as_dict()

    def sweep_retention(self, now: datetime | None = None) -> int:
        """Delete day directories older than retention_days (blocking); the number deleted."""
        if self.root is None or self.retention_days <= 0:
            return 0
        with self._lock:
            keep = {day_path(e.record.started_at) for e in self._live.values()}
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
        writer_errors = self._writer.errors if self._writer is not None else 0
        return writer_errors + self._other_errors + self.last_hydrate.write_errors

    def live_calls(self) -> list[dict[str, Any]]:
        """Metadata of calls in progress, newest first."""
        with self._lock:
            metas = [e.metadata() for e in self._live.values()]
        return copy.deepcopy(sorted(metas, key=_sort_key, reverse=True))

    def list_calls(
        self,
        *,
        status: str | None = None,
        agent: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of call metadata, newest first, `since ≤ started_at < until`, and the next cursor.

        ValueError on a limit outside 1..1000 or a cursor that did not come from here.
        """
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit is {limit}; expected 1 to {MAX_LIMIT}")
        after = decode_cursor(cursor) if cursor else None
        lo = iso_ms(since) if since is not None else None
        hi = iso_ms(until) if until is not None else None

        def wanted(meta: Mapping[str, Any]) -> bool:
            started = str(meta["started_at"])
            name = meta["agent"].get("name") if isinstance(meta.get("agent"), dict) else None
            return (
                (status is None or meta.get("status") == status)
                and (agent is None or name == agent)
                and (lo is None or started >= lo)
                and (hi is None or started < hi)
                and (after is None or _sort_key(meta) < after)
            )

        with self._lock:
            entries = (*self._live.values(), *self._recent.values())
            mine = [m for m in self._renderable(entries) if wanted(m)]
        index = self._index(write=False)
        found: list[dict[str, Any]] = []
        if index is not None:
            try:
                found = index.query(
                    status=status, agent=agent, since=lo, until=hi, after=after, limit=limit + 1
                )
            except sqlite3.Error as exc:
                log.warning("store_index_query_failed", error=str(exc))
        merged = {m["call_id"]: m for m in found}
        merged.update((m["call_id"], m) for m in mine)  # this process's view is the freshest
        page = sorted(merged.values(), key=_sort_key, reverse=True)
        more = len(page) > limit
        # Memory dicts are shared with the writer: hand out copies. Index rows were parsed for this
        # call and are nobody else's; copying them too was ~40 % of a listing's time.
        shared = {id(m) for m in mine}
        page = [copy.deepcopy(m) if id(m) in shared else m for m in page[:limit]]
        return page, encode_cursor(*_sort_key(page[-1])) if more else None

    def _renderable(self, entries: Iterable[_Entry]) -> Iterator[dict[str, Any]]:
        """Metadata of in-memory calls; one that cannot be rendered is logged, counted and left out.

        A listing shows many calls: one broken record must never turn the whole page into a 500.
        """
        for entry in entries:
            try:
                yield entry.metadata()
            except Exception:
                self._bugs += 1
                log.exception("store_record_unlistable", call_id=entry.record.call_id)

    def recent_metadata(self, call_id: str) -> dict[str, Any] | None:
        """Metadata of a call still held in memory (live or just ended), without touching the disk."""
        with self._lock:
            entry = self._live.get(call_id) or self._recent.get(call_id)
            return copy.deepcopy(entry.metadata()) if entry is not None else None

    def get_call(self, call_id: str) -> dict[str, Any] | None:
        """{"metadata", "transcript", "events"} of a call, live or finished; None if unknown."""
        with self._lock:
            entry = self._live.get(call_id) or self._recent.get(call_id)
            if entry is not None:
                return copy.deepcopy(
                    {"metadata": entry.metadata(), "transcript": entry.transcript, "events": entry.events}
                )
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
        with self._lock:
            in_memory = len(self._live) + len(self._recent)
        return {
            "records": indexed if index is not None else in_memory,
            "live": len(self._live),
            "skipped_corrupt": self.last_hydrate.skipped_corrupt,
            "recovered_in_progress": self.last_hydrate.recovered_in_progress,
            "recovered_tmp": self.last_hydrate.recovered_tmp,
            "records_not_durable_in_time": self._slow_durable,
            "write_errors": self.write_errors,
            "handle_errors": self._bugs,
        }
