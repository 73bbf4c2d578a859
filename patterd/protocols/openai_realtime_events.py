"""Sans-I/O codec for the OpenAI Realtime API (GA), server side: server events parsed into dataclasses.

Followed: developers.openai.com/api/reference/resources/realtime/server-events and the openai-python
SDK's `src/openai/types/realtime/` models (ResponseFunctionCallArgumentsDoneEvent,
ConversationItemInputAudioTranscriptionCompletedEvent, RealtimeResponse/RealtimeResponseUsage,
RealtimeError). The client side (events we send) is `patterd.protocols.openai_realtime`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from patterd.errors import ProviderProtocolError


class RealtimeProtocolError(ProviderProtocolError):
    """A server frame is not valid JSON or lacks a field its type requires."""

    def __init__(self, message: str) -> None:
        super().__init__(message, provider="openai_realtime")


# ------------------------------------------------------------------ server events


@dataclass(frozen=True, slots=True)
class SessionCreated:
    """The server opened the session (first event on a new connection)."""

    session: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SessionUpdated:
    """The server applied a session.update; `session` is the full effective config."""

    session: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Server VAD heard the caller start speaking."""

    item_id: str
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    """Server VAD heard the caller stop speaking."""

    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class AudioCommitted:
    """The input buffer became a user item."""

    item_id: str
    previous_item_id: str | None = None


@dataclass(frozen=True, slots=True)
class InputTranscriptionCompleted:
    """The caller's turn, transcribed."""

    item_id: str
    content_index: int
    transcript: str


@dataclass(frozen=True, slots=True)
class InputTranscriptionFailed:
    """Transcribing the caller's turn failed (the conversation goes on)."""

    item_id: str
    message: str


@dataclass(frozen=True, slots=True)
class ResponseCreated:
    """The model started a response."""

    response_id: str


@dataclass(frozen=True, slots=True)
class OutputItemAdded:
    """A response gained an output item (a message, or a function call with its name)."""

    response_id: str
    item_id: str
    item_type: str
    name: str | None = None
    call_id: str | None = None


@dataclass(frozen=True, slots=True)
class OutputAudioDelta:
    """A piece of agent audio in the session's output format (base64 already decoded)."""

    response_id: str
    item_id: str
    content_index: int
    audio: bytes


@dataclass(frozen=True, slots=True)
class OutputAudioDone:
    """The agent audio of one item is complete."""

    response_id: str
    item_id: str


@dataclass(frozen=True, slots=True)
class OutputTranscriptDelta:
    """A piece of the transcript of agent audio."""

    response_id: str
    item_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class OutputTranscriptDone:
    """The full transcript of one agent audio item."""

    response_id: str
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class FunctionCallArgumentsDone:
    """The model finished a function call; `name` is absent in some server versions (see OutputItemAdded)."""

    response_id: str
    item_id: str
    call_id: str
    arguments: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ItemTruncated:
    """The server confirmed a conversation.item.truncate."""

    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class ResponseUsage:
    """Token usage of one response (RealtimeResponseUsage, flattened)."""

    input_tokens: int = 0
    output_tokens: int = 0
    input_text_tokens: int = 0
    input_audio_tokens: int = 0
    cached_tokens: int = 0
    output_text_tokens: int = 0
    output_audio_tokens: int = 0

    cached_text_tokens: int = 0
    cached_audio_tokens: int = 0

    def quantities(self) -> dict[str, float]:
        """Billable quantities for Usage events (patterd.cost keys).

        OpenAI counts cached tokens inside the input text/audio counts; they are billed at the
        cached price instead, so `input_*_tokens` here are the uncached ones (when the server
        splits cached tokens by modality) and `cached_input_tokens` the cached ones.
        `cached_tokens` repeats the server's cached count under its own name.
        """
        cached_split = self.cached_text_tokens + self.cached_audio_tokens == self.cached_tokens
        text_in = self.input_text_tokens - (self.cached_text_tokens if cached_split else 0)
        audio_in = self.input_audio_tokens - (self.cached_audio_tokens if cached_split else 0)
        return {
            "input_text_tokens": float(max(0, text_in)),
            "input_audio_tokens": float(max(0, audio_in)),
            "cached_input_tokens": float(self.cached_tokens),
            "cached_tokens": float(self.cached_tokens),
            "output_text_tokens": float(self.output_text_tokens),
            "output_audio_tokens": float(self.output_audio_tokens),
        }


@dataclass(frozen=True, slots=True)
class ResponseDone:
    """A response ended (`completed`, `cancelled`, `failed`, `incomplete`), with usage."""

    response_id: str
    status: str
    usage: ResponseUsage | None = None
    status_details: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """The server's `error` event (RealtimeError fields)."""

    type: str
    message: str
    code: str | None = None
    param: str | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class OtherEvent:
    """A documented server event the engine does not act on (rate limits, content parts, ...)."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """A server event type this codec does not know; kept so callers can log and count it."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)


ServerEvent = (
    SessionCreated
    | SessionUpdated
    | SpeechStarted
    | SpeechStopped
    | AudioCommitted
    | InputTranscriptionCompleted
    | InputTranscriptionFailed
    | ResponseCreated
    | OutputItemAdded
    | OutputAudioDelta
    | OutputAudioDone
    | OutputTranscriptDelta
    | OutputTranscriptDone
    | FunctionCallArgumentsDone
    | ItemTruncated
    | ResponseDone
    | ErrorEvent
    | OtherEvent
    | UnknownEvent
)
