"""Hydrate in a child process: the same index and counts as in-process, live calls asked of the daemon,
stop honoured, and the child gone when its daemon is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from patterd.clock import iso_ms
from patterd.store import CallStore, hydrate_proc
from patterd.store import files as files_module
from patterd.store.hydrate import Progress
from patterd.store.hydrate_proc import HydrateChild, has_calls
from patterd.store.index import INDEX_NAME, CallIndex
from tests.store.helpers import T0, FakeClock, call_events

START = datetime(2026, 1, 1, tzinfo=UTC)


def write_record(root: Path, call_id: str, started: datetime, status: str = "completed") -> Path:
    day = iso_ms(started)
    directory = root / "calls" / day[0:4] / day[5:7] / day[8:10] / call_id
    directory.mkdir(parents=True)
    meta = {
        "schema_version": "1.0",
        "call_id": call_id,
        "started_at": iso_ms(started),
        "status": status,
        "agent": {"name": "desk" if call_id[-1] in "02468" else "sales"},
    }
    (directory / "metadata.json").write_text(json.dumps(meta))
    return directory


def write_history(root: Path, count: int) -> None:
    for n in range(count):
        write_record(root, f"call-{n:04d}", START + timedelta(days=n // 10, minutes=n % 10))


def indexed(root: Path) -> list[tuple[str, str]]:
    index = CallIndex(root / INDEX_NAME)
    try:
        return [(m["call_id"], m["status"]) for m in index.query(limit=10_000)]
    finally:
        index.close()


def test_child_indexes_like_the_in_process_hydrate(tmp_path: Path) -> None:
    child_root, here_root = tmp_path / "child", tmp_path / "here"
    for root in (child_root, here_root):
        write_history(root, 45)
        (root / "calls/2026/01/02/call-0011/metadata.json").write_bytes(b"{torn")
        write_record(root, "crashed", START + timedelta(days=9), status="in_progress")
    progress = Progress(loading=True)
    CallIndex(child_root / INDEX_NAME).close()  # the daemon opens (and so repairs) the index first
    report = HydrateChild(child_root, now=T0, live=(), progress=progress).run()
    here = CallStore(here_root, clock=FakeClock()).hydrate()
    assert (report.records, report.parsed, report.skipped_corrupt, report.recovered_in_progress) == (
        45,
        45,
        1,
        1,
    )
    assert (report.records, report.parsed, report.skipped_corrupt, report.recovered_in_progress) == (
        here.records,
        here.parsed,
        here.skipped_corrupt,
        here.recovered_in_progress,
    )
    assert report.corrupt_paths == ["2026/01/02/call-0011"]
    assert (progress.loaded, progress.total) == (46, 46)  # every directory, the damaged one included
    assert indexed(child_root) == indexed(here_root)
    assert ("crashed", "failed") in indexed(child_root)
    # unchanged on the second run: only stat-ed, nothing parsed
    again = HydrateChild(child_root, now=T0, live=(), progress=Progress(loading=True)).run()
    assert (again.records, again.parsed, again.unchanged) == (45, 0, 45)


def test_open_records_of_live_calls_are_left_to_the_daemon(tmp_path: Path) -> None:
    write_history(tmp_path, 5)
    live_dir = write_record(tmp_path, "live-one", START + timedelta(days=3), status="in_progress")
    write_record(tmp_path, "crashed", START + timedelta(days=3, hours=1), status="in_progress")
    asked: list[object] = []

    class Live:
        def __contains__(self, call_id: object) -> bool:
            asked.append(call_id)
            return call_id == "live-one"

    CallIndex(tmp_path / INDEX_NAME).close()
    report = HydrateChild(tmp_path, now=T0, live=Live(), progress=Progress(loading=True)).run()
    assert sorted(map(str, asked)) == ["crashed", "live-one"]  # closed records are not asked about
    assert report.recovered_in_progress == 1
    assert json.loads((live_dir / "metadata.json").read_text())["status"] == "in_progress"
    assert "live-one" not in dict(indexed(tmp_path))
    assert dict(indexed(tmp_path))["crashed"] == "failed"


def test_a_stop_asked_before_the_start_indexes_nothing_and_deletes_nothing(tmp_path: Path) -> None:
    write_history(tmp_path, 20)
    store = CallStore(tmp_path)
    store.hydrate()
    store.close()
    for n in range(20, 30):
        write_record(tmp_path, f"call-{n:04d}", START + timedelta(days=5, minutes=n))
    progress = Progress(loading=True, stopping=True)
    report = HydrateChild(tmp_path, now=T0, live=(), progress=progress).run()
    assert (report.records, report.removed) == (0, 0)
    assert (progress.loaded, progress.total) == (0, 30)
    assert len(indexed(tmp_path)) == 20


def test_the_store_uses_a_child_for_a_large_history_and_counts_stay_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_history(tmp_path, 30)
    monkeypatch.setattr(files_module, "PROCESS_MIN_RECORDS", 30)
    store = CallStore(tmp_path)
    for event in call_events("during", T0, end=True):  # a call that ended while the history loaded
        store.handle(event)
    children: list[HydrateChild] = []
    real_run = HydrateChild.run

    def run(self: HydrateChild) -> Any:
        children.append(self)
        return real_run(self)

    monkeypatch.setattr(HydrateChild, "run", run)
    report = store.hydrate()
    assert len(children) == 1
    assert report.records >= 30
    assert store.history() == {"loading": False, "loaded": report.records, "total": report.records}
    listed = [c["call_id"] for c in store.list_calls(limit=100)[0]]
    assert listed[0] == "during" and len(listed) == len(set(listed)) == 31
    store.flush()
    assert dict(indexed(tmp_path))["during"] == "completed"  # the writer's row, written after the hydrate
    store.close()
    assert has_calls(tmp_path / "calls", 31) and not has_calls(tmp_path / "calls", 32)


PARENT = """
import sys, threading, time
from pathlib import Path
from patterd.store import CallStore
from patterd.store import files
files.PROCESS_MIN_RECORDS = 1
store = CallStore(Path(sys.argv[1]))
threading.Thread(target=store.hydrate, daemon=True).start()
while store._child is None or store._child.pid is None:
    time.sleep(0.01)
