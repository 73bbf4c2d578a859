"""Shared helpers for store tests: a settable clock and a scripted call's events."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from patterd.protocols.events import (
    BargeIn,
    CallEnded,
    CallEvent,
    CallStarted,
    CallStatusChanged,
    DtmfReceived,
    ToolCalled,
    TranscriptLine,
    TransferStarted,
    Usage,
)

T0 = datetime(2026, 3, 14, 12, 0, 0, 123000, tzinfo=UTC)


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current

    def monotonic(self) -> float:
        return time.monotonic()


def call_events(
    call_id: str = "call-1",
    start: datetime = T0,
    *,
    caller: str = "+15551234567",
    agent: str = "receptionist",
    carrier: str = "twilio",
    status: str = "completed",
    end: bool = True,
) -> list[CallEvent]:
    """A realistic call: start, two turns, a tool, a barge-in, a DTMF, usage, then the end."""

    def at(secs: float) -> datetime:
        return start + timedelta(seconds=secs)

    events: list[CallEvent] = [
        CallStarted(
            call_id,
            at(0),
            direction="inbound",
            agent=agent,
            agent_provider="openai_realtime",
            carrier=carrier,
            caller=caller,
            callee="+15550001234",
            carrier_call_id="CA123",
            trace_id="0af7651916cd43dd8448eb211c80319c",
        ),
        CallStatusChanged(call_id, at(1), status="in_progress"),
        TranscriptLine(call_id, at(3), role="user", text="Hi there", stt_ms=120.0),
        TranscriptLine(
            call_id,
            at(4),
            role="assistant",
            text="Hello!",
            latency_ms=500.0,
            llm_ttft_ms=200.0,
            tts_ttfb_ms=90.0,
        ),
        ToolCalled(
            call_id, at(5), name="lookup_order", arguments={"id": 7}, result="shipped", duration_ms=12.5
        ),
        BargeIn(call_id, at(6), played_ms=800, reaction_ms=140.0),
        TranscriptLine(
            call_id, at(7), role="assistant", text="Your order", latency_ms=700.0, interrupted=True
        ),
        DtmfReceived(call_id, at(8), digit="5"),
        TransferStarted(call_id, at(9), to="+15550009999"),
        Usage(
            call_id,
            at(10),
            component="llm",
            provider="openai_realtime",
            quantities={"input_audio_tokens": 10_000, "output_audio_tokens": 5_000},
        ),
    ]
    if end:
        events.append(CallEnded(call_id, at(61), status=status, reason="hangup"))
    return events
