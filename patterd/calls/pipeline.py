"""The STT → LLM → TTS engine: turn-taking, sentence-streamed replies, tools and barge-in, shaped like a realtime engine.

One `PipelineSession` per call runs four kinds of work in one TaskGroup:

- the audio loop (`turn_taking.TurnTaker`): caller frames → STT stream and VAD; VAD speech that lasts `min_speech_ms`
  while the agent is busy is a barge-in; VAD speech end starts the endpointing timer, which
  asks the STT to flush after `endpointing_ms` of silence;
- the STT loop: interim transcripts (barge-in when there is no VAD), finals collected until
  the STT says end-of-utterance or the flush answers; then the user turn is queued;
- the turn loop: each user turn (speech, DTMF, text) interrupts the reply in flight and
  starts a new one;
- one reply task at a time (`replies.Replies`): the LLM streams text into a sentence chunker while a TTS worker
  speaks finished sentences (sentence k+1 is synthesized while k plays); tool calls go
  through `ctx.run_tool` and the LLM is asked again, up to `max_tool_rounds`.

History keeps only what the caller heard: when a reply is cut off, the sentences whose audio
fully played plus the played share of the current one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from patterd.calls.pipeline_report import rounded
from patterd.calls.replies import Replies, Reply
from patterd.calls.sentences import Sentence, SentenceChunker, heard_texts
from patterd.calls.turn_taking import TurnTaker, UserTurn
from patterd.protocols.events import ProviderFallback, TranscriptLine
from patterd.providers.fallback import bind
from patterd.providers.kinds import LLM, STT, TTS, VAD, CallContext, Message, STTStream, UserTurnEnded

# The sentence helpers moved to sentences.py; importers of this module still find them here.
__all__ = [
    "PipelineEngine",
    "PipelineOptions",
    "PipelineSession",
    "SentenceChunker",
    "_Sentence",
    "heard_texts",
]
_Sentence = Sentence


@dataclass(frozen=True)
class PipelineOptions:
    """How a pipeline agent takes turns and speaks."""

    endpointing_ms: int = 600  # VAD silence that ends a turn when the STT has no end-of-utterance signal
    min_speech_ms: int = 250  # shorter speech (a cough, line noise) does not interrupt the agent
    interruptible: bool = True  # caller speech stops the agent
    max_tool_rounds: int = 5  # LLM → tools → LLM rounds per reply
    stt_name: str = ""  # provider names for Usage events
    tts_name: str = ""
    min_sentence_chars: int = 12  # shorter sentences wait for the next one (better prosody, fewer requests)
    max_clause_chars: int = 80  # a clause this long is spoken at its next comma
    flush_grace_ms: int = 700  # after a flush, how long to wait for the STT's final before using what we have
    retry_backoff_ms: int = 250  # before the one retry of a retryable provider error
    apology: str = "Sorry, I had a problem there. Could you say that again?"  # "" = say nothing on errors


class PipelineEngine:
    """An Engine made of an STT, an LLM, a TTS and an optional VAD."""

    def __init__(
        self, stt: STT, llm: LLM, tts: TTS, vad: VAD | None, *, options: PipelineOptions | None = None
    ) -> None:
        self.stt = stt
        self.llm = llm
        self.tts = tts
        self.vad = vad
        self.options = options or PipelineOptions()

    @contextlib.asynccontextmanager
    async def session(self, call: CallContext) -> AsyncIterator[PipelineSession]:
        """One call's pipeline; the STT stream opens when `run` starts."""
        yield PipelineSession(self, call)


