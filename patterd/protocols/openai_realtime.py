"""Sans-I/O codec for the OpenAI Realtime API (GA): client events out as JSON text, server events in as dataclasses.

Followed: developers.openai.com/api/reference/resources/realtime/client-events and
.../server-events, and the openai-python SDK's `src/openai/types/realtime/` models
(RealtimeSessionCreateRequestParam, RealtimeAudioInputTurnDetectionParam, ServerVad/SemanticVad,
ConversationItemTruncateEventParam, ResponseFunctionCallArgumentsDoneEvent,
ConversationItemInputAudioTranscriptionCompletedEvent, RealtimeResponse/RealtimeResponseUsage,
RealtimeError). GA shapes only: no `OpenAI-Beta` header, `session.type = "realtime"`, audio
formats under `session.audio.{input,output}.format`, `response.output_audio.*` events. The GA
session has no `temperature` field (it was a beta-only setting), so none is sent.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

# Server events (openai_realtime_events) and their parser (openai_realtime_parse), re-exported here.
from patterd.protocols.openai_realtime_events import *  # noqa: F403
from patterd.protocols.openai_realtime_events import ErrorEvent
from patterd.protocols.openai_realtime_parse import OTHER_EVENT_TYPES as OTHER_EVENT_TYPES
from patterd.protocols.openai_realtime_parse import parse_server_event as parse_server_event
from patterd.protocols.openai_realtime_parse import parse_usage as parse_usage

AudioFormat = Literal["pcm", "pcmu"]
PCM24_BYTES_PER_MS = 48  # 24 kHz × 2 bytes
PCMU_BYTES_PER_MS = 8

DEFAULT_TURN_DETECTION: Mapping[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "create_response": True,
    "interrupt_response": True,
}


class ToolLike(Protocol):
    """What a tool definition needs to offer (providers.kinds.ToolSchema fits; protocols may not import it)."""

    @property
    def name(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def parameters(self) -> Mapping[str, Any]: ...


# ------------------------------------------------------------------ client events


def audio_format_object(audio_format: AudioFormat) -> dict[str, Any]:
    """The GA `RealtimeAudioFormats` object for our option value."""
    if audio_format == "pcm":
        return {"type": "audio/pcm", "rate": 24000}
    if audio_format == "pcmu":
        return {"type": "audio/pcmu"}
    raise ValueError(f"audio_format {audio_format!r}: expected 'pcm' or 'pcmu'")


def tool_object(tool: ToolLike) -> dict[str, Any]:
    """A `RealtimeFunctionTool` for one tool schema."""
    return {
        "type": "function",
        "name": tool.name,
        "description": tool.description,
        "parameters": dict(tool.parameters),
    }


# The GA session's built-in voices (session.audio.output.voice). A custom voice is sent as {"id": ...}.
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
CUSTOM_VOICE_PREFIX = "voice_"
# The event_id our session.update carries: an `error` naming it means the session was not configured.
SESSION_UPDATE_EVENT_ID = "patterd_session_update"


def is_voice_param(param: str | None) -> bool:
    """Whether an error's `param` names the voice (GA `session.audio.output.voice`, beta `session.voice`)."""
    return param is not None and param.rsplit(".", 1)[-1] == "voice"


def voice_value(voice: str) -> str | dict[str, str]:
    """A built-in voice name as is; a custom voice id (`voice_...`) as the object the API wants."""
    return {"id": voice} if voice.startswith(CUSTOM_VOICE_PREFIX) else voice


