"""The whisper weights' digest cache: reused only while the file is untouched, and tampering is still refused."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from patterd.errors import ProviderError
from patterd.providers import offline_whisper, weights_digest
from patterd.providers.weights_digest import CACHE_NAME, SETTLED_NS, cache_dir, cached_sha256, identity


def later() -> int:
    """A "now" long after the test's files were written (read at each call: the suite runs for minutes)."""
    return time.time_ns() + 10 * SETTLED_NS


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def next_file_tick(directory: Path, after_ns: int) -> None:
    """Return once the kernel's (coarse) file clock has passed `after_ns`, so a change gets a new ctime."""
    probe = directory / ".tick"
    while True:  # one clock tick at most (a few ms): waits on the condition, not a fixed time
        probe.write_bytes(b"")
        if probe.stat().st_ctime_ns > after_ns:
            return


def cache_entry(cache: Path, path: Path) -> dict[str, object]:
    entry: dict[str, object] = json.loads(cache.read_text())["files"][str(path.resolve())]
    return entry


def test_a_digest_is_reused_while_the_file_is_untouched(tmp_path: Path) -> None:
    weights, cache = tmp_path / "model.bin", tmp_path / "cache" / CACHE_NAME
    weights.write_bytes(b"weights v1" * 1000)
    assert cached_sha256(weights, cache, now_ns=later()) == sha(b"weights v1" * 1000)
    assert cache_entry(cache, weights)["identity"] == identity(weights.stat())
    # The next start takes the remembered digest without reading the file: a planted one shows it.
    data = json.loads(cache.read_text())
    data["files"][str(weights.resolve())]["sha256"] = "f" * 64
    cache.write_text(json.dumps(data))
    assert cached_sha256(weights, cache, now_ns=later()) == "f" * 64


def test_new_bytes_of_the_same_size_with_the_old_mtime_restored_are_hashed_again(tmp_path: Path) -> None:
    weights, cache = tmp_path / "model.bin", tmp_path / CACHE_NAME
    weights.write_bytes(b"A" * 4096)
    assert cached_sha256(weights, cache, now_ns=later()) == sha(b"A" * 4096)
    old = weights.stat()
    next_file_tick(tmp_path, old.st_ctime_ns)
    with weights.open("r+b") as f:  # in place: same inode, same size
        f.write(b"B")
    os.utime(weights, ns=(old.st_atime_ns, old.st_mtime_ns))  # mtime put back, as a careful tamperer would
    new = weights.stat()
    assert (new.st_ino, new.st_size, new.st_mtime_ns) == (old.st_ino, old.st_size, old.st_mtime_ns)
    assert cached_sha256(weights, cache, now_ns=later()) == sha(b"B" + b"A" * 4095)  # ctime moved: re-hashed


def test_a_file_replaced_by_another_is_hashed_again(tmp_path: Path) -> None:
    weights, cache = tmp_path / "model.bin", tmp_path / CACHE_NAME
    weights.write_bytes(b"A" * 4096)
    assert cached_sha256(weights, cache, now_ns=later()) == sha(b"A" * 4096)
    other = tmp_path / "other.bin"
    other.write_bytes(b"C" * 4096)
    os.replace(other, weights)  # a new inode at the same path
    assert cached_sha256(weights, cache, now_ns=later()) == sha(b"C" * 4096)


def test_a_file_changed_just_before_hashing_is_not_remembered(tmp_path: Path) -> None:
    weights, cache = tmp_path / "model.bin", tmp_path / CACHE_NAME
    weights.write_bytes(b"fresh")
    # Hashed within SETTLED_NS of its last change: it could change again within the same timestamp tick.
    assert cached_sha256(weights, cache, now_ns=weights.stat().st_ctime_ns + SETTLED_NS // 2) == sha(b"fresh")
    assert not cache.exists()
    assert cached_sha256(weights, cache, now_ns=later()) == sha(b"fresh")
    assert cache.exists()


@pytest.mark.parametrize("content", [b"", b"{not json", b"[]", b'{"version": 99, "files": {}}', b"\xff\xfe"])
def test_an_unusable_cache_only_costs_the_hash(tmp_path: Path, content: bytes) -> None:
    weights, cache = tmp_path / "model.bin", tmp_path / CACHE_NAME
    weights.write_bytes(b"weights")
    cache.write_bytes(content)
    assert cached_sha256(weights, cache, now_ns=later()) == sha(b"weights")
    assert cache_entry(cache, weights)["sha256"] == sha(b"weights")  # rewritten whole


def test_an_unwritable_cache_directory_only_costs_the_hash(tmp_path: Path) -> None:
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"weights")
    blocked = tmp_path / "a-file"
    blocked.write_text("")  # a cache "directory" that is a file: mkdir fails
    assert cached_sha256(weights, blocked / "sub" / CACHE_NAME, now_ns=later()) == sha(b"weights")


def test_the_cache_directory_follows_systemd_then_xdg_then_home() -> None:
    assert cache_dir({"CACHE_DIRECTORY": "/var/cache/patterd:/x", "HOME": "/h"}) == Path("/var/cache/patterd")
    assert cache_dir({"XDG_CACHE_HOME": "/xdg", "HOME": "/h"}) == Path("/xdg/patterd")
    assert cache_dir({"XDG_CACHE_HOME": "relative", "HOME": "/h"}) == Path("/h/.cache/patterd")
    assert cache_dir({}) is None


def test_tampered_weights_are_refused_although_their_digest_was_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not offline_whisper.available():
        pytest.skip("the whisper extra is not installed")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CACHE_DIRECTORY", raising=False)
    monkeypatch.setattr(offline_whisper, "_verified", {})  # this process has not seen the copy either
    model = tmp_path / "model"
    model.mkdir()
    shutil.copyfile(offline_whisper.model_path() / "model.bin", model / "model.bin")
    monkeypatch.setattr(weights_digest, "SETTLED_NS", -(10**12))  # the fresh copy counts as settled
    offline_whisper.verify_weights(model)  # the pinned bytes: accepted, and remembered
    cache = tmp_path / "cache" / "patterd" / CACHE_NAME
    assert cache_entry(cache, model / "model.bin")["sha256"] == offline_whisper.MODEL_SHA256
    offline_whisper._verified.clear()  # a new start: only the on-disk cache remembers
    weights = model / "model.bin"
    old = weights.stat()
    next_file_tick(tmp_path, old.st_ctime_ns)
    with weights.open("r+b") as f:
        f.seek(old.st_size // 2)
        byte = f.read(1)
        f.seek(old.st_size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(weights, ns=(old.st_atime_ns, old.st_mtime_ns))
    with pytest.raises(ProviderError, match=r"refuses whisper weights .* is not the pinned"):
        offline_whisper.verify_weights(model)
