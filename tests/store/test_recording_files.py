"""recording.wav and the store: it lives in the call's record directory, retention takes it, no directory persist has none."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from patterd.store import CallStore
from patterd.store.recording_file import read_recording
from patterd.store.recording_path import open_recording, record_dir, recording_file
from tests.store.helpers import T0, FakeClock, call_events


def record_call(store: CallStore, call_id: str, start: datetime = T0, *, end: bool = True) -> None:
    for event in call_events(call_id, start, end=end):
        store.handle(event)


def test_the_recording_sits_in_the_record_directory_and_retention_removes_it(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    store = CallStore(tmp_path, retention_days=10, clock=clock)
    record_call(store, "call-rec", T0 - timedelta(days=20), end=False)  # live: found from memory
    out = open_recording(store, "call-rec")
    assert out is not None
    out.append(memoryview(b"\x01\x02" * 800))
    out.close()
    store.flush()
    path = recording_file(store, "call-rec")
    assert path is not None and path.parent.name == "call-rec" and (path.parent / "metadata.json").exists()
    assert read_recording(path) == (b"\x01" * 800, b"\x02" * 800)
    assert recording_file(store, "call-unknown") is None

    # A later process (nothing in memory) finds it through the index.
    store.close()
    again = CallStore(tmp_path, retention_days=10, clock=clock)
    again.hydrate()
    assert recording_file(again, "call-rec") == path
    assert again.sweep_retention() == 1  # its day is older than retention_days: the whole directory goes
    assert not path.exists() and recording_file(again, "call-rec") is None
    again.close()


def test_no_directory_persist_records_nothing(tmp_path: Path) -> None:
    store = CallStore(None)  # persist: false
    record_call(store, "call-mem", end=False)
    assert record_dir(store, "call-mem") is None
    assert open_recording(store, "call-mem") is None
    assert recording_file(store, "call-mem") is None
    assert not any(tmp_path.iterdir())
