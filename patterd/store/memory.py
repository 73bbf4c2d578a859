"""The part of every record store that lives in memory: calls folded from events, handed to a sink to persist.

A backend (files: `store.files`, PostgreSQL: `store.postgres`) subclasses `MemoryStore`, gives it a
`RecordSink` (the thread that persists records) and answers the two durable lookups: a page of
stored metadata and one stored call. Listings merge this process's calls (the freshest view) with
the stored ones.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import structlog

from patterd.clock import SYSTEM_CLOCK, Clock, iso_ms
from patterd.cost import pricing_problems
from patterd.protocols.events import CallEvent, TranscriptLine, TranscriptPartial, TurnHeard
from patterd.redact import check_mode
from patterd.store.index import decode_cursor, encode_cursor
from patterd.store.records import CallRecord, call_path, heard_on_line, with_late_reports
from patterd.store.resume import resumed_record
from patterd.store.writer import EVENTS, TRANSCRIPT, OnDone

log = structlog.get_logger(__name__)

MAX_LIMIT = 1000
# How long a carrier's answer waits for the call's first metadata to be durable. A store slower
# than this (a hung NFS mount, a database failing over) must not fail calls: the answer goes out
# anyway and it is counted.
DURABLE_TIMEOUT_SECS = 2.0


class RecordSink(Protocol):
    """Persists records off the event loop, in order per call; never raises into `handle`."""

    @property
    def errors(self) -> int: ...

    def write_metadata(self, relpath: str, metadata: dict[str, Any], done: OnDone | None = None) -> None: ...

    def append(self, relpath: str, filename: str, obj: dict[str, Any]) -> None: ...

    def call_done(self, relpath: str) -> None: ...


def _retrieve(future: asyncio.Future[None]) -> None:
    """Marks an abandoned future's outcome as seen (its failure was logged where it happened)."""
    if not future.cancelled():
        future.exception()


