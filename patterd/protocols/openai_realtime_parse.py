"""Sans-I/O parsing of OpenAI Realtime (GA) server frames into the dataclasses of `openai_realtime_events`."""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
from typing import Any

from patterd.protocols.openai_realtime_events import (
    AudioCommitted,
    ErrorEvent,
    FunctionCallArgumentsDone,
    InputTranscriptionCompleted,
    InputTranscriptionFailed,
    ItemTruncated,
    OtherEvent,
    OutputAudioDelta,
    OutputAudioDone,
    OutputItemAdded,
    OutputTranscriptDelta,
    OutputTranscriptDone,
    RealtimeProtocolError,
    ResponseCreated,
    ResponseDone,
    ResponseUsage,
    ServerEvent,
    SessionCreated,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    UnknownEvent,
)

# Documented GA server events that need no action here.
OTHER_EVENT_TYPES = frozenset(
    {
        "conversation.created",
        "conversation.item.added",
        "conversation.item.created",
        "conversation.item.done",
        "conversation.item.deleted",
        "conversation.item.retrieved",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.segment",
        "input_audio_buffer.cleared",
        "input_audio_buffer.timeout_triggered",
        "input_audio_buffer.dtmf_event_received",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "output_audio_buffer.cleared",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_text.delta",
        "response.output_text.done",
        "response.function_call_arguments.delta",
        "rate_limits_updated",
        "mcp_list_tools.in_progress",
        "mcp_list_tools.completed",
        "mcp_list_tools.failed",
    }
)


def _str(data: Mapping[str, Any], key: str, etype: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise RealtimeProtocolError(f"{etype}: field {key!r} is {value!r}, expected a string")
    return value


def _int(data: Mapping[str, Any], key: str, etype: str, default: int | None = None) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RealtimeProtocolError(f"{etype}: field {key!r} is {value!r}, expected an integer")
    return value


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def _dict(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _count(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def parse_usage(usage: Mapping[str, Any]) -> ResponseUsage:
    """Flatten a RealtimeResponseUsage object (missing counts are 0)."""
    inp = _dict(usage, "input_token_details")
    out = _dict(usage, "output_token_details")
    return ResponseUsage(
        input_tokens=_count(usage, "input_tokens"),
        output_tokens=_count(usage, "output_tokens"),
        input_text_tokens=_count(inp, "text_tokens"),
        input_audio_tokens=_count(inp, "audio_tokens"),
        cached_tokens=_count(inp, "cached_tokens"),
        output_text_tokens=_count(out, "text_tokens"),
        output_audio_tokens=_count(out, "audio_tokens"),
        cached_text_tokens=_count(_dict(inp, "cached_tokens_details"), "text_tokens"),
        cached_audio_tokens=_count(_dict(inp, "cached_tokens_details"), "audio_tokens"),
    )


def _parse_typed(t: str, d: dict[str, Any]) -> ServerEvent:
    if t == "response.output_audio.delta":
        try:
            # a2b_base64 strict: the same validation as b64decode(validate=True) without its regex pass
            audio = binascii.a2b_base64(_str(d, "delta", t), strict_mode=True)
        except binascii.Error as exc:
            raise RealtimeProtocolError(f"{t}: delta is not base64: {exc}") from exc
        return OutputAudioDelta(
            _str(d, "response_id", t), _str(d, "item_id", t), _int(d, "content_index", t, 0), audio
        )
    if t == "input_audio_buffer.speech_started":
        return SpeechStarted(_str(d, "item_id", t), _int(d, "audio_start_ms", t))
    if t == "input_audio_buffer.speech_stopped":
        return SpeechStopped(_str(d, "item_id", t), _int(d, "audio_end_ms", t))
    if t == "input_audio_buffer.committed":
        return AudioCommitted(_str(d, "item_id", t), _opt_str(d, "previous_item_id"))
    if t == "conversation.item.input_audio_transcription.completed":
        return InputTranscriptionCompleted(
            _str(d, "item_id", t), _int(d, "content_index", t, 0), _str(d, "transcript", t)
        )
    if t == "conversation.item.input_audio_transcription.failed":
        message = _opt_str(_dict(d, "error"), "message") or "transcription failed"
        return InputTranscriptionFailed(_str(d, "item_id", t), message)
    if t == "response.created":
        return ResponseCreated(_str(_dict(d, "response"), "id", t))
    if t == "response.output_item.added":
        item = _dict(d, "item")
        return OutputItemAdded(
            _str(d, "response_id", t),
            _str(item, "id", t),
            _str(item, "type", t),
            _opt_str(item, "name"),
            _opt_str(item, "call_id"),
        )
    if t == "response.output_audio.done":
        return OutputAudioDone(_str(d, "response_id", t), _str(d, "item_id", t))
    if t == "response.output_audio_transcript.delta":
        return OutputTranscriptDelta(_str(d, "response_id", t), _str(d, "item_id", t), _str(d, "delta", t))
    if t == "response.output_audio_transcript.done":
        return OutputTranscriptDone(
            _str(d, "response_id", t), _str(d, "item_id", t), _str(d, "transcript", t)
        )
    if t == "response.function_call_arguments.done":
        return FunctionCallArgumentsDone(
            _str(d, "response_id", t),
            _str(d, "item_id", t),
            _str(d, "call_id", t),
            _str(d, "arguments", t),
            _opt_str(d, "name"),
        )
    if t == "conversation.item.truncated":
        return ItemTruncated(_str(d, "item_id", t), _int(d, "audio_end_ms", t))
    if t == "response.done":
        resp = _dict(d, "response")
        usage = resp.get("usage")
        details = resp.get("status_details")
        return ResponseDone(
            _str(resp, "id", t),
            _opt_str(resp, "status") or "completed",
            parse_usage(usage) if isinstance(usage, dict) else None,
            details if isinstance(details, dict) else None,
        )
    if t == "session.created":
        return SessionCreated(_dict(d, "session"))
    if t == "session.updated":
        return SessionUpdated(_dict(d, "session"))
    if t == "error":
        err = _dict(d, "error")
        return ErrorEvent(
            _opt_str(err, "type") or "error",
            _opt_str(err, "message") or "",
            _opt_str(err, "code"),
            _opt_str(err, "param"),
            _opt_str(err, "event_id"),
        )
    if t in OTHER_EVENT_TYPES:
        return OtherEvent(t, d)
    return UnknownEvent(t, d)


def parse_server_event(text: str | bytes) -> ServerEvent:
    """Parse one server frame; unknown types become UnknownEvent, malformed ones raise RealtimeProtocolError."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RealtimeProtocolError(f"server frame is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise RealtimeProtocolError(f"server frame is a {type(data).__name__}, expected a JSON object")
    etype = data.get("type")
    if not isinstance(etype, str):
        raise RealtimeProtocolError(f"server frame has type {etype!r}, expected a string")
    return _parse_typed(etype, data)
