"""Hydrate's threaded I/O phase: same answers as one thread, in walk order, across batches and damage."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from patterd.store import CallStore
from patterd.store import hydrate as hydrate_module
from patterd.store.hydrate import MISSING, probe, probe_records, walk_calls
from patterd.store.index import INDEX_NAME

RECORDS = 700


def write_tree(root: Path) -> None:
    """RECORDS call directories over three days; some without metadata, some garbage, some left open."""
    for n in range(RECORDS):
        day = f"2026/03/{10 + n % 3:02d}"
        call_id = f"c{n:04d}"
        directory = root / "calls" / day / call_id
        directory.mkdir(parents=True)
        if n % 97 == 0:
            continue  # no metadata.json
        if n % 89 == 0:
            (directory / "metadata.json").write_bytes(b"{not json")
            continue
        meta = {
            "schema_version": "1.0",
            "call_id": call_id,
            "started_at": f"2026-03-{10 + n % 3:02d}T12:{n // 60 % 60:02d}:{n % 60:02d}.000Z",
            "status": "in_progress" if n % 101 == 0 else "completed",
            "agent": {"name": "support"},
        }
        (directory / "metadata.json").write_text(json.dumps(meta))


def test_threaded_probes_equal_serial_probes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tree(tmp_path)
    base = str(tmp_path / "calls")
    relpaths = walk_calls(tmp_path / "calls")
    known = {relpaths[5]: (0, "completed")}  # indexed with another mtime: read again
    serial = [(r, probe(f"{base}/{r}/metadata.json", known.get(r))) for r in relpaths]
    monkeypatch.setattr(hydrate_module, "IO_BATCH", 64)  # many batches, a short last one
    monkeypatch.setattr(hydrate_module, "MIN_PER_THREAD", 10)
    threads: set[str] = set()
    real_probe = hydrate_module.probe

    def spying_probe(meta_path: str, hit: tuple[int, str] | None) -> hydrate_module.Probe:
        threads.add(threading.current_thread().name)
        return real_probe(meta_path, hit)

    monkeypatch.setattr(hydrate_module, "probe", spying_probe)
    threaded = list(probe_records(base, relpaths, known))
    assert threaded == serial
    assert len(threads) > 1 and all(name.startswith("hydrate-io") for name in threads)
    assert sum(1 for _, found in serial if found is MISSING) == len(range(0, RECORDS, 97))


def test_threaded_hydrate_report_and_rehydrate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tree(tmp_path)
    monkeypatch.setattr(hydrate_module, "IO_BATCH", 100)
    monkeypatch.setattr(hydrate_module, "MIN_PER_THREAD", 10)
    missing = len(range(0, RECORDS, 97))
    garbage = len([n for n in range(RECORDS) if n % 89 == 0 and n % 97])
    open_ = len([n for n in range(RECORDS) if n % 101 == 0 and n % 97 and n % 89])
    store = CallStore(tmp_path, retention_days=0)
    first = store.hydrate()
    good = RECORDS - missing - garbage
    assert (first.records, first.parsed, first.skipped_corrupt) == (good, good, missing + garbage)
    assert first.recovered_in_progress == open_
    again = store.hydrate()
    assert (again.records, again.parsed, again.unchanged) == (good, 0, good)
    pages: list[str] = []
    cursor = None
    while True:
        page, cursor = store.list_calls(limit=200, cursor=cursor)
        pages += [c["call_id"] for c in page]
        if cursor is None:
            break
    assert len(pages) == len(set(pages)) == good
    store.close()
    assert (tmp_path / INDEX_NAME).exists()
