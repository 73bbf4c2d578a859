"""One call's record in memory, built from call events: metadata, transcript and event lines."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from patterd.clock import iso_ms
from patterd.cost import call_cost
from patterd.protocols.events import (
    FINAL_STATUSES,
    CallEnded,
    CallEvent,
    CallFailed,
    CallStarted,
    CallStatusChanged,
    MachineDetected,
    RecordingReady,
    TranscriptLine,
    TransferStarted,
    Usage,
)
from patterd.protocols.jsontext import clean, clean_text
from patterd.redact import RedactMode, redact_number, redact_numbers_deep, redact_numbers_in

SCHEMA_VERSION = "1.0"
# Statuses a record may be left in by a crash; hydrate turns them into `failed`.
OPEN_STATUSES = frozenset({"ringing", "in_progress"})
CRASH_ERROR = "daemon stopped during call"
TRANSCRIPT_OPTIONAL = (
    "latency_ms",
    "stt_ms",
    "llm_ttft_ms",
    "tts_ttfb_ms",
    "endpointing_ms",
    "engine_ms",
    "transport_ms",
    "heard_ms",
    "network_ms",
)


def day_path(started: datetime | str) -> str:
    """`YYYY/MM/DD` of a call start (UTC), the day directory under `<root>/calls/`."""
    text = started if isinstance(started, str) else iso_ms(started)
    return f"{text[0:4]}/{text[5:7]}/{text[8:10]}"


def call_path(call_id: str, started: datetime | str) -> str:
    """`YYYY/MM/DD/<call_id>`: a call's directory relative to `<root>/calls/`."""
    if not call_id or call_id in (".", "..") or "/" in call_id or "\\" in call_id or "\0" in call_id:
        raise ValueError(f"call_id {call_id!r} cannot name a directory; expected a plain name")
    return str(PurePosixPath(day_path(started)) / call_id)


def percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile (`q` in 0..100) of sorted values, None when empty."""
    if not ordered:
        return None
    rank = max(1, math.ceil(len(ordered) * q / 100))
    return round(ordered[rank - 1], 1)


def latency_summary(latencies: list[float]) -> dict[str, float | None]:
    """The metadata `latency` object over assistant turn latencies."""
    ordered = sorted(latencies)
    return {
        "p50_ms": percentile(ordered, 50),
        "p95_ms": percentile(ordered, 95),
        "p99_ms": percentile(ordered, 99),
    }


def heard_on_line(transcript: list[dict[str, Any]], heard: Mapping[str, Any]) -> bool:
    """Put a `turn_heard` event's data on the assistant line it names (by `ts`; one without heard_ms yet).

    transcript.jsonl is append-only: a report that came after its line was written lives in events.jsonl
    and is folded in here, in memory and whenever a stored call is read. The line is replaced by a new
    dict, never changed in place (the old one may still be queued for the writer thread).
    """
    ts, heard_ms, network_ms = heard.get("line_ts"), heard.get("heard_ms"), heard.get("network_ms")
    if not isinstance(heard_ms, int | float) or not isinstance(network_ms, int | float):
        return False
    for i in range(len(transcript) - 1, -1, -1):
        line = transcript[i]
        if line.get("ts") == ts and line.get("role") == "assistant" and "heard_ms" not in line:
            transcript[i] = {**line, "heard_ms": heard_ms, "network_ms": network_ms}
            return True
    return False


def with_late_reports(call: dict[str, Any]) -> dict[str, Any]:
    """A stored call ({metadata, transcript, events}) with its `turn_heard` events on their lines."""
    reports = [
        e["data"]
        for e in call.get("events") or ()
        if isinstance(e, dict) and e.get("type") == "turn_heard" and isinstance(e.get("data"), dict)
    ]
    if reports:
        transcript = list(call.get("transcript") or ())
        for report in reports:
            heard_on_line(transcript, report)
        call["transcript"] = transcript
    return call


def json_line(obj: Mapping[str, Any]) -> bytes:
    """One JSONL line, newline included, ready for a single write; always valid UTF-8.

    Text from callers and engines can hold lone UTF-16 surrogates (a JSON `\\ud800` escape), which
    UTF-8 cannot encode: such a line is written with U+FFFD in their place instead of failing.
    """
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str) + "\n"
    try:
        return text.encode()
    except UnicodeEncodeError:
        return clean_text(text).encode()


def closed_by_crash(
    meta: Mapping[str, Any], transcript: list[dict[str, Any]], events: list[dict[str, Any]], now: datetime
) -> dict[str, Any]:
    """A record its daemon left open (a crash), closed as `failed`: turns and end time from its lines."""
    stamps = [str(o["ts"]) for o in (*transcript, *events) if isinstance(o.get("ts"), str)]
    ended_at = max([meta["started_at"], *stamps])
    latencies = [
        float(o["latency_ms"])
        for o in transcript
        if o.get("role") == "assistant" and isinstance(o.get("latency_ms"), int | float)
    ]
    out = dict(meta)
    out["status"] = "failed"
    out["error"] = CRASH_ERROR
    out["ended_at"] = ended_at
    out["turns"] = max(int(meta.get("turns") or 0), len(transcript))
    if latencies:
        out["latency"] = latency_summary(latencies)
    try:
        start = datetime.fromisoformat(meta["started_at"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(ended_at.replace("Z", "+00:00"))
        out["duration_ms"] = max(0, int((end - start).total_seconds() * 1000))
    except ValueError:
        out["duration_ms"] = None
    out.setdefault("recovered_at", iso_ms(now))
    return out


@dataclass
class CallRecord:
    """A call as the store sees it; `apply` folds events in, `metadata` renders metadata.json."""

    call_id: str
    started_at: datetime
    redact: RedactMode
    pricing: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    trace_id: str = ""
    direction: str = "inbound"
    caller: str = ""
    callee: str = ""
    carrier: str = ""
    carrier_call_id: str = ""
    agent: str = ""
    agent_provider: str = ""
    status: str = "in_progress"
    ended_at: datetime | None = None
    duration_ms: int | None = None
    error: str | None = None
    turns: int = 0
    barge_ins: int = 0
    errors: int = 0  # CallFailed events: the dashboard warns about a "completed" call that had them
    latencies: list[float] = field(default_factory=list)
    usages: list[tuple[str, str, dict[str, float]]] = field(default_factory=list)
    answered_by: str | None = None
    recording_url: str | None = None
    source: str = ""  # a fleet member's or Patter app's call (docs/operations.md "One dashboard for a fleet")

    @classmethod
    def start(
        cls, event: CallEvent, redact: RedactMode, pricing: Mapping[str, Mapping[str, float]]
    ) -> CallRecord:
        """A record for the first event seen of a call (normally CallStarted)."""
        record = cls(call_id=event.call_id, started_at=event.ts, redact=redact, pricing=pricing)
        if isinstance(event, CallStarted):
            record.trace_id = event.trace_id
            record.direction = event.direction
            # Caller-supplied: cleaned here too (not only at the edge) so no event can make a record unwritable.
            record.caller = redact_number(clean_text(event.caller), redact)
            record.callee = redact_number(clean_text(event.callee), redact)
            record.carrier = event.carrier
            record.carrier_call_id = event.carrier_call_id
            record.agent = event.agent
            record.agent_provider = event.agent_provider
            record.source = clean_text(event.source)
        return record

    @property
    def relpath(self) -> str:
        return call_path(self.call_id, self.started_at)

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    def apply(self, event: CallEvent) -> bool:
        """Fold one event in; True when metadata.json must be rewritten (status or end changed)."""
        if isinstance(event, CallStatusChanged):
            if self.finished:  # a late status after the end must not reopen the call
                return False
            self.status = event.status
            return True
        if isinstance(event, CallEnded):
            self.status = event.status
            self.ended_at = event.ts
            elapsed = int((event.ts - self.started_at).total_seconds() * 1000)
            self.duration_ms = event.duration_ms or max(0, elapsed)
            self.error = redact_numbers_in(event.error, self.redact) if event.error else event.error
            return True
        if isinstance(event, TranscriptLine):
            self.turns += 1
            if event.role == "assistant" and event.latency_ms is not None:
                self.latencies.append(float(event.latency_ms))
            return False
        if isinstance(event, Usage):
            self.usages.append((event.component, event.provider, dict(event.quantities)))
            return self.finished  # usage after the end changes the stored cost
        if isinstance(event, MachineDetected):
            self.answered_by = event.answered_by
            return self.finished
        if isinstance(event, RecordingReady):
            self.recording_url = event.url
            return self.finished  # recordings arrive after the call ended
        if isinstance(event, CallFailed):
            self.errors += 1
            return self.finished
        if event.type == "barge_in":
            self.barge_ins += 1
        return False

    def metadata(self) -> dict[str, Any]:
        """metadata.json content (contracts §4), with extra keys readers may ignore; every string encodable."""
        meta: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "call_id": self.call_id,
            "trace_id": self.trace_id,
            "started_at": iso_ms(self.started_at),
            "ended_at": iso_ms(self.ended_at) if self.ended_at else None,
            "duration_ms": self.duration_ms,
            "status": self.status,
            "caller": self.caller,
            "callee": self.callee,
            "telephony_provider": self.carrier,
            "provider_mode": "pipeline" if self.agent_provider == "pipeline" else "realtime",
            "agent": {"name": self.agent, "provider": self.agent_provider},
            "turns": self.turns,
            "cost": call_cost(
                self.usages,
                carrier=self.carrier,
                direction=self.direction,
                duration_ms=self.duration_ms,
                overrides=self.pricing,
            ),
            "latency": latency_summary(self.latencies),
            "error": self.error,
            "direction": self.direction,
            "carrier_call_id": self.carrier_call_id,
            "answered_by": self.answered_by,
            "recording_url": self.recording_url,
            "barge_ins": self.barge_ins,
            "errors": self.errors,
            **({"source": self.source} if self.source else {}),  # local calls keep their shape
        }
        # Error texts and provider names can quote what a caller or an engine sent: clean them all.
        cleaned: dict[str, Any] = clean(meta)
        return cleaned

    def transcript_line(self, event: TranscriptLine) -> dict[str, Any]:
        """A transcript.jsonl object."""
        line: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "ts": iso_ms(event.ts),
            "role": event.role,
            "text": clean_text(event.text),
        }
        for key in TRANSCRIPT_OPTIONAL:
            value = getattr(event, key)
            if value is not None:
                line[key] = value
        if event.interrupted:
            line["interrupted"] = True
        return line

    def event_line(self, event: CallEvent) -> dict[str, Any]:
        """An events.jsonl object; phone numbers inside are redacted like the metadata."""
        data = event.data()
        if isinstance(event, CallStarted):
            data["caller"] = self.caller
            data["callee"] = self.callee
        elif isinstance(event, TransferStarted):
            data["to"] = redact_number(event.to, self.redact)
        return {
            "schema_version": SCHEMA_VERSION,
            "ts": iso_ms(event.ts),
            "type": event.type,
            # Numbers inside text too: "transferred to +1555…" reasons, tool arguments and results.
            "data": redact_numbers_deep(clean(data), self.redact),
        }
