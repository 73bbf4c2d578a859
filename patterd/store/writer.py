"""The single background thread that writes call records: atomic metadata, one-write JSONL appends."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from patterd.store.locks import hold_live
from patterd.store.records import OPEN_STATUSES, json_line

log = structlog.get_logger(__name__)

METADATA = "metadata.json"
TRANSCRIPT = "transcript.jsonl"
EVENTS = "events.jsonl"


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_tmp(path: Path, data: bytes, *, sync: bool = False) -> Path:
    """Write `data` to `path`.tmp (fsynced with `sync`); the tmp is removed if that fails."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so a reader or a crash sees the old or the new file, never half."""
    tmp = write_tmp(path, data, sync=True)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def append_line(path: Path, line: bytes) -> None:
    """Append one whole line with a single write on an O_APPEND fd (a crash tears at most this line)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, line)
    finally:
        os.close(fd)
    if written != len(line):
        raise OSError(f"short write to {path}: {written} of {len(line)} bytes (disk full?)")


def sync_file(path: Path) -> None:
    """fsync an existing file (no-op when it was never created)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Told the outcome of one metadata write on the writer thread: None once it is durable, else the error.
OnDone = Callable[[BaseException | None], None]


@dataclass(frozen=True, slots=True)
class _Metadata:
    relpath: str
    metadata: dict[str, Any]
    done: OnDone | None = None


@dataclass(frozen=True, slots=True)
class _Append:
    relpath: str
    filename: str
    obj: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Done:
    relpath: str


@dataclass(frozen=True, slots=True)
class _Barrier:
    done: threading.Event


_STOP = object()
MAX_GROUP = 64  # first records written as one group at most
_Op = _Metadata | _Append | _Done | _Barrier

# Called on the writer thread after metadata.json landed: (relpath, metadata, mtime_ns).
OnMetadata = Callable[[str, dict[str, Any], int], None]