print(store._child.pid, flush=True)
threading.Event().wait()
"""


def gone(pid: int) -> bool:
    """No such process, or a zombie nobody has reaped yet (it runs no more)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_child_dies_with_a_killed_daemon(tmp_path: Path) -> None:
    write_history(tmp_path, 3)
    held = tmp_path / "calls/2025/12/31/held"
    held.mkdir(parents=True)
    os.mkfifo(held / "metadata.json")  # the child blocks reading it: it is still loading when we kill
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    # the child has opened the pipe for reading: this open returns only then
    fd = os.open(held / "metadata.json", os.O_WRONLY)
    try:
        assert not gone(child_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        died = threading.Event()
        for _ in range(1000):  # bounded: the kernel kills it at once, the socket EOF within a moment
            if gone(child_pid):
                died.set()
                break
            died.wait(0.01)
        assert died.is_set(), f"hydrate child {child_pid} outlived its killed parent"
    finally:
        os.close(fd)
        if not gone(child_pid):
            os.kill(child_pid, signal.SIGKILL)


def test_a_child_that_dies_without_a_report_is_replaced_by_an_in_process_hydrate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_history(tmp_path, 12)
    monkeypatch.setattr(files_module, "PROCESS_MIN_RECORDS", 1)
    monkeypatch.setattr(hydrate_proc, "CHILD_MODULE", "patterd.store.no_such_module")  # exits with code 1
    store = CallStore(tmp_path)
    report = store.hydrate()
    assert (report.records, report.parsed) == (12, 12)
    assert store.history() == {"loading": False, "loaded": 12, "total": 12}
    store.close()
