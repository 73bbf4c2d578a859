"""Rebuild the call index from the record tree on start: idempotent, tolerant, cheap when unchanged."""

from __future__ import annotations

import os
import time
from collections.abc import Container, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from patterd.store.index import CallIndex, Row, row_of
from patterd.store.locks import claim_idle
from patterd.store.records import OPEN_STATUSES, json_line

# digit_subdirs, read_jsonl, read_metadata and walk_calls moved to tree_read; their old path still works.
from patterd.store.tree_read import digit_subdirs as digit_subdirs
from patterd.store.tree_read import parse_metadata, recover
from patterd.store.tree_read import read_jsonl as read_jsonl
from patterd.store.tree_read import read_metadata as read_metadata
from patterd.store.tree_read import walk_calls as walk_calls
from patterd.store.writer import METADATA, fsync_dir, write_atomic

log = structlog.get_logger(__name__)

MAX_REPORTED_PATHS = 20


@dataclass
class HydrateReport:
    """What a hydrate found; `skipped_corrupt` and `recovered_in_progress` go to /api/v1/status."""

    records: int = 0  # valid call records in the tree
    parsed: int = 0  # metadata.json files read this time (new or changed since the index saw them)
    unchanged: int = 0  # taken from the index without reading
    skipped_corrupt: int = 0  # call directories with a missing or unreadable metadata.json
    recovered_in_progress: int = 0  # records left open by a crash, now `failed`
    recovered_tmp: int = 0  # metadata.json.tmp files a crash left whole before their rename: renamed
    removed_tmp: int = 0  # torn metadata.json.tmp files (a crash mid-write): deleted
    removed: int = 0  # index rows whose directory is gone
    write_errors: int = 0
    seconds: float = 0.0
    corrupt_paths: list[str] = field(default_factory=list)


def _read_all(fd: int, size: int) -> bytes:
    """The whole file in (normally) one read: one syscall per record matters at 100k records."""
    chunks = [os.read(fd, size + 1)]
    if len(chunks[0]) > size:  # it grew since fstat
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    return b"".join(chunks)


# A (mtime_ns of metadata.json, its bytes or None when the index has it unchanged), or MISSING.
Probe = tuple[int, bytes | None]
MISSING: Probe = (-1, None)
# The per-record stat/read runs in this many threads: on a cold page cache (the start after a
# reboot) a disk answers many small reads in parallel far faster than one at a time (100k
# records here: stat 8.7 s → 2.1 s, read 16 s → 3.9 s); the GIL is released in the syscalls.
IO_THREADS = 8
IO_BATCH = 4096  # records probed ahead of the (sequential) parsing: bounds memory
MIN_PER_THREAD = 256  # below this many records per thread, threads cost more than they save


def probe(meta_path: str, hit: tuple[int, str] | None) -> Probe:
    """The I/O of one record: stat when the index knows it (unchanged and closed: not read), else read it."""
    if hit is not None:
        try:
            mtime_ns = os.stat(meta_path).st_mtime_ns
        except OSError:
            return MISSING
        if hit[0] == mtime_ns and hit[1] not in OPEN_STATUSES:
            return mtime_ns, None
    try:
        fd = os.open(meta_path, os.O_RDONLY)
    except OSError:
        return MISSING
    try:
        st = os.fstat(fd)
        return st.st_mtime_ns, _read_all(fd, st.st_size)
    except OSError:
        return 0, b""  # unreadable: parsing it fails and counts it as corrupt
    finally:
        os.close(fd)


