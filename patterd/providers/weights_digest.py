"""The sha256 of a large file (model weights), remembered across starts by the file's stat identity.

Hashing faster-whisper's 75 MB `model.bin` took 0.13-0.25 s of every start on a 2-core machine, before
ready (issue 14). A start that finds the file exactly as a previous start verified it reuses that digest.

The key is (device, inode, size, mtime_ns, ctime_ns): the same stat data git trusts to skip re-reading
files. ctime is what makes it hold: the kernel sets it on every write, truncate, rename-over, chmod and
`utime` call, and no system call sets it back, so new bytes of the same size with the old mtime restored
(`touch -d`, `os.utime`) still change the key. A replaced file (new inode) changes it too. What the key
cannot see: corruption below the filesystem (bit rot, raw writes to the block device), a system clock
set back to the nanosecond of the old ctime, and whoever can write the cache file itself; the cache
lives in the daemon's own cache directory, which only its user writes.

Racy files (git's term): file timestamps come from a coarse clock (a few ms, whole seconds on some
filesystems), so a file changed just before it is hashed could change again with the same ctime. A digest
is remembered only for a file whose ctime is `SETTLED_NS` older than the hashing; a fresher file is hashed
again at the next start, when it has settled. Any cache problem (missing, corrupt, unwritable) only costs
the hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from patterd.protocols import jsontext

CACHE_NAME = "file-digests.json"
SETTLED_NS = 2_000_000_000  # 2 s: more than any filesystem's timestamp granularity (FAT's is 2 s)
_VERSION = 1
_MAX_ENTRIES = 16  # a few weight files; stale paths beyond this are dropped


def cache_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """systemd's `$CACHE_DIRECTORY`, else `$XDG_CACHE_HOME/patterd`, else `~/.cache/patterd` (None: no home)."""
    env = os.environ if environ is None else environ
    systemd = env.get("CACHE_DIRECTORY", "").split(":")[0].strip()  # CacheDirectory= (several: ':'-separated)
    if systemd and Path(systemd).is_absolute():
        return Path(systemd)
    xdg = env.get("XDG_CACHE_HOME", "").strip()
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "patterd"
    home = env.get("HOME", "").strip()
    return Path(home) / ".cache" / "patterd" if home and Path(home).is_absolute() else None


def identity(st: os.stat_result) -> list[int]:
    """What changes whenever the file's bytes can have changed (see the module docstring)."""
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def sha256_file(path: Path) -> str:
    """The file's sha256, read in 1 MiB blocks (hashlib releases the GIL on each)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read(cache: Path) -> dict[str, dict[str, object]]:
    try:
        data = jsontext.loads(cache.read_bytes())
    except (OSError, jsontext.JSONError):
        return {}
    if (
        not isinstance(data, dict)
        or data.get("version") != _VERSION
        or not isinstance(data.get("files"), dict)
    ):
        return {}
    return {k: v for k, v in data["files"].items() if isinstance(v, dict)}


def _write(cache: Path, files: dict[str, dict[str, object]]) -> None:
    """Atomically (tmp + rename: workers starting together each write a whole file); errors are ignored."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{CACHE_NAME}.", dir=cache.parent)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(json.dumps({"version": _VERSION, "files": files}, sort_keys=True))
            os.replace(tmp, cache)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        pass  # a read-only or full cache directory: the next start hashes again


def cached_sha256(path: Path, cache: Path | None = None, *, now_ns: int | None = None) -> str:
    """`path`'s sha256: the remembered one while its identity is unchanged, else hashed (and remembered).

    `cache` is the cache file (default: `cache_dir()/file-digests.json`; no cache when there is no such
    directory). `now_ns` stands for the wall clock at hashing (tests). OSError reading `path` propagates.
    """
    if cache is None:
        directory = cache_dir()
        cache = directory / CACHE_NAME if directory is not None else None
    key = str(path.resolve())
    before = path.stat()
    files = _read(cache) if cache is not None else {}
    entry = files.get(key)
    if entry is not None and entry.get("identity") == identity(before):
        digest = entry.get("sha256")
        if isinstance(digest, str) and len(digest) == 64:
            return digest
    started = time.time_ns() if now_ns is None else now_ns
    digest = sha256_file(path)
    after = path.stat()
    settled = after.st_ctime_ns <= started - SETTLED_NS
    if cache is not None and identity(after) == identity(before) and settled:
        files.pop(key, None)
        kept = dict(list(files.items())[-(_MAX_ENTRIES - 1) :])
        kept[key] = {"identity": identity(after), "sha256": digest}
        _write(cache, kept)
    return digest
