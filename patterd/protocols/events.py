"""The closed vocabulary of events: carrier media events and call events (frozen dataclasses).

Media events are what a carrier leg yields to the call session, whatever the carrier.
Call events are what a call session tells its observers (store, metrics, live feed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

# ---------------------------------------------------------------- media (carrier leg → session)


@dataclass(frozen=True, slots=True)
class StreamStarted:
    """The carrier's media stream is up; `parameters` are the custom parameters it carried."""

    stream_id: str
    carrier_call_id: str = ""
    parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallerAudio:
    """Caller audio: 8 kHz μ-law, normally one 20 ms frame (160 bytes)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class CallerDtmf:
    """The caller pressed a key."""

    digit: str


@dataclass(frozen=True, slots=True)
class MarkPlayed:
    """The carrier played all audio queued before the mark `name` (or dropped it on clear)."""

    name: str


@dataclass(frozen=True, slots=True)
class StreamStopped:
    """The carrier ended the media stream (the caller hung up, or the call was redirected)."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class CallerHeard:
    """The caller's receiver report: the first agent audio of `turn` reached it `heard_ms` after it sent
    the frame the daemon counted as that turn's last voiced one (docs/operations.md "Turn latency")."""

    turn: int
    heard_ms: float


MediaEvent = StreamStarted | CallerAudio | CallerDtmf | MarkPlayed | StreamStopped | CallerHeard

# ---------------------------------------------------------------- call events (session → observers)

CallStatus = Literal[
    "ringing", "in_progress", "completed", "failed", "no-answer", "busy", "canceled", "voicemail"
]
FINAL_STATUSES: frozenset[str] = frozenset(
    {"completed", "failed", "no-answer", "busy", "canceled", "voicemail"}
)
Direction = Literal["inbound", "outbound"]


@dataclass(frozen=True, slots=True)
class CallEvent:
    """Base of call events; `type` is the name written to events.jsonl and the live feed."""

    type: ClassVar[str] = "event"
    call_id: str
    ts: datetime

    def data(self) -> dict[str, Any]:
        """The event's payload without call_id and ts, JSON-ready."""
        out = asdict(self)
        out.pop("call_id")
        out.pop("ts")
        return out


@dataclass(frozen=True, slots=True)
class CallStarted(CallEvent):
    """A call exists: admitted inbound, or placed outbound."""

    type: ClassVar[str] = "call_started"
    direction: Direction = "inbound"
    agent: str = ""
    agent_provider: str = ""  # e.g. "openai_realtime" or "pipeline"
    carrier: str = ""
    caller: str = ""  # E.164, unredacted: observers redact
    callee: str = ""
    carrier_call_id: str = ""
    trace_id: str = ""
    source: str = ""  # the daemon (or Patter app) that ran the call, when it is not this one (fleet ingest)

    def data(self) -> dict[str, Any]:
        out = CallEvent.data(self)
        if not self.source:  # a local call's events.jsonl line keeps its shape
            out.pop("source")
        return out


@dataclass(frozen=True, slots=True)
class CallStatusChanged(CallEvent):
    """The call moved to a new status (not final; see CallEnded)."""

    type: ClassVar[str] = "status"
    status: str = "in_progress"


@dataclass(frozen=True, slots=True)
class TranscriptLine(CallEvent):
    """One finished turn of speech, by the caller (`user`) or the agent (`assistant`)."""

    type: ClassVar[str] = "transcript"
    role: Literal["user", "assistant"] = "user"
    text: str = ""
    interrupted: bool = False  # the agent was cut off; text is what the caller heard
    # Assistant turns, in ms: the caller's last voiced frame as received → the first agent audio frame
    # written to the carrier socket, and its stages (docs/operations.md "Turn latency"). Stages of a
    # turn sum to latency_ms; a stage that did not happen is None.
    latency_ms: float | None = None
    stt_ms: float | None = None  # end of turn decided → final transcript (also on user lines)
    llm_ttft_ms: float | None = None  # transcript sent to the LLM → first token
    tts_ttfb_ms: float | None = None  # first text sent to the TTS → first audio byte
    endpointing_ms: float | None = None  # last voiced frame → end of turn decided
    engine_ms: float | None = None  # realtime engines: last voiced frame → first audio from the engine
    transport_ms: float | None = None  # the remainder: first audio → first frame on the carrier socket
    # From the caller's receiver report (carriers that send one: the softphone), outside latency_ms:
    # heard_ms = what the caller heard (its last voiced frame sent → the first agent frame received) and
    # network_ms = heard_ms - latency_ms (both one-way trips), so the stages with it sum to heard_ms.
    heard_ms: float | None = None
    network_ms: float | None = None


