"""Patter SDK ingest payloads (`POST /api/dashboard/ingest`) as call events, the way getpatter's dashboard reads them.

The SDK posts three shapes (getpatter `dashboard/persistence.py`, `cli.py`, `dashboard/store.py`):
`status: "initiated"` for an outbound dial handed to the carrier; a call start without `ended_at`
(`call_id`, `caller`, `callee`, `direction`, `telephony_provider`, `custom_params`); and a call end with
`ended_at` (unix seconds), `transcript` ([{role, text, timestamp?}]) and `metrics` (CallMetrics as a dict:
`duration_seconds`, `cost`, `turns`, ...). Each is idempotent: a repeated start or end changes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from patterd.notify.wire import WireError, check_call_id, parse_ts
from patterd.protocols.events import (
    FINAL_STATUSES,
    CallEnded,
    CallEvent,
    CallStarted,
    CallStatusChanged,
    TranscriptLine,
)
from patterd.protocols.jsontext import clean_text

SOURCE = "patter-sdk"
MAX_TRANSCRIPT_LINES = 5000
# The SDK's end statuses → patterd's (an end reported while "in-progress" completed normally).
END_STATUS = {
    "in-progress": "completed",
    "in_progress": "completed",
    "webhook_error": "failed",
    "no_answer": "no-answer",
}
ROLES: dict[str, Literal["user", "assistant"]] = {
    "user": "user",
    "caller": "user",
    "assistant": "assistant",
    "agent": "assistant",
    "bot": "assistant",
}


class IngestError(ValueError):
    """A payload the ingest route refuses with `{"ok": false, "error": …}`."""


@dataclass(frozen=True)
class Known:
    """What this daemon already has of the call: nothing (None), or its status."""

    status: str


@dataclass(frozen=True)
class Ingested:
    """The events a payload becomes, and the kind of payload it was (`initiated`, `started`, `ended`)."""

    call_id: str
    kind: str
    events: list[CallEvent]


def ingest(data: object, known: Known | None, now: datetime) -> Ingested:
    """Translate one SDK payload, given what is known of its call; IngestError when malformed."""
    if not isinstance(data, dict):
        raise IngestError("the body must be a JSON object")
    if not data.get("call_id"):
        raise IngestError("missing call_id")
    try:
        call_id = check_call_id(data["call_id"])
    except WireError as exc:
        raise IngestError(f"invalid call_id: {exc}") from None
    if data.get("status") == "initiated":
        events: list[CallEvent] = []
        if known is None:
            events = [
                _started(call_id, data, now, "outbound"),
                CallStatusChanged(call_id, now, status="ringing"),
            ]
        return Ingested(call_id, "initiated", events)
    if data.get("ended_at"):
        return Ingested(call_id, "ended", _ended(call_id, data, known, now))
    if known is None:
        return Ingested(call_id, "started", [_started(call_id, data, now, "inbound")])
    if known.status == "ringing":  # the initiated dial was answered: media began
        return Ingested(call_id, "started", [CallStatusChanged(call_id, now, status="in_progress")])
    return Ingested(call_id, "started", [])


def _text(data: dict[str, Any], key: str, default: str = "") -> str:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise IngestError(f"{key} must be a string")
    return clean_text(value)[:256]


def _started(call_id: str, data: dict[str, Any], at: datetime, direction: str) -> CallStarted:
    given = _text(data, "direction", direction)
    if given not in ("inbound", "outbound"):
        raise IngestError("direction must be inbound or outbound")
    return CallStarted(
        call_id,
        at,
        direction=given,  # type: ignore[arg-type]  # checked just above
        caller=_text(data, "caller"),
        callee=_text(data, "callee"),
        carrier=_text(data, "telephony_provider"),
        source=SOURCE,
    )


def _time(value: object, key: str) -> datetime:
    """Unix seconds (what the SDK sends) or an ISO-8601 string."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or not 0 < value < 10**11:
            raise IngestError(f"{key} must be unix seconds")
        return datetime.fromtimestamp(value, UTC)
    try:
        return parse_ts(value)
    except WireError:
        raise IngestError(f"{key} must be unix seconds or an ISO-8601 time") from None


def _ended(call_id: str, data: dict[str, Any], known: Known | None, now: datetime) -> list[CallEvent]:
    ended_at = _time(data["ended_at"], "ended_at")
    metrics = data.get("metrics")
    if metrics is not None and not isinstance(metrics, dict):
        raise IngestError("metrics must be an object")
    duration = (metrics or {}).get("duration_seconds")
    if duration is not None and (
        not isinstance(duration, int | float) or isinstance(duration, bool) or not 0 <= duration < 10**7
    ):
        raise IngestError("metrics.duration_seconds must be a number of seconds")
    lines = _transcript(data.get("transcript"), ended_at, call_id)
    status = _text(data, "status", "completed") or "completed"
    status = END_STATUS.get(status, status)
    if status not in FINAL_STATUSES:
        raise IngestError(f"status {status!r} is not a final call status")
    if known is not None and known.status in FINAL_STATUSES:
        return []  # the end was ingested already
    events: list[CallEvent] = []
    if known is None:  # an end with no start seen: the call began `duration_seconds` before it ended
        started = ended_at - timedelta(seconds=float(duration or 0))
        if data.get("started_at"):
            started = _time(data["started_at"], "started_at")
        events.append(_started(call_id, data, min(started, ended_at), "inbound"))
    events.extend(lines)
    duration_ms = int(float(duration) * 1000) if duration is not None else 0
    events.append(
        CallEnded(
            call_id, ended_at, status=status, reason="reported by the Patter SDK", duration_ms=duration_ms
        )
    )
    return events


def _transcript(raw: object, ended_at: datetime, call_id: str) -> list[CallEvent]:
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_TRANSCRIPT_LINES:
        raise IngestError(f"transcript must be a list of at most {MAX_TRANSCRIPT_LINES} lines")
    lines: list[CallEvent] = []
    for index, line in enumerate(raw):
        if not isinstance(line, dict) or not isinstance(line.get("text"), str):
            raise IngestError(f"transcript[{index}] must be an object with a text string")
        role = ROLES.get(str(line.get("role", "")).lower())
        if role is None:
            raise IngestError(f"transcript[{index}].role must be user or assistant")
        stamp = line.get("timestamp")
        ts = _time(stamp, f"transcript[{index}].timestamp") if stamp else ended_at
        lines.append(TranscriptLine(call_id, min(ts, ended_at), role=role, text=clean_text(line["text"])))
    return lines
