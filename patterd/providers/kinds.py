"""The typing.Protocols each kind of provider satisfies, and the call-side interfaces they use.

Audio on every interface between the call session and providers is 8 kHz μ-law unless a
name says otherwise; a "frame" is 20 ms (160 bytes). Providers that need another format
transcode with `patterd.protocols.audio`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from patterd.protocols.events import MediaEvent

# The agent-side (session ⇄ engine) interfaces live in engine_api; importers of kinds still find them here.
from patterd.providers.engine_api import AudioOut as AudioOut
from patterd.providers.engine_api import CallContext as CallContext
from patterd.providers.engine_api import Engine as Engine
from patterd.providers.engine_api import EngineEvent as EngineEvent
from patterd.providers.engine_api import EngineSession as EngineSession
from patterd.providers.engine_api import ToolSchema as ToolSchema
from patterd.providers.engine_api import UserTurnEnded as UserTurnEnded

# ------------------------------------------------------------------ carrier side


class CarrierLeg(Protocol):
    """One call's media stream as the carrier sees it; created by a carrier, run by the session."""

    def events(self) -> AsyncIterator[MediaEvent]:
        """Media events from the carrier until the stream stops (then the iterator ends)."""
        ...

    async def send_audio(self, ulaw: bytes) -> None:
        """Queue agent audio toward the caller (any length; carriers frame it)."""
        ...

    async def send_mark(self, name: str) -> None:
        """Ask to be told (MarkPlayed) when everything queued so far has been played."""
        ...

    async def clear(self) -> None:
        """Drop agent audio the carrier has buffered but not played yet (barge-in)."""
        ...

    async def close(self) -> None:
        """Close the media stream from our side."""
        ...


@dataclass(frozen=True)
class InboundCall:
    """What a carrier knows about a call when it first hears of it."""

    carrier: str  # "twilio", "telnyx", "local"
    carrier_call_id: str
    caller: str
    callee: str
    direction: Literal["inbound", "outbound"] = "inbound"
    call_id: str | None = None  # set when the carrier already carries our id (outbound, client_state)


# The admission parameter (a carrier's stream parameter, or the media URL's query key) holding the signed
# call token: with it any replica sharing the cluster secret admits the call's media socket.
CALL_TOKEN = "call_token"


@dataclass(frozen=True)
class Admission:
    """The switchboard's answer to an inbound call: our call id and the agent that will take it."""

    call_id: str
    agent: str
    parameters: Mapping[str, str] = field(default_factory=dict)
    # Resolves once the call's record is durable on disk; `wait_recorded` before answering the carrier,
    # so a crash at any later instant cannot lose a call the carrier was told about.
    recorded: Callable[[], Awaitable[object]] | None = None

    async def wait_recorded(self) -> None:
        """Wait until the call's first record is on disk (at once when there is nothing to wait for)."""
        if self.recorded is not None:
            await self.recorded()


class CallRouter(Protocol):
    """What carriers call back into (implemented by calls.switchboard)."""

    def admit(self, call: InboundCall) -> Admission | None:
        """Accept a new call (None: refuse it the carrier's way: draining or no agent)."""
        ...

    def expects_media(self, call_id: str) -> bool:
        """True only for a call id we issued whose media stream has not connected yet."""
        ...

    def adopts_media(self) -> bool:
        """True when a media socket for a call unknown here may still be admitted by its call token (a cluster
        secret is configured): the carrier must then read the token before refusing the socket."""
        ...

    async def admit_media(self, call_id: str, token: str | None) -> str | None:
        """Admit a media socket: None when `run_media` may follow, else the reason to refuse (1008) and count.

        `token` is the call token the answer carried (`Admission.parameters["call_token"]`, back as a stream
        parameter or the socket URL's query): with it any replica sharing the cluster secret takes the call
        (reasons token_invalid, token_expired, token_replayed); without it only a call this process rings.
        """
        ...

    async def run_media(self, call_id: str, leg: CarrierLeg) -> None:
        """Run the call over this media leg until it ends. Returns when the call is over."""
        ...

    def call_id_for(self, carrier: str, carrier_call_id: str) -> str | None:
        """Our call id for a carrier's call id, if we know the call."""
        ...

    def carrier_status(self, call_id: str, status: str, detail: Mapping[str, Any] | None = None) -> None:
        """The carrier reported a call status (`completed`, `busy`, `no-answer`, `failed`, `canceled`, ...)."""
        ...

    def machine_detected(self, call_id: str, answered_by: str) -> None:
        """Answering-machine detection finished (Twilio AnsweredBy vocabulary)."""
        ...

    def recording_ready(self, call_id: str, url: str, duration_secs: float | None = None) -> None:
        """The carrier saved a recording of the call."""
        ...

    def count_rejection(self, carrier: str, reason: str) -> None:
        """Count a refused webhook or websocket (bad signature, stale timestamp, unknown call)."""
        ...

    def count_bad_frame(self, carrier: str, reason: str) -> None:
        """Count a media frame that was dropped, by `patterd.protocols.frames` reason (the call goes on)."""
        ...