# The stages of a turn's latency in waterfall order: (TranscriptLine field, stage name of
# patterd_turn_stage_seconds). Pipelines measure all but engine; realtime engines engine and transport.
TURN_STAGES: tuple[tuple[str, str], ...] = (
    ("endpointing_ms", "endpointing"),
    ("stt_ms", "stt"),
    ("llm_ttft_ms", "llm"),
    ("tts_ttfb_ms", "tts"),
    ("engine_ms", "engine"),
    ("transport_ms", "transport"),
)


@dataclass(frozen=True, slots=True)
class TurnHeard(CallEvent):
    """A caller's report that came after its turn's assistant line was recorded: the store puts heard_ms
    and network_ms on the line whose `ts` is `line_ts` (an ISO-8601 ms string, as in transcript.jsonl)."""

    type: ClassVar[str] = "turn_heard"
    line_ts: str = ""
    latency_ms: float = 0.0
    heard_ms: float = 0.0
    network_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class TranscriptPartial(CallEvent):
    """The agent's words so far in a reply, sent as their audio starts playing (live views only).

    Not a record: the store skips it; the TranscriptLine at the end of the reply is what is kept.
    """

    type: ClassVar[str] = "transcript_partial"
    role: Literal["user", "assistant"] = "assistant"
    text: str = ""  # everything said so far in this reply
    turn: str = ""  # the reply it belongs to


@dataclass(frozen=True, slots=True)
class ToolCalled(CallEvent):
    """The agent called a tool; `result` is what went back to the model."""

    type: ClassVar[str] = "tool_call"
    name: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)
    result: str = ""
    error: str | None = None
    duration_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class BargeIn(CallEvent):
    """The caller spoke over the agent; agent audio was cleared after `played_ms`."""

    type: ClassVar[str] = "barge_in"
    played_ms: int = 0
    reaction_ms: float | None = None  # speech detected → clear sent to the carrier


@dataclass(frozen=True, slots=True)
class DtmfReceived(CallEvent):
    """The caller pressed a key."""

    type: ClassVar[str] = "dtmf"
    digit: str = ""


@dataclass(frozen=True, slots=True)
class TransferStarted(CallEvent):
    """The call is being transferred to another number."""

    type: ClassVar[str] = "transfer"
    to: str = ""


@dataclass(frozen=True, slots=True)
class MachineDetected(CallEvent):
    """Answering-machine detection answered (Twilio AnsweredBy vocabulary)."""

    type: ClassVar[str] = "amd"
    answered_by: str = "unknown"


@dataclass(frozen=True, slots=True)
class RecordingReady(CallEvent):
    """The carrier finished a recording of the call."""

    type: ClassVar[str] = "recording"
    url: str = ""
    duration_secs: float | None = None


@dataclass(frozen=True, slots=True)
class Usage(CallEvent):
    """Billable usage by one component: tokens, audio seconds, characters, minutes."""

    type: ClassVar[str] = "usage"
    component: Literal["stt", "tts", "llm", "telephony"] = "llm"
    provider: str = ""  # e.g. "openai_realtime", "deepgram", "twilio"
    quantities: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AgentAudioStarted(CallEvent):
    """The first agent audio of the call went to the carrier, `first_audio_ms` after it connected."""

    type: ClassVar[str] = "first_audio"
    first_audio_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class CallFailed(CallEvent):
    """Something went wrong in the call; it may go on or end."""

    type: ClassVar[str] = "error"
    message: str = ""
    component: str = ""
    fatal: bool = False


@dataclass(frozen=True, slots=True)
class ProviderFallback(CallEvent):
    """A fallback chain moved the call from one provider of a role to the next (written as kind/from/to/reason)."""

    type: ClassVar[str] = "provider_fallback"
    kind: Literal["stt", "tts", "llm"] = "stt"
    from_provider: str = ""  # `from` on disk and on the feed (a Python keyword here)
    to_provider: str = ""
    reason: str = ""

    def data(self) -> dict[str, Any]:
        return {"kind": self.kind, "from": self.from_provider, "to": self.to_provider, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class CallEnded(CallEvent):
    """The call is over; `status` is final."""

    type: ClassVar[str] = "call_ended"
    status: str = "completed"
    reason: str = ""
    error: str | None = None
    duration_ms: int = 0
