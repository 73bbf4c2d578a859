"""What an ElevenLabs agent says, reply by reply, as the caller hears it: transcript lines, turn timing, billing.

ElevenLabs sends a reply's text (agent_response) with or near its first audio, cuts it on an
interruption and corrects it to what was said (agent_response_correction); a reply is recorded
once its audio has played out, or when it was cut off and corrected, or when the next turn starts.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass

from patterd.protocols.events import TranscriptLine, Usage
from patterd.providers.kinds import CallContext, UserTurnEnded

HISTORY_LINES = 40  # transcript lines handed to a new conversation after a reconnect


@dataclass
class Turn:
    """One agent reply while it plays."""

    text: str
    engine_ms: float | None = None
    audio_bytes: int = 0
    interrupted: bool = False
    reported: bool = False


class AgentTurns:
    """One call's agent replies and caller turns, reported to the call as transcript lines and usage."""

    def __init__(self, ctx: CallContext, provider: str) -> None:
        self._ctx = ctx
        self._provider = provider
        self.current: Turn | None = None
        self._seq = 0
        self._finisher: asyncio.Task[None] | None = None
        self._audio_came = asyncio.Event()
        self.last_voiced_at: float | None = None  # arrival of the newest loud caller frame
        self._turn_voiced_at: float | None = None  # the ended caller turn's last voiced frame, until answered
        self._billed_at: float | None = None  # conversation time up to here is reported as Usage
        self.history: collections.deque[tuple[str, str]] = collections.deque(maxlen=HISTORY_LINES)

    @property
    def segment(self) -> str:
        """The playout segment of the current reply."""
        return f"el_{self._seq}"

    def user_transcript(self, text: str) -> None:
        """The agent ended the caller's turn: its latency runs from the turn's last voiced frame."""
        self.report()
        voiced_at, self.last_voiced_at = self.last_voiced_at, None
        if voiced_at is not None:
            self._turn_voiced_at = voiced_at
            self._ctx.emit(UserTurnEnded(voiced_at))
        text = text.strip()
        if text:
            self.history.append(("user", text))
            self._ctx.emit(TranscriptLine(**self._ctx.new_event_fields(), role="user", text=text))

    def agent_response(self, text: str, *, connected: bool) -> None:
        """A reply's text."""
        turn = self.current
        if turn is not None and not turn.reported and not turn.text and not turn.interrupted:
            # "Sent with the first audio chunk": the reply whose audio already started gets its text.
            turn.text = text.strip()
            self.bill(connected=connected)
            return
        self._begin(text.strip(), wait_for_audio=True)
        self.bill(connected=connected)  # conversation time so far, so a long call shows its cost as it goes

    def corrected(self, text: str) -> None:
        """The interrupted reply cut to what was said: the line the record keeps."""
        turn = self.current
        if turn is not None and not turn.reported and text.strip():
            turn.text = text.strip()
            if turn.interrupted:
                self.report()

    def audio(self, ulaw: bytes, now: float) -> None:
        """Audio of the current reply (a new reply when none is open) is about to play."""
        turn = self.current
        if turn is None or turn.reported or turn.interrupted:
            turn = self._begin(
                "", wait_for_audio=False
            )  # a new reply's first audio, before (or with) its agent_response
        if self._turn_voiced_at is not None:  # the answer's first audio: the engine's share of the turn
            turn.engine_ms = (now - self._turn_voiced_at) * 1000
            self._turn_voiced_at = None
        turn.audio_bytes += len(ulaw)
        self._audio_came.set()

    def interrupted(self, turn: Turn | None) -> None:
        """`turn` was cut off: recorded when its correction comes (or at the next turn's start)."""
        if turn is not None and not turn.reported:
            turn.interrupted = True
            if self._finisher is not None:
                self._finisher.cancel()

    def _begin(self, text: str, *, wait_for_audio: bool) -> Turn:
        self.report()
        self._seq += 1
        turn = self.current = Turn(text=text)
        if wait_for_audio:  # the text came first: audio heard so far was the previous reply's
            self._audio_came.clear()
        self._finisher = asyncio.create_task(self._finish_when_played(turn))
        return turn

    async def _finish_when_played(self, turn: Turn) -> None:
        """Report a reply once its audio stopped coming and the caller has heard all of it."""
        while True:
            await self._audio_came.wait()
            self._audio_came.clear()
            await self._ctx.audio.drained()
            if not self._audio_came.is_set():
                break
        if self.current is turn:
            self.report()

    def report(self) -> None:
        """Record the current reply (once)."""
        turn = self.current
        if turn is None or turn.reported:
            return
        turn.reported = True
        if self._finisher is not None and self._finisher is not asyncio.current_task():
            self._finisher.cancel()
        if turn.text:
            self.history.append(("assistant", turn.text))
            engine_ms = None if turn.engine_ms is None else round(turn.engine_ms, 1)
            self._ctx.emit(
                TranscriptLine(
                    **self._ctx.new_event_fields(),
                    role="assistant",
                    text=turn.text,
                    interrupted=turn.interrupted,
                    engine_ms=engine_ms,
                )
            )

    def close(self) -> None:
        """The session is over: record what is open, stop waiting for playout."""
        self.report()
        if self._finisher is not None:
            self._finisher.cancel()

    def start_billing(self) -> None:
        """A conversation started: its time counts from now."""
        self._billed_at = self._ctx.clock.monotonic()

    def bill(self, *, connected: bool) -> None:
        """Usage for the conversation time since the last report (ElevenLabs bills call minutes)."""
        if self._billed_at is None:
            return
        now = self._ctx.clock.monotonic()
        seconds, self._billed_at = now - self._billed_at, (now if connected else None)
        if seconds > 0:
            self._ctx.emit(
                Usage(
                    **self._ctx.new_event_fields(),
                    component="llm",
                    provider=self._provider,
                    quantities={"audio_seconds": round(seconds, 3)},
                )
            )