def session_update(
    *,
    instructions: str,
    voice: str | None,
    audio_format: AudioFormat = "pcm",
    turn_detection: Mapping[str, Any] | None = DEFAULT_TURN_DETECTION,
    transcription_model: str | None = "gpt-4o-mini-transcribe",
    tools: Sequence[ToolLike] = (),
    model: str | None = None,
) -> str:
    """`session.update` configuring audio both ways, VAD, input transcription, voice and tools.

    `voice=None` leaves the voice to the server (its default).
    """
    fmt = audio_format_object(audio_format)
    audio_input: dict[str, Any] = {
        "format": fmt,
        # null turns server VAD off; the GA schema documents null for exactly that.
        "turn_detection": dict(turn_detection) if turn_detection is not None else None,
        "transcription": {"model": transcription_model} if transcription_model else None,
    }
    session: dict[str, Any] = {
        "type": "realtime",
        "instructions": instructions,
        "output_modalities": ["audio"],
        "audio": {"input": audio_input, "output": {"format": dict(fmt)}},
        "tools": [tool_object(t) for t in tools],
        "tool_choice": "auto",
    }
    if voice is not None:
        session["audio"]["output"]["voice"] = voice_value(voice)
    if model:
        session["model"] = model
    return json.dumps({"type": "session.update", "event_id": SESSION_UPDATE_EVENT_ID, "session": session})


def input_audio_append(audio: bytes) -> str:
    """`input_audio_buffer.append` with raw audio in the session's input format (hot path: no json.dumps)."""
    # Base64 text needs no JSON escaping, so plain concatenation is exact and cheaper.
    return '{"type":"input_audio_buffer.append","audio":"' + base64.b64encode(audio).decode("ascii") + '"}'


def truncate(item_id: str, content_index: int, audio_end_ms: int) -> str:
    """`conversation.item.truncate`: the caller heard only `audio_end_ms` of an assistant item."""
    return json.dumps(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": content_index,
            "audio_end_ms": max(0, int(audio_end_ms)),
        }
    )


def function_call_output(call_id: str, output: str) -> str:
    """`conversation.item.create` carrying a tool's result for the model."""
    return json.dumps(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call_id, "output": output},
        }
    )


def user_text(text: str) -> str:
    """`conversation.item.create` with a user message of text (DTMF, typed input)."""
    return json.dumps(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
        }
    )


def history_item(role: str, text: str) -> str:
    """`conversation.item.create` replaying an earlier turn as text (restoring context after a reconnect)."""
    kind = "input_text" if role == "user" else "output_text"
    return json.dumps(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": role, "content": [{"type": kind, "text": text}]},
        }
    )


def response_create(instructions: str | None = None) -> str:
    """`response.create`, optionally with instructions for this response only."""
    if instructions is None:
        return '{"type":"response.create"}'
    return json.dumps({"type": "response.create", "response": {"instructions": instructions}})


def response_cancel(response_id: str | None = None) -> str:
    """`response.cancel` (the in-progress response, or a named one)."""
    if response_id is None:
        return '{"type":"response.cancel"}'
    return json.dumps({"type": "response.cancel", "response_id": response_id})


# Server errors after which the session is unusable: reconnect (with a fresh session.update).
RECONNECT_ERROR_TYPES = frozenset({"server_error"})
RECONNECT_ERROR_CODES = frozenset({"session_expired", "server_error", "internal_error"})
# Errors that are part of normal barge-in races, not problems.
BENIGN_ERROR_CODES = frozenset({"response_cancel_not_active", "conversation_already_has_active_response"})
ErrorKind = Literal["voice_refused", "session_refused", "benign", "reconnect", "failed"]


def error_kind(event: ErrorEvent) -> ErrorKind:
    """What a server error means: our session.update (or its voice) refused, a race, a reconnect, or a failure."""
    if event.event_id == SESSION_UPDATE_EVENT_ID:
        return "voice_refused" if is_voice_param(event.param) else "session_refused"
    if event.code in BENIGN_ERROR_CODES:
        return "benign"
    if event.type in RECONNECT_ERROR_TYPES or event.code in RECONNECT_ERROR_CODES:
        return "reconnect"
    return "failed"


def say_verbatim_instructions(text: str) -> str:
    """Response instructions that make the model speak `text` word for word (first_message)."""
    return f"Say exactly the following to the caller, word for word, and nothing else: {text}"
