"""Where a call's `recording.wav` lives (its record directory, when the store keeps records in one), and opening it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import structlog

from patterd.store.recording_file import RECORDING, RecordingFile
from patterd.store.records import call_path

log = structlog.get_logger("patterd.recording")


class _Records(Protocol):
    """The part of a record store this needs; only a directory store has a `root` (a Path) to write under."""

    def recent_metadata(self, call_id: str) -> dict[str, Any] | None: ...

    def get_call(self, call_id: str) -> dict[str, Any] | None: ...


def record_dir(store: _Records, call_id: str) -> Path | None:
    """The record directory of a live or just-ended call; None without a directory persist."""
    root = getattr(store, "root", None)
    if not isinstance(root, Path):  # persist: false, or a database store: no files to put it beside
        return None
    meta = store.recent_metadata(call_id)
    if meta is None:
        found = store.get_call(call_id)
        meta = found["metadata"] if found else None
    if not meta or not isinstance(meta.get("started_at"), str):
        return None
    try:
        return root / "calls" / call_path(call_id, meta["started_at"])
    except ValueError:  # a call id that cannot name a directory has no recording
        return None


def recording_file(store: _Records, call_id: str) -> Path | None:
    """The call's recording, if one was written."""
    directory = record_dir(store, call_id)
    if directory is None:
        return None
    path = directory / RECORDING
    return path if path.is_file() else None


def open_recording(store: _Records, call_id: str) -> RecordingFile | None:
    """A new recording.wav in the call's record directory (made if missing); None when it cannot be."""
    directory = record_dir(store, call_id)
    if directory is None:
        log.warning("recording: local needs a directory persist; this call is not recorded", call_id=call_id)
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        return RecordingFile(directory / RECORDING)
    except OSError as exc:  # a recording that cannot start never stops the call
        log.warning("recording could not start", call_id=call_id, error=str(exc))
        return None