class PipelineSession:
    """One call's conversation through the pipeline (an EngineSession): an ear, a mouth and the turns between."""

    def __init__(self, engine: PipelineEngine, ctx: CallContext) -> None:
        self._ctx = ctx
        self._opts = engine.options
        self._clock = ctx.clock
        # fallback chains bound to this call, so their switches become this call's events
        stt: STT = bind(engine.stt, self._report_fallback)
        llm: LLM = bind(engine.llm, self._report_fallback)
        tts: TTS = bind(engine.tts, self._report_fallback)
        self._turn_q: asyncio.Queue[UserTurn] = asyncio.Queue()
        self.replies = Replies(ctx, llm, tts, self._opts)
        vad = engine.vad.stream() if engine.vad is not None else None
        self.turns = TurnTaker(ctx, stt, vad, self._opts, self.replies, self._turn_q)
        self._tg: asyncio.TaskGroup | None = None
        self._pending_say: list[str] = []

    @property
    def history(self) -> list[Message]:
        """What the conversation was, as the caller heard it."""
        return self.replies.history

    @property
    def stt_stream(self) -> STTStream | None:
        """The STT stream open now (None between a failure and its retry)."""
        return self.turns.stream

    # ------------------------------------------------------------------ EngineSession

    def push_audio(self, ulaw: bytes) -> None:
        """Caller audio (one frame); processed by the audio loop."""
        self.turns.push_audio(ulaw)

    def push_dtmf(self, digit: str) -> None:
        """A key press is a user turn for the model ("caller pressed 5"), not speech."""
        self._turn_q.put_nowait(UserTurn(f"caller pressed {digit}", self._clock.monotonic(), show=False))

    def push_text(self, text: str) -> None:
        """A user turn that bypasses speech recognition."""
        self._turn_q.put_nowait(UserTurn(text, self._clock.monotonic()))

    def say(self, text: str) -> None:
        """Speak `text` verbatim now (a voicemail message), cutting off whatever the agent was saying."""
        if self._tg is None:
            self._pending_say.append(text)
            return
        self._tg.create_task(self._say(text), name="pipeline-say")

    async def _say(self, text: str) -> None:
        if self.replies.busy():
            await self.replies.barge_in(self._clock.monotonic())
        self.replies.begin(Reply(self.replies.next_turn_id(), fixed_text=text))

    async def run(self) -> None:
        """Run the conversation until cancelled; raises ProviderError when the STT is gone for good."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                self.replies.start(tg)
                self.turns.start(tg)
                tg.create_task(self._turn_loop(), name="pipeline-turns")
                if self._pending_say:  # a voicemail decided before the call connected replaces the greeting
                    for text in self._pending_say:
                        self.say(text)
                elif self._ctx.first_message:
                    self.replies.begin(Reply(self.replies.next_turn_id(), fixed_text=self._ctx.first_message))
        except BaseExceptionGroup as group:
            # Surface the first real error itself, not a group, to the call session.
            leaves = _leaves(group)
            raise leaves[0] from None
        finally:
            self.turns.bill_stt()

    # ------------------------------------------------------------------ turns

    async def _turn_loop(self) -> None:
        replies = self.replies
        while True:
            turn = await self._turn_q.get()
            if turn.show:
                self._ctx.emit(
                    TranscriptLine(
                        **self._ctx.new_event_fields(),
                        role="user",
                        text=turn.text,
                        stt_ms=rounded(turn.stt_ms),
                    )
                )
            reply = replies.in_flight()
            if reply is not None and reply.task is not None:
                if self._opts.interruptible:
                    await replies.barge_in(self._clock.monotonic())
                else:
                    await asyncio.wait([reply.task])
            elif self._opts.interruptible and self._ctx.audio.speaking:
                await replies.barge_in(self._clock.monotonic())
            replies.history.append(Message("user", turn.text))
            # Started only now that the previous reply is over, so its audio is not taken for this one's.
            self._ctx.emit(UserTurnEnded(turn.at))
            replies.begin(
                Reply(replies.next_turn_id(), endpointing_ms=turn.endpointing_ms, stt_ms=turn.stt_ms)
            )

    def _report_fallback(self, kind: Literal["stt", "tts", "llm"], old: str, new: str, reason: str) -> None:
        self._ctx.emit(
            ProviderFallback(
                **self._ctx.new_event_fields(), kind=kind, from_provider=old, to_provider=new, reason=reason
            )
        )


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out
