"""Two CallStores on one records root (`server.workers`): listings, hydrates and repairs never race.

Each interleaving that lost a call or damaged a live record is forced with a hook, not with timing.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import patterd.store.files as files_module
from patterd.store import CallStore
from patterd.store.index import CallIndex
from patterd.store.locks import hydrate_turn
from tests.store.helpers import T0, FakeClock, call_events

REPO = Path(__file__).resolve().parents[2]
WAIT_SECS = 10.0


def listed(store: CallStore) -> set[str]:
    return {c["call_id"] for c in store.list_calls(limit=100)[0]}


def metadata(root: Path, call_id: str) -> dict[str, Any]:
    store = CallStore(root)  # a third reader: what the shared index and the files say
    try:
        found = store.get_call(call_id)
        assert found is not None, f"{call_id} not in the index"
        return dict(found["metadata"])
    finally:
        store.close()


@pytest.fixture
def hooked_open(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Callable[[], object]]]:
    """Hooks run once each, in order, right after a CallIndex's first connection made the tables."""
    hooks: list[Callable[[], object]] = []

    class HookedIndex(CallIndex):
        def _connect(self) -> sqlite3.Connection:
            db = super()._connect()
            if hooks:
                hooks.pop(0)()
            return db

    monkeypatch.setattr(files_module, "CallIndex", HookedIndex)
    yield hooks


def test_an_index_another_worker_is_creating_is_adopted_not_deleted(
    tmp_path: Path, hooked_open: list[Callable[[], object]]
) -> None:
    """The CI failure: worker 2 opened the new index between worker 1 creating its tables and writing
    its schema row, took it for stale and deleted it; worker 1 went on writing into the unlinked
    file, so worker 2 never listed worker 1's calls."""
    one, two = CallStore(tmp_path, clock=FakeClock()), CallStore(tmp_path, clock=FakeClock())
    hooked_open.append(lambda: two.list_calls())  # worker 2 opens the index inside worker 1's open
    for event in call_events("on-one", T0):
        one.handle(event)
    assert one.flush(WAIT_SECS)
    assert not hooked_open  # the interleaving happened
    for event in call_events("on-two", T0):
        two.handle(event)
    assert two.flush(WAIT_SECS)
    assert listed(one) == listed(two) == {"on-one", "on-two"}
    one.close()
    two.close()


def test_a_hydrate_leaves_another_workers_live_call_alone(tmp_path: Path) -> None:
    """Worker 2's hydrate (its start, or a restart) must not mark worker 1's running call as crashed."""
    one, two = CallStore(tmp_path, clock=FakeClock()), CallStore(tmp_path, clock=FakeClock())
    events = call_events("running", T0)
    for event in events[:-1]:
        one.handle(event)
    assert one.flush(WAIT_SECS)
    report = two.hydrate()
    assert report.recovered_in_progress == 0
    assert metadata(tmp_path, "running")["status"] == "in_progress"
    one.handle(events[-1])  # the call ends on worker 1: every worker lists it as it ended
    assert one.flush(WAIT_SECS)
    assert metadata(tmp_path, "running")["status"] == "completed"
    assert two.get_call("running")["metadata"]["status"] == "completed"  # type: ignore[index]
    assert two.hydrate().recovered_in_progress == 0  # closed now: nothing to repair
    one.close()
    two.close()


CRASHING_WORKER = """
import sys
from patterd.store import CallStore
from tests.store.helpers import call_events
store = CallStore(sys.argv[1])
for event in call_events("doomed", end=False):
    store.handle(event)
assert store.flush(10)
print("live", flush=True)
sys.stdin.read()  # killed here
"""


