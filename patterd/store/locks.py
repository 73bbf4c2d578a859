"""Advisory file locks (flock) that let several processes (`server.workers`) share one records root.

- `index_lock`: held while the SQLite index is replaced (stale or corrupt), so two processes never
  delete each other's freshly made index.
- `hydrate_turn`: hydrates (and retention sweeps) of one root run one at a time: each walks the tree,
  may repair records and prunes index rows.
- `hold_live` / `claim_idle`: a writer holds a shared lock on the directory of each call it has open;
  a hydrate repairs an open record only when it can lock that directory exclusively, i.e. when no
  process is still writing it (the kernel drops a crashed process's locks). A hydrate thus never
  marks another worker's live call as crashed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

HYDRATE_LOCK = "hydrate.lock"
TURN_POLL_SECS = 0.05  # how often a waiting hydrate looks for its turn (and for a stop request)


@contextlib.contextmanager
def _locked(
    path: Path, operation: int, flags: int = os.O_RDWR | os.O_CREAT, *, unopenable: bool | None = None
) -> Iterator[bool]:
    """flock `path` (opened with `flags`: a file created if missing); yields whether it was taken (False
    only with LOCK_NB). A path that cannot be opened raises, or yields `unopenable` when one is given."""
    try:
        fd = os.open(path, flags | os.O_CLOEXEC, 0o644)
    except OSError:
        if unopenable is None:
            raise
        yield unopenable
        return
    try:
        try:
            fcntl.flock(fd, operation)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextlib.contextmanager
def index_lock(index_path: Path) -> Iterator[None]:
    """Exclusive lock on `<index>.lock` (a file never deleted, unlike the index itself)."""
    with _locked(index_path.with_name(index_path.name + ".lock"), fcntl.LOCK_EX):
        yield


@contextlib.contextmanager
def hydrate_turn(root: Path, stop: threading.Event | None = None) -> Iterator[bool]:
    """Wait until no other process hydrates `root`, and hold that turn; yields False if `stop` was set first."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / HYDRATE_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:  # an unusable root (a file, read-only): no other process can hydrate it either
        yield True
        return
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # flock cannot be interrupted from another thread: poll, so a shutdown is not held up
                if stop is not None and stop.wait(TURN_POLL_SECS):
                    yield False
                    return
                if stop is None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    break
        yield True
    finally:
        os.close(fd)


def turn_if_free(root: Path) -> contextlib.AbstractContextManager[bool]:
    """The hydrate turn if no other process holds it (a retention sweep: skipped, the next one runs)."""
    # An unusable root: no other process can hydrate it either.
    return _locked(root / HYDRATE_LOCK, fcntl.LOCK_EX | fcntl.LOCK_NB, unopenable=True)


def hold_live(directory: Path) -> int | None:
    """A shared lock on a call's directory while its record is open; the descriptor (close to release)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a hydrate repairs this very directory (ms)
    except OSError:
        os.close(fd)
        return None
    return fd


def claim_idle(directory: Path) -> contextlib.AbstractContextManager[bool]:
    """Lock a call's directory exclusively if no process holds it live; yields whether it did (held inside)."""
    # A directory gone: nobody writes it.
    return _locked(directory, fcntl.LOCK_EX | fcntl.LOCK_NB, os.O_RDONLY | os.O_DIRECTORY, unopenable=True)
