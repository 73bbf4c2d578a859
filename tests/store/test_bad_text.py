"""Text no UTF-8 encoder accepts (lone surrogates) never makes a record unwritable or a listing fail."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from patterd.protocols.events import CallEnded, CallStarted, ToolCalled, TranscriptLine
from patterd.store import CallStore
from patterd.store.records import CallRecord, json_line
from tests.store.helpers import T0, FakeClock, call_events

LONE = "\ud800"  # what JSON "\ud800" parses to with the standard library


def encodable(value: object) -> bytes:
    """What the API does with a listing: JSON, then UTF-8 (raises on a lone surrogate)."""
    return json.dumps(value, ensure_ascii=False).encode()


def poisoned(call_id: str) -> list[object]:
    """A call whose caller, callee, transcript, tool arguments and error all carry lone surrogates."""
    return [
        CallStarted(
            call_id,
            T0,
            direction="inbound",
            agent="a",
            agent_provider="pipeline",
            carrier="local",
            caller=f"+1555{LONE}",
            callee=LONE,
        ),
        TranscriptLine(call_id, T0 + timedelta(seconds=1), role="user", text=f"hi {LONE} there"),
        ToolCalled(call_id, T0 + timedelta(seconds=2), name="lookup", arguments={LONE: LONE}, result=LONE),
        CallEnded(call_id, T0 + timedelta(seconds=3), status="failed", error=f"engine said {LONE}"),
    ]


@pytest.mark.parametrize("redact", ["full", "mask", "hash_only"])
def test_surrogates_are_written_cleaned_and_listed(tmp_path: Path, redact: str) -> None:
    store = CallStore(tmp_path, redact_phone=redact, clock=FakeClock())
    for event in [*call_events("good-1", T0 - timedelta(minutes=5)), *poisoned("bad-1")]:
        store.handle(event)  # type: ignore[arg-type]
    assert store.flush(10)
    assert store.write_errors == 0 and store.stats()["handle_errors"] == 0
    page, _ = store.list_calls()
    assert [m["call_id"] for m in page] == ["bad-1", "good-1"]
    encodable(page)
    detail = store.get_call("bad-1")
    assert detail is not None
    encodable(detail)
    assert detail["transcript"][0]["text"] == "hi \ufffd there"
    # On disk: every file is valid UTF-8 JSON with U+FFFD where the surrogates were.
    directory = next(tmp_path.glob("calls/*/*/*/bad-1"))
    for name in ("metadata.json", "transcript.jsonl", "events.jsonl"):
        for line in (directory / name).read_bytes().decode("utf-8").splitlines():
            json.loads(line)
    meta = json.loads((directory / "metadata.json").read_text())
    assert meta["error"] == "engine said \ufffd" and LONE not in json.dumps(meta, ensure_ascii=False)
    store.close()

    # A fresh process hydrating the tree lists and shows it too.
    again = CallStore(tmp_path, redact_phone=redact, clock=FakeClock())
    report = again.hydrate()
    assert report.records == 2 and report.skipped_corrupt == 0
    page, _ = again.list_calls()
    encodable(page)
    assert encodable(again.get_call("bad-1"))
    again.close()


def test_a_foreign_record_with_escaped_surrogates_is_listed_cleaned(tmp_path: Path) -> None:
    """metadata.json written by another tool with ASCII escapes (`"\\ud800"`): hydrate cleans what it indexes."""
    directory = tmp_path / "calls" / "2026" / "03" / "14" / "foreign-1"
    directory.mkdir(parents=True)
    meta = {
        "schema_version": "1.0",
        "call_id": "foreign-1",
        "started_at": "2026-03-14T12:00:00.000Z",
        "status": "completed",
        "caller": LONE,
        "agent": {"name": "a", "provider": "pipeline"},
    }
    (directory / "metadata.json").write_text(json.dumps(meta))  # ensure_ascii: "\ud800" escapes
    (directory / "transcript.jsonl").write_text(json.dumps({"role": "user", "text": LONE}) + "\n")
    store = CallStore(tmp_path, clock=FakeClock())
    assert store.hydrate().records == 1
    page, _ = store.list_calls()
    assert page[0]["caller"] == "\ufffd"
    encodable(page)
    detail = store.get_call("foreign-1")
    assert detail is not None and detail["transcript"][0]["text"] == "\ufffd"
    encodable(detail)
    store.close()


@pytest.mark.parametrize("on_disk", [False, True])
def test_a_record_that_cannot_be_rendered_is_left_out_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_disk: bool
) -> None:
    """In memory only it is left out; with a root the listing shows its last state on disk instead."""
    store = CallStore(tmp_path if on_disk else None, clock=FakeClock())
    for event in call_events("ok-1", T0, end=False) + call_events("broken-1", T0, end=False):
        store.handle(event)
    assert store.flush(10)
    real = CallRecord.metadata

    def metadata(self: CallRecord) -> dict[str, object]:
        if self.call_id == "broken-1":
            raise RuntimeError("a bug rendering this record")
        return real(self)

    monkeypatch.setattr(CallRecord, "metadata", metadata)
    store.handle(TranscriptLine("broken-1", T0, role="user", text="x"))  # drops its cached rendering
    store.handle(TranscriptLine("ok-1", T0, role="user", text="x"))
    page, _ = store.list_calls()
    assert [m["call_id"] for m in page] == (["ok-1", "broken-1"] if on_disk else ["ok-1"])
    encodable(page)
    assert store.stats()["handle_errors"] >= 1
    store.close()


def test_json_line_is_always_utf8() -> None:
    line = json_line({"text": f"a{LONE}b", LONE: 1})
    assert json.loads(line.decode("utf-8")) == {"text": "a\ufffdb", "\ufffd": 1}
