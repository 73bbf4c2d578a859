"""Hydrate: rebuild the index from the tree, tolerant of damage, idempotent, cheap when unchanged."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from patterd.store import CallStore
from patterd.store.index import INDEX_NAME
from tests.store.helpers import T0, FakeClock, call_events


def write_calls(root: Path, ids: list[str], *, end: bool = True) -> None:
    store = CallStore(root)
    for n, call_id in enumerate(ids):
        for event in call_events(call_id, T0.replace(minute=n % 60), end=end):
            store.handle(event)
    store.flush()
    store.close()


def test_hydrate_rebuilds_the_index_from_the_tree(tmp_path: Path) -> None:
    write_calls(tmp_path, ["a", "b", "c"])
    (tmp_path / INDEX_NAME).unlink()
    store = CallStore(tmp_path)
    report = store.hydrate()
    assert (report.records, report.parsed, report.skipped_corrupt) == (3, 3, 0)
    assert [c["call_id"] for c in store.list_calls()[0]] == ["c", "b", "a"]
    detail = store.get_call("b")
    assert (
        detail is not None and len(detail["transcript"]) == 3 and detail["events"][-1]["type"] == "call_ended"
    )
    store.close()


def test_rehydrate_is_idempotent_and_reads_only_changes(tmp_path: Path) -> None:
    write_calls(tmp_path, ["a", "b", "c"])
    store = CallStore(tmp_path)
    first = store.hydrate()
    second = store.hydrate()
    assert (second.records, second.parsed, second.unchanged) == (3, 0, 3)
    assert store.list_calls()[0] == CallStore(tmp_path).list_calls()[0]
    meta_path = tmp_path / "calls/2026/03/14/b/metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["status"] = "voicemail"
    meta_path.write_text(json.dumps(meta))
    third = store.hydrate()
    assert (third.records, third.parsed) == (3, 1)
    assert [c["status"] for c in store.list_calls(status="voicemail")[0]] == ["voicemail"]
    assert first.records == third.records == store.stats()["records"]
    store.close()


def test_hydrate_tolerates_damage_and_foreign_entries(tmp_path: Path) -> None:
    write_calls(tmp_path, ["good", "torn", "garbage", "nometa", "wrongid"])
    day = tmp_path / "calls/2026/03/14"
    with open(day / "torn/transcript.jsonl", "ab") as fh:
        fh.write(b'{"schema_version": "1.0", "ts": "2026-03-14T12:0')  # crash mid-line
    with open(day / "torn/events.jsonl", "ab") as fh:
        fh.write(b"\x00\x00garbage")
    (day / "garbage/metadata.json").write_bytes(b"\x89PNG not json")
    (day / "nometa/metadata.json").unlink()
    meta = json.loads((day / "wrongid/metadata.json").read_text())
    meta["call_id"] = "someone-else"
    (day / "wrongid/metadata.json").write_text(json.dumps(meta))
    # foreign things at every level
    (tmp_path / "calls/README.txt").write_text("hi")
    (tmp_path / "calls/backup").mkdir()
    (tmp_path / "calls/2026/notes").mkdir()
    (tmp_path / "calls/2026/03/.DS_Store").write_text("")
    (day / "stray.json").write_text("{}")
    (day / ".hidden").mkdir()
    (tmp_path / INDEX_NAME).unlink()

    store = CallStore(tmp_path)
    report = store.hydrate()
    assert report.records == 2
    assert report.skipped_corrupt == 3
    assert sorted(report.corrupt_paths) == ["2026/03/14/garbage", "2026/03/14/nometa", "2026/03/14/wrongid"]
    assert store.stats()["skipped_corrupt"] == 3
    assert sorted(c["call_id"] for c in store.list_calls()[0]) == ["good", "torn"]
    detail = store.get_call("torn")
    assert detail is not None and len(detail["transcript"]) == 3 and len(detail["events"]) == 8
    # a record that becomes corrupt later disappears from the index
    (day / "good/metadata.json").write_text("{")
    store.hydrate()
    assert [c["call_id"] for c in store.list_calls()[0]] == ["torn"]
    store.close()


def test_in_progress_left_by_a_crash_becomes_failed(tmp_path: Path) -> None:
    write_calls(tmp_path, ["open"], end=False)
    store = CallStore(tmp_path, clock=FakeClock())
    report = store.hydrate()
    assert report.recovered_in_progress == 1
    meta = json.loads((tmp_path / "calls/2026/03/14/open/metadata.json").read_text())
    assert meta["status"] == "failed"
    assert meta["error"] == "daemon stopped during call"
    assert meta["ended_at"] == "2026-03-14T12:00:10.123Z"  # the last line written
    assert meta["duration_ms"] == 10_000
    assert meta["turns"] == 3
    assert store.list_calls()[0][0]["status"] == "failed"
    assert not list(tmp_path.rglob("*.tmp"))
    again = store.hydrate()
    assert (again.recovered_in_progress, again.parsed) == (0, 0)
    assert store.stats()["recovered_in_progress"] == 0  # the latest hydrate's count
    store.close()


def test_live_calls_of_this_process_are_not_recovered(tmp_path: Path) -> None:
    store = CallStore(tmp_path)
    for event in call_events("live", end=False):
        store.handle(event)
    store.flush()
    report = store.hydrate()
    assert report.recovered_in_progress == 0
    assert store.get_call("live")["metadata"]["status"] == "in_progress"  # type: ignore[index]
    store.close()


def test_corrupt_or_stale_index_is_rebuilt(tmp_path: Path) -> None:
    write_calls(tmp_path, ["a", "b"])
    for suffix in ("-wal", "-shm"):
        (tmp_path / (INDEX_NAME + suffix)).unlink(missing_ok=True)
    (tmp_path / INDEX_NAME).write_bytes(b"this is not sqlite" * 100)
    store = CallStore(tmp_path)
    assert store.hydrate().records == 2
    assert len(store.list_calls()[0]) == 2
    store.close()
    db = sqlite3.connect(tmp_path / INDEX_NAME)
    db.execute("UPDATE info SET value = 'old' WHERE key = 'schema'")
    db.commit()
    db.close()
    store = CallStore(tmp_path)
    assert store.list_calls()[0] == []  # a stale schema is dropped, not trusted
    assert store.hydrate().parsed == 2
    assert len(store.list_calls()[0]) == 2
    store.close()


def test_deleted_directories_leave_the_index(tmp_path: Path) -> None:
    write_calls(tmp_path, ["a", "b"])
    store = CallStore(tmp_path)
    store.hydrate()
    import shutil

    shutil.rmtree(tmp_path / "calls/2026/03/14/a")
    report = store.hydrate()
    assert (report.records, report.removed) == (1, 1)
    assert store.get_call("a") is None
    store.close()
