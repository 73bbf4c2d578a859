"""A stored call record rebuilt as a live `CallRecord`, so events that arrive later continue it.

Used when another daemon's call (fleet ingest) outlives this process: after a restart the record is on
disk (closed `failed` by crash recovery if it was open), and its remaining lines and end come in later.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from patterd.redact import RedactMode
from patterd.store.records import CRASH_ERROR, CallRecord


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def resumed_record(
    stored: Mapping[str, Any], redact: RedactMode, pricing: Mapping[str, Mapping[str, float]]
) -> CallRecord | None:
    """`{"metadata", "transcript", "events"}` → its CallRecord (None when the metadata is unusable).

    A record crash recovery closed (`recovered_at`, the crash error) is open again: the call went on elsewhere.
    """
    meta = stored.get("metadata") or {}
    started = _time(meta.get("started_at"))
    if started is None or not isinstance(meta.get("call_id"), str):
        return None
    agent: Mapping[str, Any] = meta["agent"] if isinstance(meta.get("agent"), dict) else {}
    record = CallRecord(call_id=meta["call_id"], started_at=started, redact=redact, pricing=pricing)
    record.trace_id = str(meta.get("trace_id") or "")
    record.direction = str(meta.get("direction") or "inbound")
    record.caller = str(meta.get("caller") or "")  # stored redacted already: kept as stored
    record.callee = str(meta.get("callee") or "")
    record.carrier = str(meta.get("telephony_provider") or "")
    record.carrier_call_id = str(meta.get("carrier_call_id") or "")
    record.agent = str(agent.get("name") or "")
    record.agent_provider = str(agent.get("provider") or "")
    record.source = str(meta.get("source") or "")
    record.status = str(meta.get("status") or "in_progress")
    record.ended_at = _time(meta.get("ended_at"))
    record.duration_ms = meta.get("duration_ms") if isinstance(meta.get("duration_ms"), int) else None
    record.error = meta.get("error") if isinstance(meta.get("error"), str) else None
    record.answered_by = meta.get("answered_by") if isinstance(meta.get("answered_by"), str) else None
    record.recording_url = meta.get("recording_url") if isinstance(meta.get("recording_url"), str) else None
    record.barge_ins = int(meta.get("barge_ins") or 0)
    record.errors = int(meta.get("errors") or 0)
    transcript = stored.get("transcript") or []
    record.turns = len(transcript)
    record.latencies = [
        float(t["latency_ms"])
        for t in transcript
        if t.get("role") == "assistant" and isinstance(t.get("latency_ms"), int | float)
    ]
    for line in stored.get("events") or []:
        data = line.get("data") or {}
        if line.get("type") == "usage" and isinstance(data.get("quantities"), dict):
            record.usages.append(
                (str(data.get("component")), str(data.get("provider")), dict(data["quantities"]))
            )
    if meta.get("recovered_at") and record.error == CRASH_ERROR:
        record.status, record.ended_at, record.duration_ms, record.error = "in_progress", None, None, None
    return record
