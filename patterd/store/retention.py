"""Retention: delete day directories of call records older than `retention_days`."""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection
from datetime import date, datetime, timedelta
from pathlib import Path

import structlog

from patterd.store.hydrate import digit_subdirs
from patterd.store.index import CallIndex

log = structlog.get_logger(__name__)

SWEEP_INTERVAL_SECS = 3600.0


def cutoff_day(now: datetime, retention_days: int) -> date:
    """The oldest UTC day kept: day directories before it are deleted."""
    return (now - timedelta(days=retention_days)).date()


def expired_days(calls_root: Path, before: date) -> list[str]:
    """`YYYY/MM/DD` of day directories dated before `before` (foreign names are never touched)."""
    out: list[str] = []
    base = str(calls_root)
    for year in digit_subdirs(base, 4):
        if int(year) > before.year:
            break
        for month in digit_subdirs(f"{base}/{year}", 2):
            for day in digit_subdirs(f"{base}/{year}/{month}", 2):
                try:
                    dated = date(int(year), int(month), int(day))
                except ValueError:  # 2026/02/31 is not a day we wrote
                    continue
                if dated < before:
                    out.append(f"{year}/{month}/{day}")
    return out


def sweep(
    root: Path,
    retention_days: int,
    now: datetime,
    *,
    index: CallIndex | None = None,
    keep_days: Collection[str] = (),
) -> list[str]:
    """Delete expired day directories (not those in `keep_days`, which hold live calls), their
    empty month and year directories, and their index rows; return the days deleted.

    retention_days 0 keeps everything. Errors are logged and the sweep goes on.
    """
    if retention_days <= 0:
        return []
    calls_root = root / "calls"
    deleted: list[str] = []
    for day in expired_days(calls_root, cutoff_day(now, retention_days)):
        if day in keep_days:
            continue
        path = calls_root / day
        try:
            shutil.rmtree(path)
        except OSError as exc:
            log.warning("store_retention_failed", path=str(path), error=str(exc))
            continue
        deleted.append(day)
        for parent in (path.parent, path.parent.parent):
            try:
                os.rmdir(parent)  # only succeeds when empty
            except OSError:
                break
    if deleted and index is not None:
        index.delete_days(deleted)
    if deleted:
        log.info("store_retention_swept", days=len(deleted), oldest=deleted[0], newest=deleted[-1])
    return deleted
