"""The install's secret key for `redact_phone: hash_only`, kept beside the call records.

An unkeyed hash of a phone number is no redaction: there are few numbers per area code, and
hashing them all takes seconds. With a random key only this install can recompute a hash, yet a
number still hashes the same in every record and every restart (calls from one caller can be
linked). The key lives in `<persist root>/.hash_key` (hex, created once with mode 0600, atomically:
two processes starting together end up with the same key). Without persistence, or when that file
cannot be read or made, a random per-process key is used: hashes then only match within one run.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from pathlib import Path

log = logging.getLogger(__name__)

KEY_FILE = ".hash_key"
KEY_BYTES = 32

_process_key = secrets.token_bytes(KEY_BYTES)
_lock = threading.Lock()
_root: Path | None = None  # where the key lives; None: the per-process key
_key: bytes | None = None  # loaded on first use, so modes that never hash never create the file


def use_root(root: Path | None) -> None:
    """Hash with the key kept under `root` (the persist root) from now on; None: a per-process key."""
    global _root, _key
    with _lock:
        if root != _root:
            _root, _key = root, None


def current_key() -> bytes:
    """The key to hash with: the install's (read or created on first use), else the per-process one."""
    global _key
    problem: Exception | None = None
    with _lock:
        if _key is None:
            if _root is None:
                _key = _process_key
            else:
                try:
                    _key = load_or_create(_root)
                except (OSError, ValueError) as exc:
                    # Records still get a hash nobody else can compute, just not a stable one.
                    _key, problem = _process_key, exc
        key = _key
    if problem is not None:  # logged outside the lock: the log redactor may itself hash a number
        log.warning("hash_only key unusable (%s); using a per-process key: hashes change at restart", problem)
    return key


def load_or_create(root: Path) -> bytes:
    """The key in `root/.hash_key`, creating the file (mode 0600) if there is none yet."""
    path = root / KEY_FILE
    try:
        return _parse(path)
    except FileNotFoundError:
        pass
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (secrets.token_bytes(KEY_BYTES).hex() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        # link(), unlike rename(), never replaces: if another process made its key first, we use that one.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    _fsync_dir(root)
    return _parse(path)


def _parse(path: Path) -> bytes:
    text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        raise ValueError(f"{path} does not hold a hex key of at least 16 bytes")
    return key


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
