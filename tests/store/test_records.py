"""Call records on disk: layout, exact metadata fields, JSONL lines, redaction, atomic writes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from patterd.protocols.events import CallEnded, CallStarted, RecordingReady, TranscriptLine
from patterd.store import CallStore
from tests.store.helpers import T0, FakeClock, call_events

CONTRACT_KEYS = {
    "schema_version",
    "call_id",
    "trace_id",
    "started_at",
    "ended_at",
    "duration_ms",
    "status",
    "caller",
    "callee",
    "telephony_provider",
    "provider_mode",
    "agent",
    "turns",
    "cost",
    "latency",
    "error",
}


def run_call(store: CallStore, **kwargs: object) -> None:
    for event in call_events(**kwargs):  # type: ignore[arg-type]
        store.handle(event)
    store.flush()


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_layout_and_metadata_fields(tmp_path: Path) -> None:
    store = CallStore(tmp_path, redact_phone="full", retention_days=30, clock=FakeClock())
    run_call(store)
    directory = tmp_path / "calls" / "2026" / "03" / "14" / "call-1"
    assert sorted(p.name for p in directory.iterdir()) == [
        "events.jsonl",
        "metadata.json",
        "transcript.jsonl",
    ]
    meta = json.loads((directory / "metadata.json").read_text())
    assert set(meta) >= CONTRACT_KEYS
    assert meta["schema_version"] == "1.0"
    assert meta["call_id"] == "call-1"
    assert meta["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert meta["started_at"] == "2026-03-14T12:00:00.123Z"
    assert meta["ended_at"] == "2026-03-14T12:01:01.123Z"
    assert meta["duration_ms"] == 61_000
    assert meta["status"] == "completed"
    assert (meta["caller"], meta["callee"]) == ("+15551234567", "+15550001234")
    assert meta["telephony_provider"] == "twilio"
    assert meta["provider_mode"] == "realtime"
    assert meta["agent"] == {"name": "receptionist", "provider": "openai_realtime"}
    assert meta["turns"] == 3
    # 10k audio in × $32/1M + 5k audio out × $64/1M; 2 started minutes × $0.0085 (Twilio inbound)
    assert meta["cost"] == {"total": 0.657, "stt": 0.0, "tts": 0.0, "llm": 0.64, "telephony": 0.017}
    assert meta["latency"] == {"p50_ms": 500.0, "p95_ms": 700.0, "p99_ms": 700.0}
    assert meta["error"] is None
    assert meta["barge_ins"] == 1
    store.close()


def test_transcript_and_events_lines(tmp_path: Path) -> None:
    store = CallStore(tmp_path)
    run_call(store)
    directory = tmp_path / "calls" / "2026" / "03" / "14" / "call-1"
    transcript = read_lines(directory / "transcript.jsonl")
    assert transcript[0] == {
        "schema_version": "1.0",
        "ts": "2026-03-14T12:00:03.123Z",
        "role": "user",
        "text": "Hi there",
        "stt_ms": 120.0,
    }
    assert transcript[1]["latency_ms"] == 500.0 and transcript[1]["tts_ttfb_ms"] == 90.0
    assert transcript[2]["interrupted"] is True
    events = read_lines(directory / "events.jsonl")
    types = [e["type"] for e in events]
    assert types == [
        "call_started",
        "status",
        "tool_call",
        "barge_in",
        "dtmf",
        "transfer",
        "usage",
        "call_ended",
    ]
    assert all(e["schema_version"] == "1.0" and isinstance(e["data"], dict) for e in events)
    assert events[2]["data"]["arguments"] == {"id": 7}
    store.close()


@pytest.mark.parametrize(
    ("mode", "caller", "transfer_to"),
    [
        ("full", "+15551234567", "+15550009999"),
        ("mask", "***4567", "***9999"),
        ("hash_only", "sha256:5f8f5ae8c3b7e0a1", None),
    ],
)
def test_redaction_modes(tmp_path: Path, mode: str, caller: str, transfer_to: str | None) -> None:
    import hashlib
    import hmac

    from patterd import hash_key

    store = CallStore(tmp_path, redact_phone=mode)
    if mode == "hash_only":  # HMAC-SHA256 under the key the store made beside its records
        key = hash_key.current_key()
        caller = "sha256:" + hmac.new(key, b"+15551234567", hashlib.sha256).hexdigest()[:16]
        transfer_to = "sha256:" + hmac.new(key, b"+15550009999", hashlib.sha256).hexdigest()[:16]
    run_call(store)
    directory = tmp_path / "calls" / "2026" / "03" / "14" / "call-1"
    meta = json.loads((directory / "metadata.json").read_text())
    assert meta["caller"] == caller
    events = (directory / "events.jsonl").read_text()
    if mode != "full":
        assert "+15551234567" not in events and "+15550001234" not in events and "5550009999" not in events
    assert read_lines(directory / "events.jsonl")[5]["data"]["to"] == transfer_to
    assert store.get_call("call-1")["metadata"]["caller"] == caller  # type: ignore[index]
    store.close()


def test_unknown_redaction_mode_is_an_error() -> None:
    with pytest.raises(ValueError, match="redact_phone is 'partial'; expected one of full, mask, hash_only"):
        CallStore(None, redact_phone="partial")


def test_call_crossing_midnight_stays_in_its_start_day(tmp_path: Path) -> None:
    store = CallStore(tmp_path)
    start = datetime(2026, 12, 31, 23, 59, 30, tzinfo=UTC)
    run_call(store, call_id="late", start=start)
    directory = tmp_path / "calls" / "2026" / "12" / "31" / "late"
    meta = json.loads((directory / "metadata.json").read_text())
    assert meta["ended_at"].startswith("2027-01-01T00:00:31")
    assert not (tmp_path / "calls" / "2027").exists()
    assert len(read_lines(directory / "transcript.jsonl")) == 3
    store.close()


def test_no_tmp_files_left_and_metadata_rewritten_on_status(tmp_path: Path) -> None:
    store = CallStore(tmp_path)
    events = call_events(end=False)
    for event in events[:1]:
        store.handle(event)
    store.flush()
    path = tmp_path / "calls" / "2026" / "03" / "14" / "call-1" / "metadata.json"
    assert json.loads(path.read_text())["status"] == "in_progress"
    assert json.loads(path.read_text())["ended_at"] is None
    for event in events[1:]:
        store.handle(event)
    store.handle(CallEnded("call-1", T0 + timedelta(seconds=5), status="no-answer"))
    store.flush()
    assert json.loads(path.read_text())["status"] == "no-answer"
    assert not list(tmp_path.rglob("*.tmp"))
    store.close()


def test_late_recording_updates_finished_record(tmp_path: Path) -> None:
    store = CallStore(tmp_path)
    run_call(store)
    store.handle(
        RecordingReady("call-1", T0 + timedelta(seconds=90), url="https://x/rec.wav", duration_secs=60)
    )
    store.flush()
    path = tmp_path / "calls" / "2026" / "03" / "14" / "call-1" / "metadata.json"
    assert json.loads(path.read_text())["recording_url"] == "https://x/rec.wav"
    assert json.loads(path.read_text())["status"] == "completed"
    store.close()


def test_call_failed_before_connecting_gets_a_record(tmp_path: Path) -> None:
    store = CallStore(tmp_path)
    store.handle(CallStarted("out-1", T0, direction="outbound", carrier="twilio", callee="+15550002222"))
    store.handle(CallEnded("out-1", T0 + timedelta(seconds=30), status="busy", error="carrier said busy"))
    store.flush()
    meta = store.get_call("out-1")["metadata"]  # type: ignore[index]
    assert (meta["status"], meta["error"], meta["cost"]["telephony"]) == ("busy", "carrier said busy", 0.014)
    store.close()


def test_memory_only_store(tmp_path: Path) -> None:
    store = CallStore(None)
    run_call(store, end=False)
    assert [c["call_id"] for c in store.live_calls()] == ["call-1"]
    store.handle(TranscriptLine("call-1", T0 + timedelta(seconds=20), role="user", text="bye"))
    detail = store.get_call("call-1")
    assert detail is not None and detail["transcript"][-1]["text"] == "bye"
    store.handle(CallEnded("call-1", T0 + timedelta(seconds=30)))
    assert store.live_calls() == []
    page, cursor = store.list_calls()
    assert [c["call_id"] for c in page] == ["call-1"] and cursor is None
    assert store.stats()["records"] == 1
    assert not list(tmp_path.iterdir())
    store.close()


def test_handle_never_raises_on_a_bad_event(tmp_path: Path) -> None:
    store = CallStore(tmp_path)
    store.handle(CallStarted("../escape", T0))  # not a directory name: logged, dropped
    store.handle(object())  # type: ignore[arg-type]
    store.flush()
    assert not (tmp_path / "escape").exists()
    assert store.live_calls() == []
    store.close()


def test_latency_percentiles_nearest_rank() -> None:
    from patterd.store.records import latency_summary

    assert latency_summary([]) == {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    values = [float(v) for v in range(100, 0, -1)]  # 1..100, unsorted
    assert latency_summary(values) == {"p50_ms": 50.0, "p95_ms": 95.0, "p99_ms": 99.0}


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "a\\b", "a\0b"])
def test_call_ids_that_cannot_name_a_directory(bad: str) -> None:
    from patterd.store.records import call_path

    with pytest.raises(ValueError, match="cannot name a directory"):
        call_path(bad, T0)


@pytest.mark.parametrize("mode", ["mask", "hash_only"])
def test_numbers_inside_text_follow_the_redaction_mode(tmp_path: Path, mode: str) -> None:
    # A transfer's call_ended reason, an error message and tool arguments all quote numbers.
    from patterd.protocols.events import ToolCalled
    from patterd.redact import redact_number

    store = CallStore(tmp_path, redact_phone=mode)
    for event in call_events(end=False):
        store.handle(event)
    t = T0 + timedelta(seconds=20)
    store.handle(
        ToolCalled(
            "call-1", t, name="crm", arguments={"phone": "+15550009999"}, result='{"for": "+15551234567"}'
        )
    )
    store.handle(
        CallEnded(
            "call-1",
            t,
            status="completed",
            reason="transferred to +15550009999",
            error="carrier refused +15550009999",
        )
    )
    store.flush()
    directory = tmp_path / "calls" / "2026" / "03" / "14" / "call-1"
    events = (directory / "events.jsonl").read_text()
    meta = json.loads((directory / "metadata.json").read_text())
    store.close()
    shown = redact_number("+15550009999", mode)  # type: ignore[arg-type]
    assert "5550009999" not in events and "5551234567" not in events
    ended = read_lines(directory / "events.jsonl")[-1]
    assert ended["data"]["reason"] == f"transferred to {shown}"
    assert meta["error"] == f"carrier refused {shown}"
    tool = [e for e in read_lines(directory / "events.jsonl") if e["type"] == "tool_call"][-1]
    assert tool["data"]["arguments"] == {"phone": shown}