def probe_records(
    base: str, relpaths: list[str], known: Mapping[str, tuple[int, str]]
) -> Iterator[tuple[str, Probe]]:
    """(relpath, probe) in walk order; the next batch is probed in threads while this one is used."""

    def probe_slice(part: list[str]) -> list[Probe]:
        return [probe(f"{base}/{r}/{METADATA}", known.get(r)) for r in part]

    threads = min(IO_THREADS, len(relpaths) // MIN_PER_THREAD)
    if threads <= 1:
        yield from zip(relpaths, probe_slice(relpaths), strict=True)
        return

    with ThreadPoolExecutor(threads, thread_name_prefix="hydrate-io") as pool:

        def submit(start: int) -> list[tuple[list[str], Future[list[Probe]]]]:
            batch = relpaths[start : start + IO_BATCH]
            step = -(-len(batch) // threads)
            return [
                (batch[k : k + step], pool.submit(probe_slice, batch[k : k + step]))
                for k in range(0, len(batch), step)
            ]

        pending = submit(0)
        for start in range(0, len(relpaths), IO_BATCH):
            current, pending = pending, submit(start + IO_BATCH) if start + IO_BATCH < len(relpaths) else []
            for part, future in current:  # each slice as soon as it is probed: progress moves steadily
                yield from zip(part, future.result(), strict=True)


@dataclass
class Progress:
    """How far a hydrate has got, read by the API while it runs (plain fields: one writer thread)."""

    loading: bool = False
    total: int = 0  # call directories found by the walk
    loaded: int = 0  # of them handled so far (indexed, unchanged, or skipped as corrupt)
    stopping: bool = False  # set by another thread: stop at the next record (shutdown)

    def as_dict(self) -> dict[str, Any]:
        return {"loading": self.loading, "loaded": self.loaded, "total": self.total}


TMP = METADATA + ".tmp"
# While serving, rows go to the index in chunks of this many, so listings fill up as the hydrate
# goes (and the writer thread, which shares the index, never waits long behind one transaction).
CHUNK_ROWS = 2000
# While serving, the hydrate hands the GIL over this often (time.sleep(0) releases it): the event loop
# and a listing's thread, when waiting for it, run at once instead of after the interpreter's 5 ms
# switch interval, each time they need it again (a listing needs it many times). Measured in-process
# at 100k records, first page listed back to back on a busy 2-core machine: list p99 31-35 → 20-22 ms,
# and the listing got ~1.9× the requests through, which is the time the hydrate gave (20 → 35 s then).
YIELD_SECS = 0.001


def settle_tmp(directory: Path, call_id: str, report: HydrateReport) -> dict[str, Any] | None:
    """A `metadata.json.tmp` a crash left behind: renamed over metadata.json when whole, deleted when torn.

    write_atomic fsyncs the tmp before renaming it, so a whole tmp is the newest state of the record
    (a SIGKILL between the write and the rename). Returns that metadata, else None.
    """
    tmp = directory / TMP
    try:
        raw = tmp.read_bytes()
    except OSError:
        return None  # no tmp: the common case
    meta = parse_metadata(raw, call_id)
    try:
        if meta is None:
            tmp.unlink()
            report.removed_tmp += 1
            log.warning("store_torn_tmp_removed", path=str(tmp))
            return None
        os.replace(tmp, directory / METADATA)
        fsync_dir(directory)
        report.recovered_tmp += 1
        log.info("store_tmp_recovered", path=str(tmp))
    except OSError as exc:
        report.write_errors += 1
        log.warning("store_tmp_settle_failed", path=str(tmp), error=str(exc))
    return meta


def hydrate_tree(
    root: Path,
    index: CallIndex | None,
    *,
    now: datetime,
    live: Container[str] = (),
    progress: Progress | None = None,
) -> HydrateReport:
    """Bring `index` in line with `<root>/calls`; open or damaged records of `live` call ids are left alone.

    `live` is asked while walking, so calls starting during a hydrate are not taken for crashed.
    An open record whose directory another process (worker) holds live (locks.py) is left alone too.
    A closed record is indexed as read even when its call is still in memory: rows a writer
    produces meanwhile carry a newer mtime and win whenever they are committed (CallIndex.upsert).
    With `progress` (a hydrate running while the daemon serves) the newest days go first and rows
    are committed in chunks, so a listing sees the recent history early and `progress` says how far.
    """
    began = time.perf_counter()
    report = HydrateReport()
    calls_root = root / "calls"
    known = index.known() if index is not None else {}
    seen: set[str] = set()
    relpaths = walk_calls(calls_root)
    relpaths.reverse()  # newest day first: the first page of a listing is complete soonest
    if progress is not None:
        progress.total = len(relpaths)
    stopped = False
    deferred = progress is not None and index is not None and not known and len(relpaths) > CHUNK_ROWS
    if deferred and index is not None:
        index.defer_indexes()  # a first load into an empty index: the other indexes are built at the end
    try:
        stopped = _load(report, index, calls_root, relpaths, known, seen, now, live, progress)
    finally:
        if deferred and index is not None:
            index.create_indexes()
    if index is not None:
        gone = [] if stopped else [r for r in known if r not in seen]  # unseen ≠ gone when stopped
        if gone:
            index.delete(gone)
        report.removed = len(gone)
    report.seconds = round(time.perf_counter() - began, 3)
    log.info(
        "store_hydrated",
        records=report.records,
        parsed=report.parsed,
        skipped_corrupt=report.skipped_corrupt,
        recovered_in_progress=report.recovered_in_progress,
        recovered_tmp=report.recovered_tmp,
        removed_tmp=report.removed_tmp,
        removed=report.removed,
        seconds=report.seconds,
    )
    return report


def _load(
    report: HydrateReport,
    index: CallIndex | None,
    calls_root: Path,
    relpaths: list[str],
    known: Mapping[str, tuple[int, str]],
    seen: set[str],
    now: datetime,
    live: Container[str],
    progress: Progress | None,
) -> bool:
    """Read, recover and index every record of `relpaths`; True when stopped early (`progress.stopping`)."""
    base = str(calls_root)
    rows: list[Row] = []
    stopped = False
    yielded = time.perf_counter()
    for relpath, found in probe_records(base, relpaths, known):
        if progress is not None:
            if progress.stopping:
                stopped = True
                break
            progress.loaded += 1
            if time.perf_counter() - yielded >= YIELD_SECS:
                time.sleep(0)
                yielded = time.perf_counter()
            if index is not None and len(rows) >= CHUNK_ROWS:
                index.upsert(rows)
                rows = []
        call_id = relpath.rsplit("/", 1)[1]
        directory = calls_root / relpath
        meta_path = f"{base}/{relpath}/{METADATA}"
        raw = found[1]
        if found is not MISSING and raw is None:  # the index has it, unchanged and closed
            seen.add(relpath)
            report.unchanged += 1
            report.records += 1
            continue
        parsed = parse_metadata(raw, call_id) if raw is not None else None
        if found is not MISSING and parsed is not None and parsed["status"] not in OPEN_STATUSES:
            row = _row(report, relpath, found, parsed, directory, now)
        elif call_id in live:
            # `live` is asked only of records a hydrate would repair (missing, torn or open metadata):
            # a live call's record is in the writer's hands. Asking only here keeps the question rare
            # (a hydrate process asks its parent).
            seen.add(relpath)
            continue
        else:
            with claim_idle(directory) as idle:
                if not idle:  # another process (worker) has this call open: its writer indexes it
                    seen.add(relpath)
                    continue
                # Ours now: read again, the call may have ended between the first read and the lock.
                found = probe(meta_path, None)
                raw = found[1]
                parsed = parse_metadata(raw, call_id) if raw is not None else None
                row = _row(report, relpath, found, parsed, directory, now)
        if row is not None:
            seen.add(relpath)
            rows.append(row)
    if index is not None and rows:
        index.upsert(rows)
    return stopped


def _row(
    report: HydrateReport,
    relpath: str,
    found: Probe,
    parsed: dict[str, Any] | None,
    directory: Path,
    now: datetime,
) -> Row | None:
    """The index row of one record read from disk, repairing it first (tmp left by a crash, open
    record of a crashed call); None when it is corrupt. A closed record is indexed as read: rows a
    writer produces meanwhile carry a newer mtime and win (CallIndex.upsert)."""
    call_id = relpath.rsplit("/", 1)[1]
    meta_path = str(directory / METADATA)
    text: str | None = None
    raw = found[1]
    if found is MISSING or raw is None:
        meta = settle_tmp(directory, call_id, report)
        if meta is None:
            _corrupt(report, relpath, "metadata.json missing")
            return None
        mtime_ns = _mtime_ns(meta_path)
    else:
        mtime_ns = found[0]
        if parsed is None:
            parsed = settle_tmp(directory, call_id, report)  # a torn metadata.json with a whole tmp
            if parsed is None:
                _corrupt(report, relpath, "metadata.json unreadable or not a record of this call")
                return None
            mtime_ns = _mtime_ns(meta_path)
        elif parsed["status"] in OPEN_STATUSES:  # a crash mid-rewrite may have left a newer tmp
            newer = settle_tmp(directory, call_id, report)
            if newer is not None:
                parsed, mtime_ns = newer, _mtime_ns(meta_path)
            else:
                text = _as_text(raw)
        else:
            text = _as_text(raw)
        meta = parsed
    report.parsed += 1
    report.records += 1
    if meta["status"] in OPEN_STATUSES:
        meta = recover(directory, meta, now)
        text = None
        report.recovered_in_progress += 1
        try:
            write_atomic(Path(meta_path), json_line(meta))
            mtime_ns = os.stat(meta_path).st_mtime_ns
        except OSError as exc:
            report.write_errors += 1  # indexed as failed anyway; retried on the next hydrate
            log.warning("store_recover_write_failed", path=meta_path, error=str(exc))
    return row_of(relpath, meta, mtime_ns, text)


def _mtime_ns(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0  # not on disk after all: the next hydrate reads it again


def _as_text(raw: bytes) -> str | None:
    """metadata.json's bytes as the index's JSON text, or None when it must be rendered again.

    None for UTF-16/32 JSON and for text with \\u escapes (lone surrogates among them are cleaned
    by parsing: the index must hold the cleaned rendering, not the original escapes).
    """
    if b"\\u" in raw:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return None


def _corrupt(report: HydrateReport, relpath: str, why: str) -> None:
    report.skipped_corrupt += 1
    if len(report.corrupt_paths) < MAX_REPORTED_PATHS:
        report.corrupt_paths.append(relpath)
    log.warning("store_record_skipped", relpath=relpath, reason=why)