def test_a_killed_workers_open_record_is_repaired_by_the_next_hydrate(tmp_path: Path) -> None:
    """The lock a live call's writer holds dies with its process: then, and only then, the record is repaired."""
    worker = subprocess.Popen(
        [sys.executable, "-c", CRASHING_WORKER, str(tmp_path)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None and worker.stdout.readline() == "live\n"
        other = CallStore(tmp_path, clock=FakeClock())
        assert other.hydrate().recovered_in_progress == 0
        assert metadata(tmp_path, "doomed")["status"] == "in_progress"
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(WAIT_SECS)
    report = other.hydrate()
    assert report.recovered_in_progress == 1
    assert other.get_call("doomed")["metadata"]["status"] == "failed"  # type: ignore[index]
    other.close()


def test_a_row_the_writer_could_not_index_is_flushed_when_the_index_frees(tmp_path: Path) -> None:
    """A call ending while its worker's index is held must reach the other workers without a later write."""
    one, two = CallStore(tmp_path, clock=FakeClock()), CallStore(tmp_path, clock=FakeClock())
    index = one._index(write=True)
    assert index is not None
    with index._lock:  # what a hydrate's chunk (or a retention sweep) holds
        for event in call_events("ended-while-busy", T0):
            one.handle(event)
        assert one._writer is not None and one._writer.flush(WAIT_SECS)
        assert "ended-while-busy" not in listed(two)
    flusher = getattr(one, "_flusher", None)  # nothing else is written: the flusher alone must index it
    if flusher is not None:
        flusher.join(WAIT_SECS)
    assert "ended-while-busy" in listed(two)
    one.close()
    two.close()


def test_a_worker_reopens_an_index_another_worker_rebuilt(tmp_path: Path) -> None:
    """A corrupt index is deleted and rebuilt by one worker's hydrate: the others follow to the new file."""
    one, two = CallStore(tmp_path, clock=FakeClock()), CallStore(tmp_path, clock=FakeClock())
    for event in call_events("before", T0):
        one.handle(event)
    assert one.flush(WAIT_SECS)
    assert listed(two) == {"before"}  # two's connection is open on the first file
    one._drop_index()  # what hydrate does on sqlite3.DatabaseError
    assert one.hydrate().records == 1
    for event in call_events("after", T0):
        one.handle(event)
    assert one.flush(WAIT_SECS)
    assert listed(two) == {"before", "after"}
    one.close()
    two.close()


def until(condition: Callable[[], bool]) -> None:
    """Wait for a condition another thread makes true (bounded: a hang fails the test)."""
    event = threading.Event()
    for _ in range(int(WAIT_SECS / 0.01)):
        if condition():
            return
        event.wait(0.01)
    raise AssertionError("condition never became true")


def test_hydrates_of_one_root_take_turns(tmp_path: Path) -> None:
    """A worker's hydrate waits while another's runs (they repair and prune the same tree), and a stop ends the wait."""
    setup = CallStore(tmp_path)
    for n in range(3):
        for event in call_events(f"old-{n}", T0):
            setup.handle(event)
    setup.close()
    store = CallStore(tmp_path, clock=FakeClock())
    reports: list[int] = []

    def hydrate() -> None:
        reports.append(store.hydrate().records)

    with hydrate_turn(tmp_path) as turn:  # another worker is hydrating
        assert turn
        thread = threading.Thread(target=hydrate)
        thread.start()
        until(lambda: bool(store.history()["loading"]))
        assert store.history()["loaded"] == 0 and not reports  # waiting for its turn, not walking
    thread.join(WAIT_SECS)
    assert reports == [3] and not store.history()["loading"]
    with hydrate_turn(tmp_path):
        thread = threading.Thread(target=hydrate)
        thread.start()
        until(lambda: bool(store.history()["loading"]))
        store.stop_hydrate()  # shutdown while waiting for the turn: no hang
        thread.join(WAIT_SECS)
        assert not thread.is_alive() and len(reports) == 2
    store.close()


def test_a_retention_sweep_skips_while_another_worker_has_the_turn(tmp_path: Path) -> None:
    """Two workers' sweeps (or a sweep and a hydrate) never delete the same tree at once: one skips."""
    store = CallStore(tmp_path, retention_days=30, clock=FakeClock(T0 + timedelta(days=60)))
    for event in call_events("expired", T0):
        store.handle(event)
    assert store.flush(WAIT_SECS)
    with hydrate_turn(tmp_path):
        assert store.sweep_retention() == 0
        assert listed(store) == {"expired"}
    assert store.sweep_retention() == 1
    assert listed(store) == set()
    store.close()