def resolver(future: concurrent.futures.Future[None]) -> OnDone:
    """The sink's `done` callback for one metadata write: resolves `future` once, from any thread."""

    def done(exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is None:
            future.set_result(None)
        else:
            future.set_exception(exc)

    return done


@dataclass
class Entry:
    record: CallRecord
    transcript: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    cached: dict[str, Any] | None = None
    # Resolved once the first metadata is durable (or failed): what a carrier's answer waits for.
    durable: concurrent.futures.Future[None] | None = None

    def metadata(self) -> dict[str, Any]:
        if self.cached is None:
            self.cached = self.record.metadata()
        return self.cached


class InMemory:
    """Call ids this process holds (live or just finished): a hydrate must not recover them."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    def __contains__(self, call_id: object) -> bool:
        with self._store._lock:
            return call_id in self._store._live or call_id in self._store._recent


def sort_key(meta: Mapping[str, Any]) -> tuple[str, str]:
    return (str(meta["started_at"]), str(meta["call_id"]))


@dataclass(frozen=True)
class Query:
    """One listing's filters, in the stored form: ISO-8601 ms bounds and a decoded cursor."""

    status: str | None = None
    agent: str | None = None
    since: str | None = None
    until: str | None = None
    after: tuple[str, str] | None = None
    limit: int = 50

    def wants(self, meta: Mapping[str, Any]) -> bool:
        started = str(meta["started_at"])
        name = meta["agent"].get("name") if isinstance(meta.get("agent"), dict) else None
        return (
            (self.status is None or meta.get("status") == self.status)
            and (self.agent is None or name == self.agent)
            and (self.since is None or started >= self.since)
            and (self.until is None or started < self.until)
            and (self.after is None or sort_key(meta) < self.after)
        )


class MemoryStore:
    """Observer of call events that keeps call records in memory and hands them to `_sink`.

    `handle` runs on the event loop for every call event: it updates memory and enqueues writes
    for the sink's thread, never blocks and never raises. Without a sink records stay in memory
    only. Subclasses override `_stored_page` and `_stored_call` to answer from what they persisted.
    """

    def __init__(
        self,
        *,
        redact_phone: str = "full",
        retention_days: int = 30,
        pricing: Mapping[str, Mapping[str, float]] = {},
        clock: Clock = SYSTEM_CLOCK,
        max_recent: int = 10_000,
    ) -> None:
        problems = pricing_problems(pricing)
        if problems:
            raise ValueError("pricing: " + "; ".join(problems))
        if retention_days < 0:
            raise ValueError(f"retention_days is {retention_days}; expected 0 (keep forever) or more")
        self.redact = check_mode(redact_phone)
        self.retention_days = retention_days
        self.pricing = pricing
        self.clock = clock
        self._lock = threading.Lock()
        self._live: dict[str, Entry] = {}
        self._recent: OrderedDict[str, Entry] = OrderedDict()
        self._max_recent = max_recent
        self._sink: RecordSink | None = None
        self._other_errors = 0
        self._bugs = 0
        self._slow_durable = 0

    # ------------------------------------------------------------------ observer

    def handle(self, event: CallEvent) -> None:
        """Fold a call event into its record and queue the writes; never raises."""
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
        sink = self._sink
        with self._lock:
            entry = self._live.get(event.call_id) or self._recent.get(event.call_id)
            new = entry is None
            if entry is None:
                call_path(event.call_id, event.ts)  # a call_id that cannot name a directory stops here
                entry = Entry(CallRecord.start(event, self.redact, self.pricing))
                self._live[event.call_id] = entry
            record = entry.record
            was_finished = record.finished
            rewrite = record.apply(event) and not new
            entry.cached = None
            relpath = record.relpath
            if new and sink is not None:
                entry.durable = concurrent.futures.Future()
                # first, so the call exists before its lines
                sink.write_metadata(relpath, entry.metadata(), done=resolver(entry.durable))
            if isinstance(event, TranscriptLine):
                line = record.transcript_line(event)
                entry.transcript.append(line)
                if sink is not None:
                    sink.append(relpath, TRANSCRIPT, line)
            else:
                line = record.event_line(event)
                entry.events.append(line)
                if sink is not None:
                    sink.append(relpath, EVENTS, line)
                # A caller's late report: onto its line in memory (the event line is its record on disk).
                if type(event) is TurnHeard:
                    heard_on_line(entry.transcript, line["data"])
            if rewrite and sink is not None:
                sink.write_metadata(relpath, entry.metadata())
            if record.finished and not was_finished:
                self._live.pop(event.call_id, None)
                self._recent[event.call_id] = entry
                while len(self._recent) > self._max_recent:
                    self._recent.popitem(last=False)
                if sink is not None:
                    sink.call_done(relpath)

    def resume(self, call_id: str) -> bool:
        """Hold a stored call in memory again so events arriving later continue its record (another daemon's
        call that outlived this process: patterd/notify). False when unknown or already held."""
        with self._lock:
            if call_id in self._live or call_id in self._recent:
                return False
        stored = self._stored_call(call_id)
        stored = with_late_reports(stored) if stored is not None else None
        record = resumed_record(stored, self.redact, self.pricing) if stored is not None else None
        if stored is None or record is None:
            return False
        entry = Entry(record, list(stored.get("transcript") or ()), list(stored.get("events") or ()))
        with self._lock:
            if call_id in self._live or call_id in self._recent:
                return False
            (self._recent if record.finished else self._live)[call_id] = entry
        if self._sink is not None and record.status != stored["metadata"].get("status"):
            self._sink.write_metadata(record.relpath, entry.metadata())  # reopened: the store agrees at once
        return True

    def forget(self, call_id: str) -> None:
        """Drop a live call's record from memory without finishing it: another replica of a cluster runs the
        call now and writes its record (this store then reads what is stored, or shows its first state)."""
        with self._lock:
            entry = self._live.pop(call_id, None)
        if entry is not None and self._sink is not None:
            self._sink.call_done(entry.record.relpath)

    async def wait_durable(self, call_id: str, timeout: float = DURABLE_TIMEOUT_SECS) -> bool:
        """Wait until the call's first metadata is durable (on disk, or committed to the database).

        Await it before telling a carrier a call is answered: then a crash at any later instant
        cannot lose a call the carrier knows about. True when durable (or nothing to wait for:
        memory-only store, unknown call); False when the write failed or took longer than `timeout`
        (logged and counted: the call goes on, the store must not fail it).
        """
        with self._lock:
            entry = self._live.get(call_id) or self._recent.get(call_id)
            durable = entry.durable if entry is not None else None
        if durable is None:
            return True
        waiting = asyncio.wrap_future(durable)
        try:
            await asyncio.wait_for(asyncio.shield(waiting), timeout)
        except TimeoutError:
            # The write may still fail later (the store closing during a database outage); the sink logs
            # that. Retrieve it, or the abandoned future logs "exception was never retrieved" when it is
            # collected, which can land inside any other code (once inside a test's ast.parse).
            waiting.add_done_callback(_retrieve)
            self._slow_durable += 1
            log.warning("store_record_not_durable_in_time", call_id=call_id, timeout_secs=timeout)
            return False
        except Exception as exc:  # the write failed: the sink logged and counted it
            log.warning("store_record_not_durable", call_id=call_id, error=str(exc))
            return False
        return True

    # ------------------------------------------------------------------ queries

    @property
    def write_errors(self) -> int:
        """Failed writes so far (exported as patterd_store_errors_total)."""
        sink_errors = self._sink.errors if self._sink is not None else 0
        return sink_errors + self._other_errors

    def live_calls(self) -> list[dict[str, Any]]:
        """Metadata of calls in progress, newest first."""
        with self._lock:
            metas = [e.metadata() for e in self._live.values()]
        return copy.deepcopy(sorted(metas, key=sort_key, reverse=True))

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
        query = Query(
            status=status,
            agent=agent,
            since=iso_ms(since) if since is not None else None,
            until=iso_ms(until) if until is not None else None,
            after=decode_cursor(cursor) if cursor else None,
            limit=limit + 1,
        )
        with self._lock:
            entries = (*self._live.values(), *self._recent.values())
            mine = [m for m in self._renderable(entries) if query.wants(m)]
        merged = {m["call_id"]: m for m in self._stored_page(query)}
        merged.update((m["call_id"], m) for m in mine)  # this process's view is the freshest
        page = sorted(merged.values(), key=sort_key, reverse=True)
        more = len(page) > limit
        # Memory dicts are shared with the sink: hand out copies. Stored rows were parsed for this
        # call and are nobody else's; copying them too was ~40 % of a listing's time.
        shared = {id(m) for m in mine}
        page = [copy.deepcopy(m) if id(m) in shared else m for m in page[:limit]]
        return page, encode_cursor(*sort_key(page[-1])) if more else None

    def _stored_page(self, query: Query) -> list[dict[str, Any]]:
        """Up to `query.limit` stored calls matching `query`, newest first (none without storage)."""
        return []

    def _stored_call(self, call_id: str) -> dict[str, Any] | None:
        """{"metadata", "transcript", "events"} of a stored call not in memory; None if unknown."""
        return None

    def _renderable(self, entries: Iterable[Entry]) -> Iterator[dict[str, Any]]:
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
        """Metadata of a call still held in memory (live or just ended), without touching storage."""
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
        stored = self._stored_call(call_id)
        return with_late_reports(stored) if stored is not None else None

    def memory_stats(self) -> dict[str, int]:
        """The counters every backend reports; a backend adds `records` and its own."""
        return {
            "live": len(self._live),
            "records_not_durable_in_time": self._slow_durable,
            "write_errors": self.write_errors,
            "handle_errors": self._bugs,
        }

    def in_memory(self) -> int:
        with self._lock:
            return len(self._live) + len(self._recent)