class RecordWriter:
    """Owns every disk write of call records; callers enqueue and return at once.

    Writes run in order on one thread, so a call's metadata, transcript and events never race.
    An OSError (full disk, read-only or vanished root) is logged, counted in `errors`, and the
    next write is tried anyway: a call never notices.
    """

    def __init__(self, calls_root: Path, on_metadata: OnMetadata | None = None) -> None:
        self.calls_root = calls_root
        self.errors = 0
        self._on_metadata = on_metadata
        self._queue: queue.SimpleQueue[_Op | object] = queue.SimpleQueue()
        self._made: set[str] = set()
        self._warned: set[str] = set()
        # relpath → a descriptor holding a shared flock on the directory of each open record:
        # a hydrate (of any worker) leaves a record alone while it is held (see locks.py).
        self._live: dict[str, int] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="patterd-store-writer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ enqueue (any thread, never blocks)

    def write_metadata(self, relpath: str, metadata: dict[str, Any], done: OnDone | None = None) -> None:
        """Queue an atomic metadata.json write; `done` (writer thread) hears when it is durable or failed."""
        if self._closed:
            if done is not None:
                done(OSError("the record writer is closed"))
            return
        self._queue.put(_Metadata(relpath, metadata, done))

    def append(self, relpath: str, filename: str, obj: dict[str, Any]) -> None:
        self._put(_Append(relpath, filename, obj))

    def call_done(self, relpath: str) -> None:
        """The call ended: make its JSONL files durable and forget its bookkeeping."""
        self._put(_Done(relpath))

    def _put(self, op: _Op) -> None:
        if not self._closed:
            self._queue.put(op)

    # ------------------------------------------------------------ waiting

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything enqueued before this call is on disk; False on timeout."""
        if self._closed or not self._thread.is_alive():
            return True
        done = threading.Event()
        self._queue.put(_Barrier(done))
        return done.wait(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Write what is queued, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        carry: object = None
        while True:
            op, carry = (carry if carry is not None else self._queue.get()), None
            if op is _STOP:
                for relpath in list(self._live):
                    self._release(relpath)
                return
            if isinstance(op, _Metadata) and op.done is not None:
                # New calls' first records, waited on by their carriers' answers: the ones queued back
                # to back are written as one group (no reordering: the next other op is carried over).
                group = [op]
                while len(group) < MAX_GROUP:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if isinstance(nxt, _Metadata) and nxt.done is not None:
                        group.append(nxt)
                    else:
                        carry = nxt
                        break
                self._first_records(group)
                continue
            self._guarded(op)

    def _guarded(self, op: object) -> None:
        try:
            self._do(op)  # type: ignore[arg-type]
        except OSError as exc:
            self._failed(op, exc)  # type: ignore[arg-type]
            self._tell(op, exc)
        except Exception as exc:  # a bug must not kill the only writer thread
            self.errors += 1
            log.exception("store_write_bug", op=type(op).__name__)
            self._tell(op, exc)

    def _first_records(self, group: list[_Metadata]) -> None:
        """Write first metadata.json files as a group: every tmp, then the fsyncs, renames, directory fsyncs.

        Each is still tmp + fsync + rename + fsync dir, but on a journalling filesystem the group's first
        fsync commits the journal for all of them and the rest find little to do: eight concurrent
        answers cost about one fsync's wait instead of eight in a row.
        """
        if len(group) == 1:
            self._guarded(group[0])
            return
        staged: list[tuple[_Metadata, Path, Path]] = []
        for op in group:
            directory = self.calls_root / op.relpath
            try:
                if op.relpath not in self._made:
                    directory.mkdir(parents=True, exist_ok=True)
                    self._made.add(op.relpath)
                self._hold(op, written=False)
                path = directory / METADATA
                staged.append((op, path, write_tmp(path, json_line(op.metadata))))
            except OSError as exc:
                self._failed(op, exc)
                self._tell(op, exc)
            except Exception as exc:
                self.errors += 1
                log.exception("store_write_bug", op="first_record")
                self._tell(op, exc)
        for rename in (False, True):  # every fsync first, then every rename
            kept = []
            for op, path, tmp in staged:
                try:
                    if rename:
                        os.replace(tmp, path)
                    else:
                        sync_file(tmp)
                    kept.append((op, path, tmp))
                except OSError as exc:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                    self._failed(op, exc)
                    self._tell(op, exc)
            staged = kept
        for op, path, _ in staged:
            try:
                fsync_dir(path.parent)
                mtime_ns = os.stat(path).st_mtime_ns
            except OSError as exc:
                self._failed(op, exc)
                self._tell(op, exc)
                continue
            if op.done is not None:
                op.done(None)
            self._hold(op, written=True)  # a closed first record releases its directory
            if self._on_metadata is not None:
                try:
                    self._on_metadata(op.relpath, op.metadata, mtime_ns)
                except Exception:
                    self.errors += 1
                    log.exception("store_write_bug", op="index")

    def _tell(self, op: object, exc: BaseException) -> None:
        """A failed metadata write still answers whoever waits for it (a call must never hang on a disk)."""
        if isinstance(op, _Metadata) and op.done is not None:
            try:
                op.done(exc)
            except Exception:
                log.exception("store_write_done_failed")

    def _do(self, op: _Op) -> None:
        if isinstance(op, _Barrier):
            op.done.set()
            return
        directory = self.calls_root / op.relpath
        if isinstance(op, _Done):
            for name in (TRANSCRIPT, EVENTS):
                sync_file(directory / name)
            self._release(op.relpath)
            self._made.discard(op.relpath)
            self._warned.discard(op.relpath)
            return
        if op.relpath not in self._made:
            # No fsync of the day directory here: write_atomic's fsync of the call directory commits
            # the journal holding this mkdir on ext4/XFS, and a third fsync per new call cost ~5 ms
            # of the carrier's answer (a SIGKILL needs none of them: the page cache survives it).
            directory.mkdir(parents=True, exist_ok=True)
            self._made.add(op.relpath)
        if isinstance(op, _Append):
            append_line(directory / op.filename, json_line(op.obj))
            return
        path = directory / METADATA
        self._hold(op, written=False)
        write_atomic(path, json_line(op.metadata))
        self._hold(op, written=True)
        mtime_ns = os.stat(path).st_mtime_ns
        if op.done is not None:  # durable now: whoever waits (the carrier's answer) goes before the index
            op.done(None)
        if self._on_metadata is not None:
            self._on_metadata(op.relpath, op.metadata, mtime_ns)

    def _hold(self, op: _Metadata, *, written: bool) -> None:
        """Hold the directory of a record about to be written open; release it once written closed."""
        if op.metadata.get("status") in OPEN_STATUSES:
            if op.relpath not in self._live:
                fd = hold_live(self.calls_root / op.relpath)
                if fd is not None:
                    self._live[op.relpath] = fd
        elif written:
            self._release(op.relpath)

    def _release(self, relpath: str) -> None:
        fd = self._live.pop(relpath, None)
        if fd is not None:
            os.close(fd)

    def _failed(self, op: _Op, exc: OSError) -> None:
        self.errors += 1
        relpath = getattr(op, "relpath", "")
        self._made.discard(relpath)  # the directory may be gone: recreate it next time
        if relpath in self._warned:
            log.debug("store_write_failed", relpath=relpath, error=str(exc))
            return
        self._warned.add(relpath)
        log.warning(
            "store_write_failed",
            relpath=relpath,
            path=str(self.calls_root / relpath),
            error=str(exc),
            hint="the call goes on; its record on disk may be incomplete",
        )
