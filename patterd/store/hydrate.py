"""Rebuild the call index from the record tree on start: idempotent, tolerant, cheap when unchanged."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Container
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from patterd.clock import iso_ms
from patterd.store.index import CallIndex, Row, row_of
from patterd.store.records import CRASH_ERROR, OPEN_STATUSES, json_line, latency_summary
from patterd.store.writer import EVENTS, METADATA, TRANSCRIPT, write_atomic

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
    removed: int = 0  # index rows whose directory is gone
    write_errors: int = 0
    seconds: float = 0.0
    corrupt_paths: list[str] = field(default_factory=list)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSONL file; a torn or corrupt line (a crash mid-write) is skipped."""
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return []
    out: list[dict[str, Any]] = []
    for line in raw.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def parse_metadata(raw: bytes, call_id: str) -> dict[str, Any] | None:
    """metadata.json content if it is a record of `call_id`, else None."""
    try:
        meta = json.loads(raw)
    except ValueError:
        return None
    if (
        not isinstance(meta, dict)
        or meta.get("call_id") != call_id
        or not isinstance(meta.get("started_at"), str)
        or len(meta["started_at"]) < 10
        or not isinstance(meta.get("status"), str)
    ):
        return None
    return meta


def read_metadata(path: Path, call_id: str) -> dict[str, Any] | None:
    """metadata.json of `call_id` at `path`, None when missing or not a record of that call."""
    try:
        return parse_metadata(path.read_bytes(), call_id)
    except OSError:
        return None


def recover(directory: Path, meta: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A record a crash left open, closed as `failed`, with turns and end time from its JSONL files."""
    transcript = read_jsonl(directory / TRANSCRIPT)
    events = read_jsonl(directory / EVENTS)
    stamps = [str(o["ts"]) for o in (*transcript, *events) if isinstance(o.get("ts"), str)]
    ended_at = max([meta["started_at"], *stamps])
    latencies = [
        float(o["latency_ms"])
        for o in transcript
        if o.get("role") == "assistant" and isinstance(o.get("latency_ms"), int | float)
    ]
    out = dict(meta)
    out["status"] = "failed"
    out["error"] = CRASH_ERROR
    out["ended_at"] = ended_at
    out["turns"] = max(int(meta.get("turns") or 0), len(transcript))
    if latencies:
        out["latency"] = latency_summary(latencies)
    try:
        start = datetime.fromisoformat(meta["started_at"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(ended_at.replace("Z", "+00:00"))
        out["duration_ms"] = max(0, int((end - start).total_seconds() * 1000))
    except ValueError:
        out["duration_ms"] = None
    out.setdefault("recovered_at", iso_ms(now))
    return out


def _read_all(fd: int, size: int) -> bytes:
    """The whole file in (normally) one read: one syscall per record matters at 100k records."""
    chunks = [os.read(fd, size + 1)]
    if len(chunks[0]) > size:  # it grew since fstat
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _is_digits(name: str, width: int) -> bool:
    return len(name) == width and name.isdigit()


def digit_subdirs(path: str, width: int) -> list[str]:
    """Sorted names of `width`-digit subdirectories (foreign files and names are ignored)."""
    try:
        with os.scandir(path) as it:
            return sorted(e.name for e in it if _is_digits(e.name, width) and e.is_dir(follow_symlinks=False))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


def walk_calls(calls_root: Path) -> list[str]:
    """Relative paths `YYYY/MM/DD/<call_id>` of every call directory."""
    out: list[str] = []
    base = str(calls_root)
    for year in digit_subdirs(base, 4):
        for month in digit_subdirs(f"{base}/{year}", 2):
            for day in digit_subdirs(f"{base}/{year}/{month}", 2):
                prefix = f"{year}/{month}/{day}"
                try:
                    with os.scandir(f"{base}/{prefix}") as it:
                        out.extend(
                            f"{prefix}/{e.name}"
                            for e in it
                            if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
                        )
                except (FileNotFoundError, NotADirectoryError, PermissionError):
                    continue
    return out


def hydrate_tree(
    root: Path, index: CallIndex | None, *, now: datetime, live: Container[str] = ()
) -> HydrateReport:
    """Bring `index` in line with `<root>/calls`; records of `live` call ids are left alone.

    `live` is asked while walking, so calls starting during a hydrate are not taken for crashed.
    """
    began = time.perf_counter()
    report = HydrateReport()
    calls_root = root / "calls"
    known = index.known() if index is not None else {}
    rows: list[Row] = []
    seen: set[str] = set()
    base = str(calls_root)
    for relpath in walk_calls(calls_root):
        call_id = relpath.rsplit("/", 1)[1]
        if call_id in live:
            seen.add(relpath)
            continue
        meta_path = f"{base}/{relpath}/{METADATA}"
        hit = known.get(relpath)
        if hit is not None:
            try:
                mtime_ns = os.stat(meta_path).st_mtime_ns
            except OSError:
                _corrupt(report, relpath, "metadata.json missing")
                continue
            if hit[0] == mtime_ns and hit[1] not in OPEN_STATUSES:
                seen.add(relpath)
                report.unchanged += 1
                report.records += 1
                continue
        try:
            fd = os.open(meta_path, os.O_RDONLY)
        except OSError:
            _corrupt(report, relpath, "metadata.json missing")
            continue
        try:
            st = os.fstat(fd)
            mtime_ns = st.st_mtime_ns
            raw = _read_all(fd, st.st_size)
        except OSError:
            raw = b""
        finally:
            os.close(fd)
        meta = parse_metadata(raw, call_id)
        if meta is None:
            _corrupt(report, relpath, "metadata.json unreadable or not a record of this call")
            continue
        seen.add(relpath)
        report.parsed += 1
        report.records += 1
        try:
            text: str | None = raw.decode()
        except UnicodeDecodeError:  # valid JSON in UTF-16/32: index a UTF-8 rendering instead
            text = None
        if meta["status"] in OPEN_STATUSES:
            meta = recover(calls_root / relpath, meta, now)
            text = None
            report.recovered_in_progress += 1
            try:
                write_atomic(Path(meta_path), json_line(meta))
                mtime_ns = os.stat(meta_path).st_mtime_ns
            except OSError as exc:
                report.write_errors += 1  # indexed as failed anyway; retried on the next hydrate
                log.warning("store_recover_write_failed", path=meta_path, error=str(exc))
        rows.append(row_of(relpath, meta, mtime_ns, text))
    if index is not None:
        if rows:
            index.upsert(rows)
        gone = [r for r in known if r not in seen]
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
        removed=report.removed,
        seconds=report.seconds,
    )
    return report


def _corrupt(report: HydrateReport, relpath: str, why: str) -> None:
    report.skipped_corrupt += 1
    if len(report.corrupt_paths) < MAX_REPORTED_PATHS:
        report.corrupt_paths.append(relpath)
    log.warning("store_record_skipped", relpath=relpath, reason=why)