@dataclass(frozen=True)
class DialRequest:
    """An outbound call to place."""

    call_id: str
    to: str
    from_: str
    machine_detection: bool = False


@runtime_checkable
class Carrier(Protocol):
    """A telephony carrier: webhooks in, media websockets, REST commands out."""

    name: str

    async def handle_webhook(self, request: Request, hook: str, router: CallRouter) -> Response:
        """Answer a carrier webhook; `hook` is the last path segment (`voice`, `status`, `amd`, ...)."""
        ...

    async def handle_media(self, websocket: WebSocket, call_id: str, router: CallRouter) -> None:
        """Authenticate and accept (or refuse) a media websocket, then run the call on it."""
        ...

    async def dial(self, request: DialRequest) -> str:
        """Place an outbound call; returns the carrier's call id."""
        ...

    async def hangup(self, carrier_call_id: str) -> None:
        """End a live call."""
        ...

    async def transfer(self, carrier_call_id: str, to: str) -> None:
        """Transfer a live call to another number."""
        ...

    async def start_recording(self, carrier_call_id: str) -> None:
        """Start recording a live call."""
        ...


# ------------------------------------------------------------------ pipeline parts


@dataclass(frozen=True, slots=True)
class Transcript:
    """Speech recognized so far; `is_final` closes a segment, `end_of_utterance` a turn."""

    text: str
    is_final: bool
    end_of_utterance: bool = False
    confidence: float | None = None
    # ms of the stream's audio the STT had been given when it produced this result (None: unknown);
    # lets the pipeline time an STT's own end-of-turn decision by when that audio arrived.
    audio_ms: float | None = None


class STTStream(Protocol):
    """One call's live recognition."""

    def push_audio(self, ulaw: bytes) -> None:
        """Caller audio (8 kHz μ-law), never blocks."""
        ...

    async def flush(self) -> None:
        """Finalize what was heard so far (the VAD decided the turn ended).

        When it returns, the final Transcript of the open utterance is queued; with no utterance
        open, nothing is emitted (no empty final).
        """
        ...

    def __aiter__(self) -> AsyncIterator[Transcript]:
        """Transcripts as they come."""
        ...


class STT(Protocol):
    """A speech-to-text provider."""

    def stream(self) -> AbstractAsyncContextManager[STTStream]:
        """Open a recognition stream for one call."""
        ...


class TTS(Protocol):
    """A text-to-speech provider."""

    def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """Speak `text`: 8 kHz μ-law chunks as soon as they are made.

        An async generator: closing it early (barge-in) must stop the synthesis and free its stream.
        """
        ...


@dataclass(frozen=True)
class Message:
    """A chat message for an LLM (OpenAI-style roles)."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: Sequence[ToolCallRequest] = ()
    tool_call_id: str | None = None  # for role "tool"


@dataclass(frozen=True)
class TextDelta:
    """A piece of the reply text."""

    text: str


@dataclass(frozen=True)
class ToolCallRequest:
    """The model asks to call a tool (arguments complete, parsed)."""

    id: str
    name: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True)
class LLMUsage:
    """Tokens used by one completion."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0


LLMChunk = TextDelta | ToolCallRequest | LLMUsage


class LLM(Protocol):
    """A chat model with tool calling."""

    name: str  # provider name for usage/cost, e.g. "openai"

    def complete(self, messages: Sequence[Message], tools: Sequence[ToolSchema]) -> AsyncIterator[LLMChunk]:
        """Stream one reply; raises ProviderError on failure.

        An async generator: closing it early (barge-in) must abort the request.
        """
        ...


class VADStream(Protocol):
    """Voice activity on one call's audio."""

    def process(self, ulaw: bytes) -> Literal["speech_start", "speech_end"] | None:
        """Feed one 20 ms frame; returns a transition when speech starts or ends. Cheap and synchronous."""
        ...

    @property
    def voiced(self) -> bool:
        """Whether the audio just processed held speech the caller could hear, without the detector's hangover.

        A turn's latency starts at the arrival of the last voiced frame.
        """
        ...

    @property
    def speaking(self) -> bool:
        """True while the caller is judged to be speaking."""
        ...


class VAD(Protocol):
    """A voice activity detector."""

    def stream(self) -> VADStream:
        """A detector for one call."""
        ...


class Tunnel(Protocol):
    """A public hostname in front of the daemon's port."""

    @property
    def public_host(self) -> str:
        """host[:port] the carriers reach, no scheme."""
        ...

    def subscribe(self, callback: Callable[[str], Any]) -> Callable[[], None]:
        """Call `callback(new_host)` whenever the public host changes; returns an unsubscribe function."""
        ...
