"""The writer thread: failures are counted and logged, never raised; appends are whole lines."""

from __future__ import annotations

import json
import os
from pathlib import Path

from structlog.testing import capture_logs

from patterd.store import CallStore
from patterd.store.writer import RecordWriter, append_line, write_atomic
from tests.store.helpers import call_events


def test_unwritable_calls_dir_is_counted_and_the_call_goes_on(tmp_path: Path) -> None:
    (tmp_path / "calls").write_text("not a directory")  # root is writable, the tree is not
    store = CallStore(tmp_path)
    with capture_logs() as logs:
        for event in call_events():
            store.handle(event)
        store.flush()
    assert store.write_errors >= 12  # every metadata write and line append failed
    assert store.stats()["write_errors"] == store.write_errors
    warnings = [
        entry for entry in logs if entry["event"] == "store_write_failed" and entry["log_level"] == "warning"
    ]
    assert len(warnings) == 1  # one warning per call, the rest at debug
    # the call is still visible from memory
    page, _ = store.list_calls()
    assert [c["call_id"] for c in page] == ["call-1"]
    assert store.get_call("call-1") is not None
    store.close()


def test_root_that_is_a_file_disables_index_but_not_calls(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.write_text("a file")
    store = CallStore(root)
    for event in call_events():
        store.handle(event)
    store.flush()
    assert store.write_errors > 0
    assert [c["call_id"] for c in store.list_calls()[0]] == ["call-1"]
    assert store.hydrate().records == 0
    store.close()


def test_write_atomic_replaces_and_leaves_no_tmp(tmp_path: Path) -> None:
    path = tmp_path / "metadata.json"
    write_atomic(path, b'{"a": 1}')
    write_atomic(path, b'{"a": 2}')
    assert json.loads(path.read_text()) == {"a": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metadata.json"]


def test_append_line_is_one_write(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    append_line(path, b"one\n")
    append_line(path, b"two\n")
    assert path.read_bytes() == b"one\ntwo\n"


def test_writer_survives_a_vanished_directory(tmp_path: Path) -> None:
    writer = RecordWriter(tmp_path / "calls")
    writer.append("2026/03/14/c", "events.jsonl", {"n": 1})
    writer.flush()
    os.remove(tmp_path / "calls/2026/03/14/c/events.jsonl")
    os.rmdir(tmp_path / "calls/2026/03/14/c")  # e.g. retention raced a late event
    writer.append("2026/03/14/c", "events.jsonl", {"n": 2})
    writer.flush()
    assert writer.errors == 1
    writer.append("2026/03/14/c", "events.jsonl", {"n": 3})  # the directory is made again
    writer.close()
    assert (tmp_path / "calls/2026/03/14/c/events.jsonl").read_text() == '{"n":3}\n'
