"""Reading the calls tree without trusting it: its call directories, and record files a crash may have torn."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from patterd.protocols.jsontext import clean, loads
from patterd.store.records import closed_by_crash
from patterd.store.writer import EVENTS, TRANSCRIPT


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSONL file; a torn or corrupt line (a crash mid-write) is skipped."""
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return []
    out: list[dict[str, Any]] = []
    for line in raw.splitlines():
        try:
            obj = loads(line)  # also cleans lone surrogates another writer may have escaped in
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def parse_metadata(raw: bytes, call_id: str) -> dict[str, Any] | None:
    """metadata.json content if it is a record of `call_id`, else None (strings cleaned of lone surrogates)."""
    try:
        meta = loads(raw)
    except ValueError:
        try:  # valid JSON in UTF-16/32 (json detects the encoding), cleaned the same way
            meta = clean(json.loads(raw))
        except (ValueError, RecursionError):
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
    return closed_by_crash(meta, read_jsonl(directory / TRANSCRIPT), read_jsonl(directory / EVENTS), now)


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
