"""The session ⇄ engine interface: what an engine sees of its call, the typed events it reports, its session.

Engine → session: every report is one typed event through `CallContext.emit` (call events for the
record, and `UserTurnEnded` to start the turn-latency clock); tool calls are requests that return
a result (`run_tool`); agent audio goes to `CallContext.audio`. Session → engine: the
`EngineSession` methods (caller audio, keys, text, a message to say). Audio is 8 kHz μ-law.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from patterd.clock import Clock
from patterd.protocols.events import CallEvent


@dataclass(frozen=True)
class ToolSchema:
    """A function the model may call."""

    name: str
    description: str
    parameters: Mapping[str, Any]  # JSON Schema of the arguments


@dataclass(frozen=True, slots=True)
class UserTurnEnded:
    """The engine answers a caller turn whose last voiced frame arrived at monotonic `at` (None: now).

    The session's turn-latency clock starts there and stops at the first agent audio written to the carrier.
    """

    at: float | None = None


# What an engine reports to its call: a CallEvent is recorded (transcript line, usage, error,
# barge-in, ...); the others steer the session and are not recorded themselves.
EngineEvent = CallEvent | UserTurnEnded


class AudioOut(Protocol):
    """The caller's ear: where an engine plays agent audio (implemented by the call session)."""

    async def play(self, ulaw: bytes, segment: str = "") -> None:
        """Queue audio for the caller; `segment` names the response item it belongs to."""
        ...

    async def interrupt(self) -> tuple[str, int] | None:
        """Stop agent audio at once (carrier clear); returns (segment, ms of it the caller heard).

        None means nothing was left playing: everything queued had been heard.
        """
        ...

    async def drained(self) -> None:
        """Wait until everything queued has been played to the caller."""
        ...

    def finish_segment(self) -> None:
        """The current segment's audio is complete (its last delta was played): nothing more will follow it.

        Lets the carrier leg send the partial frame it holds now, instead of with the next segment's audio.
        Engines that wait for `drained()` at the end of each reply need not call it.
        """
        ...

    @property
    def speaking(self) -> bool:
        """True while queued agent audio has not finished playing."""
        ...


class CallContext(Protocol):
    """What an engine session sees of its call (implemented by the call session)."""

    call_id: str
    agent_name: str
    instructions: str  # system prompt with {variables} filled
    first_message: str | None  # with {variables} filled
    tools: Sequence[ToolSchema]
    audio: AudioOut
    clock: Clock

    async def run_tool(self, name: str, arguments: Mapping[str, Any]) -> str:
        """Run a tool the model called; returns the result text for the model. Never raises."""
        ...

    def emit(self, event: EngineEvent) -> None:
        """Report an event: a CallEvent is recorded; UserTurnEnded starts the turn-latency clock."""
        ...

    def new_event_fields(self) -> dict[str, Any]:
        """`call_id` and `ts` for a new CallEvent: `TranscriptLine(**ctx.new_event_fields(), ...)`."""
        ...


class EngineSession(Protocol):
    """One call's conversation with an agent engine."""

    async def run(self) -> None:
        """Run the conversation until cancelled; raise ProviderError when the engine is gone for good."""
        ...

    def push_audio(self, ulaw: bytes) -> None:
        """Caller audio (one frame), never blocks."""
        ...

    def push_dtmf(self, digit: str) -> None:
        """The caller pressed a key."""
        ...

    def push_text(self, text: str) -> None:
        """Caller text that bypasses speech recognition (simulate --text)."""
        ...

    def say(self, text: str) -> None:
        """Speak `text` verbatim now (a voicemail message), cutting off whatever the agent was saying."""
        ...


class Engine(Protocol):
    """A speech-to-speech agent engine (or the pipeline, which looks the same)."""

    def session(self, call: CallContext) -> AbstractAsyncContextManager[EngineSession]:
        """Open a session for one call."""
        ...
