"""Crash safety of a call's first record: durable before the carrier hears, tmp files settled by hydrate."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from patterd.store import CallStore
from patterd.store.records import CRASH_ERROR
from tests.store.helpers import T0, FakeClock, call_events


def write_calls(root: Path, ids: list[str], *, end: bool = True) -> None:
    store = CallStore(root)
    for n, call_id in enumerate(ids):
        for event in call_events(call_id, T0.replace(minute=n % 60), end=end):
            store.handle(event)
    assert store.flush(10)
    store.close()


async def test_wait_durable_returns_once_metadata_is_on_disk(tmp_path: Path) -> None:
    store = CallStore(tmp_path, clock=FakeClock())
    started = call_events("call-1", T0, end=False)[0]
    store.handle(started)
    assert await store.wait_durable("call-1") is True
    # No flush: waiting alone guarantees the file is there, whole, with the opening status.
    meta = json.loads(next(tmp_path.glob("calls/*/*/*/call-1/metadata.json")).read_text())
    assert meta["call_id"] == "call-1" and meta["status"] == "in_progress"
    assert await store.wait_durable("unknown") is True  # nothing to wait for
    store.close()


async def test_wait_durable_gives_up_on_a_failed_write_without_failing_the_call(tmp_path: Path) -> None:
    root = tmp_path / "records"
    root.mkdir()
    (root / "calls").write_text("not a directory")  # every record write fails
    store = CallStore(root, clock=FakeClock())
    store.handle(call_events("call-1", T0, end=False)[0])
    assert await asyncio.wait_for(store.wait_durable("call-1"), 5) is False
    assert store.write_errors >= 1
    store.close()


async def test_memory_only_store_never_waits() -> None:
    store = CallStore(None)
    store.handle(call_events("call-1", T0, end=False)[0])
    assert await store.wait_durable("call-1") is True


def test_a_whole_tmp_without_metadata_is_recovered(tmp_path: Path) -> None:
    """SIGKILL between write_atomic's fsync and its rename: the tmp is the record."""
    write_calls(tmp_path, ["kept", "renamed"], end=False)
    directory = next(tmp_path.glob("calls/*/*/*/renamed"))
    os.replace(directory / "metadata.json", directory / "metadata.json.tmp")
    store = CallStore(tmp_path, clock=FakeClock())
    report = store.hydrate()
    assert (report.records, report.skipped_corrupt, report.recovered_tmp) == (2, 0, 1)
    assert report.recovered_in_progress == 2
    assert not (directory / "metadata.json.tmp").exists()
    meta = json.loads((directory / "metadata.json").read_text())
    assert meta["status"] == "failed" and meta["error"] == CRASH_ERROR
    assert {m["call_id"] for m in store.list_calls()[0]} == {"kept", "renamed"}
    store.close()


def test_a_torn_tmp_is_removed_and_its_empty_call_counted(tmp_path: Path) -> None:
    write_calls(tmp_path, ["kept", "torn"], end=False)
    directory = next(tmp_path.glob("calls/*/*/*/torn"))
    whole = (directory / "metadata.json").read_bytes()
    (directory / "metadata.json").unlink()
    (directory / "metadata.json.tmp").write_bytes(whole[: len(whole) // 2])
    store = CallStore(tmp_path, clock=FakeClock())
    report = store.hydrate()
    assert (report.records, report.skipped_corrupt, report.removed_tmp) == (1, 1, 1)
    assert not (directory / "metadata.json.tmp").exists()
    assert [m["call_id"] for m in store.list_calls()[0]] == ["kept"]
    store.close()


def test_a_newer_whole_tmp_beside_an_open_record_wins(tmp_path: Path) -> None:
    """SIGKILL while rewriting metadata at the call's end: the tmp holds the final status."""
    write_calls(tmp_path, ["ended"], end=True)
    directory = next(tmp_path.glob("calls/*/*/*/ended"))
    final = json.loads((directory / "metadata.json").read_text())
    opening = {**final, "status": "in_progress", "ended_at": None}
    (directory / "metadata.json").write_text(json.dumps(opening))
    (directory / "metadata.json.tmp").write_text(json.dumps(final))
    store = CallStore(tmp_path, clock=FakeClock())
    report = store.hydrate()
    assert (report.recovered_tmp, report.recovered_in_progress) == (1, 0)
    assert store.list_calls()[0][0]["status"] == "completed"
    store.close()


def test_a_call_started_during_a_hydrate_is_not_taken_for_crashed(tmp_path: Path) -> None:
    write_calls(tmp_path, [f"old-{n}" for n in range(5)], end=True)
    store = CallStore(tmp_path, clock=FakeClock())
    store.handle(call_events("live-1", T0, end=False)[0])
    assert store.flush(10)
    report = store.hydrate()
    assert report.recovered_in_progress == 0
    assert store.list_calls(status="in_progress")[0][0]["call_id"] == "live-1"
    assert store.history() == {"loading": False, "loaded": 6, "total": 6}
    store.close()


async def test_a_busy_index_never_holds_up_the_next_answer(tmp_path: Path) -> None:
    """While a hydrate holds the index (a chunk of rows), record writes go on; their rows follow later."""
    store = CallStore(tmp_path, clock=FakeClock())
    store.handle(call_events("first", T0, end=False)[0])
    assert await store.wait_durable("first")
    index = store._index(write=True)
    assert index is not None
    with index._lock:  # what a hydrate's chunk upsert holds
        store.handle(call_events("second", T0, end=False)[0])
        assert await asyncio.wait_for(store.wait_durable("second"), 5)
        store.handle(call_events("third", T0, end=False)[0])
        assert await asyncio.wait_for(store.wait_durable("third"), 5)
    assert store.flush(10)
    assert sorted(m["call_id"] for m in index.query(limit=10)) == ["first", "second", "third"]
    store.close()


async def test_first_records_queued_together_are_all_written_whole(tmp_path: Path) -> None:
    """Calls arriving at once: their first records go to disk as a group, each one complete."""
    store = CallStore(tmp_path, clock=FakeClock())
    ids = [f"burst-{n:02d}" for n in range(30)]
    for call_id in ids:  # queued faster than the writer writes: grouped
        store.handle(call_events(call_id, T0, end=False)[0])
    assert all(await asyncio.gather(*(store.wait_durable(c) for c in ids)))
    for call_id in ids:
        directory = next(tmp_path.glob(f"calls/*/*/*/{call_id}"))
        assert json.loads((directory / "metadata.json").read_text())["call_id"] == call_id
        assert not (directory / "metadata.json.tmp").exists()
    assert store.flush(10)
    assert store.stats()["records"] == 30 and store.write_errors == 0
    store.close()
