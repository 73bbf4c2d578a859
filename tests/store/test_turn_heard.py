"""A caller's report that came after its line was written: kept in events.jsonl (transcript.jsonl stays
append-only), folded onto its line in memory and whenever the stored call is read, torn lines tolerated."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from patterd.clock import iso_ms
from patterd.protocols.events import CallEnded, CallStarted, TranscriptLine, TurnHeard
from patterd.store import CallStore
from patterd.store.records import heard_on_line, with_late_reports
from tests.store.helpers import T0, FakeClock

ANSWER_TS = T0 + timedelta(seconds=2)


def events(call_id: str = "call-heard") -> list[object]:
    return [
        CallStarted(call_id, T0, agent="desk", carrier="local", caller="+15551234567"),
        TranscriptLine(call_id, T0 + timedelta(seconds=1), role="user", text="when do you open"),
        TranscriptLine(
            call_id, ANSWER_TS, role="assistant", text="At nine.", latency_ms=620.0, transport_ms=620.0
        ),
        TurnHeard(
            call_id,
            T0 + timedelta(seconds=3),
            line_ts=iso_ms(ANSWER_TS),
            latency_ms=620.0,
            heard_ms=641.5,
            network_ms=21.5,
        ),
        CallEnded(call_id, T0 + timedelta(seconds=5), status="completed", duration_ms=5000),
    ]


def answer(call: dict[str, object]) -> dict[str, object]:
    transcript = call["transcript"]
    assert isinstance(transcript, list)
    return next(line for line in transcript if line["role"] == "assistant")


def test_a_late_report_is_on_its_line_live_and_after_a_restart(tmp_path: Path) -> None:
    store = CallStore(tmp_path, clock=FakeClock())
    for event in events():
        store.handle(event)  # type: ignore[arg-type]
    live = store.get_call("call-heard")
    assert live is not None
    assert answer(live) == {
        "schema_version": "1.0",
        "ts": iso_ms(ANSWER_TS),
        "role": "assistant",
        "text": "At nine.",
        "latency_ms": 620.0,
        "transport_ms": 620.0,
        "heard_ms": 641.5,
        "network_ms": 21.5,
    }
    store.flush()
    store.close()
    directory = next((tmp_path / "calls").glob("*/*/*/call-heard"))
    written = [json.loads(x) for x in (directory / "transcript.jsonl").read_text().splitlines()]
    assert "heard_ms" not in written[1]  # append-only: the line as it was written
    kinds = [json.loads(x)["type"] for x in (directory / "events.jsonl").read_text().splitlines()]
    assert "turn_heard" in kinds

    again = CallStore(tmp_path, clock=FakeClock())
    again.hydrate()
    stored = again.get_call("call-heard")
    assert stored is not None
    assert (answer(stored)["heard_ms"], answer(stored)["network_ms"]) == (641.5, 21.5)
    # A kill during that append tears at most that line: the record reads as before the report.
    text = (directory / "events.jsonl").read_text()
    cut = text.index('"turn_heard"') + 5
    (directory / "events.jsonl").write_text(text[:cut])
    torn = again.get_call("call-heard")
    assert torn is not None and "heard_ms" not in answer(torn) and answer(torn)["latency_ms"] == 620.0
    again.close()


def test_heard_on_line_takes_the_newest_unreported_assistant_line_with_that_ts() -> None:
    ts = iso_ms(T0)
    transcript: list[dict[str, Any]] = [
        {"ts": ts, "role": "assistant", "text": "a", "latency_ms": 100.0},
        {"ts": ts, "role": "user", "text": "b"},
        {"ts": ts, "role": "assistant", "text": "c", "latency_ms": 200.0},
    ]
    original = transcript[2]
    report = {"line_ts": ts, "latency_ms": 200.0, "heard_ms": 210.0, "network_ms": 10.0}
    assert heard_on_line(transcript, report)
    # A new dict: the old one may still be queued for the writer thread.
    assert transcript[2]["heard_ms"] == 210.0 and "heard_ms" not in original
    assert heard_on_line(transcript, report | {"heard_ms": 105.0, "network_ms": 5.0})
    assert transcript[0]["heard_ms"] == 105.0 and transcript[2]["heard_ms"] == 210.0
    assert not heard_on_line(transcript, report)  # every line with that ts is reported
    assert not heard_on_line(transcript, report | {"line_ts": "2020-01-01T00:00:00.000Z"})
    assert not heard_on_line([{"ts": ts, "role": "assistant"}], report | {"heard_ms": "210"})  # not a number
    stored = {
        "transcript": [{"ts": ts, "role": "assistant"}],
        "events": [{"type": "turn_heard", "data": report}],
    }
    assert with_late_reports(stored)["transcript"][0]["network_ms"] == 10.0
    assert (
        with_late_reports({"transcript": [], "events": [{"type": "turn_heard"}, "junk"]})["transcript"] == []
    )
