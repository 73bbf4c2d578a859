"""The STT → LLM → TTS engine: turn-taking, sentence-streamed replies, tools and barge-in, shaped like a realtime engine.

One `PipelineSession` per call runs four kinds of work in one TaskGroup:

- the audio loop: caller frames → STT stream and VAD; VAD speech that lasts `min_speech_ms`
  while the agent is busy is a barge-in; VAD speech end starts the endpointing timer, which
  asks the STT to flush after `endpointing_ms` of silence;
- the STT loop: interim transcripts (barge-in when there is no VAD), finals collected until
  the STT says end-of-utterance or the flush answers; then the user turn is queued;
- the turn loop: each user turn (speech, DTMF, text) interrupts the reply in flight and
  starts a new one;
- one reply task at a time: the LLM streams text into a sentence chunker while a TTS worker
  speaks finished sentences (sentence k+1 is synthesized while k plays); tool calls go
  through `ctx.run_tool` and the LLM is asked again, up to `max_tool_rounds`.

History keeps only what the caller heard: when a reply is cut off, the sentences whose audio
fully played plus the played share of the current one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from patterd.errors import ProviderConnectionError, ProviderError
from patterd.protocols.audio import is_voiced
from patterd.protocols.events import (
    BargeIn,
    CallFailed,
    ProviderFallback,
    TranscriptLine,
    TranscriptPartial,
    Usage,
)
from patterd.providers.fallback import active_name, bind
from patterd.providers.kinds import (
    LLM,
    STT,
    TTS,
    VAD,
    CallContext,
    LLMUsage,
    Message,
    STTStream,
    TextDelta,
    ToolCallRequest,
    Transcript,
    VADStream,
)

log = structlog.get_logger(__name__)

ULAW_BYTES_PER_MS = 8  # 8 kHz μ-law: one byte per sample
ARRIVALS_KEPT = 1500  # 30 s of frame arrival times: an STT ends an utterance on audio newer than that
SENTENCE_ENDS = ".!?;:"
CLOSERS = "\"')]»”’"


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


class SentenceChunker:
    """Cuts streamed LLM text into speakable pieces: at . ! ? ; : and newlines, long clauses at commas."""

    def __init__(self, min_chars: int = 12, max_clause_chars: int = 80) -> None:
        self.min_chars = min_chars
        self.max_clause_chars = max_clause_chars
        self._buf = ""

    def push(self, text: str) -> list[str]:
        """Add text; return the pieces it completes."""
        self._buf += text
        out: list[str] = []
        while (cut := self._cut()) is not None:
            piece, self._buf = self._buf[:cut].strip(), self._buf[cut:]
            if piece:
                out.append(piece)
        return out

    def flush(self) -> list[str]:
        """The rest of the text (the reply ended)."""
        piece, self._buf = self._buf.strip(), ""
        return [piece] if piece else []

    def _cut(self) -> int | None:
        buf = self._buf
        n = len(buf)
        last_space = -1
        for i, ch in enumerate(buf):
            if ch.isspace():
                last_space = i
            if ch == "\n":
                if buf[:i].strip():
                    return i + 1
                continue
            if ch not in SENTENCE_ENDS and ch != ",":
                continue
            # A sentence ends only where whitespace follows: "3.5" and "e.g." mid-word stay whole,
            # and a final "." waits for the next token to tell.
            j = i + 1
            while j < n and buf[j] in CLOSERS:
                j += 1
            if j >= n or not buf[j].isspace():
                continue
            length = len(buf[:j].strip())
            if ch == "," and length >= self.max_clause_chars:
                return j
            if ch != "," and length >= self.min_chars:
                return j
        if n > 2 * self.max_clause_chars and last_space > 0:
            return last_space  # no punctuation at all: do not hold speech back forever
        return None


@dataclass
class _Sentence:
    text: str
    round: int
    audio_bytes: int = 0  # μ-law bytes queued for playout so far


@dataclass
class _Round:
    texts: list[str] = field(default_factory=list)  # every piece the LLM wrote, spoken or not yet
    tool_calls: list[ToolCallRequest] = field(default_factory=list)
    results: list[str] | None = None  # set once every tool call of the round has run


@dataclass
class _UserTurn:
    text: str
    at: float  # monotonic arrival of the turn's last voiced frame (or of the text / key press)
    stt_ms: float | None = None
    endpointing_ms: float | None = None
    show: bool = True  # emit a user TranscriptLine (DTMF is recorded by the session instead)


@dataclass
class _Reply:
    turn_id: str
    endpointing_ms: float | None = None
    stt_ms: float | None = None
    fixed_text: str | None = None  # speak this instead of asking the LLM (first message)
    sentences: list[_Sentence] = field(default_factory=list)  # in playout order
    rounds: list[_Round] = field(default_factory=list)
    llm_ttft_ms: float | None = None
    tts_ttfb_ms: float | None = None
    first_audio_at: float | None = None
    tts_chars: int = 0
    tts_failed: bool = False
    finished: bool = False
    task: asyncio.Task[None] | None = None
    announcements: list[asyncio.TimerHandle] = field(default_factory=list)  # TranscriptPartial to come

    def queued_ms(self) -> float:
        return sum(s.audio_bytes for s in self.sentences) / ULAW_BYTES_PER_MS


def heard_texts(sentences: Sequence[_Sentence], played_ms: float | None) -> list[str]:
    """Per sentence, the text the caller heard after `played_ms` of the reply (None: all of it)."""
    if played_ms is None:
        return [
            s.text if s.audio_bytes else "" for s in sentences
        ]  # a sentence the TTS failed was never heard
    out: list[str] = []
    elapsed = 0.0
    for s in sentences:
        duration = s.audio_bytes / ULAW_BYTES_PER_MS
        if duration <= 0 or elapsed >= played_ms:
            out.append("")
            continue
        if elapsed + duration <= played_ms:
            out.append(s.text)
        else:
            # Speech runs at a roughly even rate: the played share of the audio is that share of
            # the characters, cut back to a whole word.
            share = (played_ms - elapsed) / duration
            prefix = s.text[: int(len(s.text) * share)]
            if len(prefix) < len(s.text) and not s.text[len(prefix) : len(prefix) + 1].isspace():
                prefix = prefix.rsplit(" ", 1)[0] if " " in prefix else ""
            out.append(prefix.strip())
        elapsed += duration
    return out


@contextlib.asynccontextmanager
async def _closing(stream: AsyncIterator[Any]) -> AsyncIterator[AsyncIterator[Any]]:
    """Close an async generator when leaving (cancellation closes the provider's HTTP stream at once)."""
    try:
        yield stream
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


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
    """One call's conversation through the pipeline (an EngineSession)."""

    def __init__(self, engine: PipelineEngine, ctx: CallContext) -> None:
        self._engine = engine
        self._ctx = ctx
        self._opts = engine.options
        # fallback chains bound to this call, so their switches become this call's events
        self._stt: STT = bind(engine.stt, self._report_fallback)
        self._llm: LLM = bind(engine.llm, self._report_fallback)
        self._tts: TTS = bind(engine.tts, self._report_fallback)
        self._clock = ctx.clock
        self._vad: VADStream | None = engine.vad.stream() if engine.vad is not None else None
        self._audio_q: asyncio.Queue[tuple[bytes, float]] = asyncio.Queue()  # (frame, monotonic arrival)
        self._turn_q: asyncio.Queue[_UserTurn] = asyncio.Queue()
        self.history: list[Message] = []  # what the conversation was, as the caller heard it
        self._stt_stream: STTStream | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._reply: _Reply | None = None
        self._turn_seq = 0
        # turn-taking state
        self._run_ms = 0.0  # length of the current VAD speech run
        self._utterance_ms = 0.0  # VAD speech since the last committed turn
        # turn timing: the arrival of the turn's last voiced frame, when the pipeline asked the STT to
        # finalize, and (stream audio ms at the frame's end, arrival) of recent frames for the STT's own end
        self._last_voiced_at: float | None = None
        self._flushed_at: float | None = None
        self._stream_ms = 0.0  # audio given to the current STT stream
        self._arrivals: collections.deque[tuple[float, float]] = collections.deque(maxlen=ARRIVALS_KEPT)
        self._barged = False  # this speech run already interrupted the agent
        self._pending: list[str] = []  # final transcript segments of the turn in progress
        self._flush_requested = False
        self._endpoint_task: asyncio.Task[None] | None = None
        self._stt_bytes_unbilled = 0
        self._pending_say: list[str] = []

    # ------------------------------------------------------------------ EngineSession

    def push_audio(self, ulaw: bytes) -> None:
        """Caller audio (one frame); processed by the audio loop."""
        self._audio_q.put_nowait((ulaw, self._clock.monotonic()))  # arrival: where a turn's latency starts

    def push_dtmf(self, digit: str) -> None:
        """A key press is a user turn for the model ("caller pressed 5"), not speech."""
        self._turn_q.put_nowait(_UserTurn(f"caller pressed {digit}", self._clock.monotonic(), show=False))

    def push_text(self, text: str) -> None:
        """A user turn that bypasses speech recognition."""
        self._turn_q.put_nowait(_UserTurn(text, self._clock.monotonic()))

    def say(self, text: str) -> None:
        """Speak `text` verbatim now (a voicemail message), cutting off whatever the agent was saying."""
        if self._tg is None:
            self._pending_say.append(text)
            return
        self._tg.create_task(self._say(text), name="pipeline-say")

    async def _say(self, text: str) -> None:
        if self._busy():
            await self._barge_in(self._clock.monotonic())
        self._start_reply(_Reply(self._next_turn_id(), fixed_text=text))

    async def run(self) -> None:
        """Run the conversation until cancelled; raises ProviderError when the STT is gone for good."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._stt_loop(), name="pipeline-stt")
                tg.create_task(self._audio_loop(), name="pipeline-audio")
                tg.create_task(self._turn_loop(), name="pipeline-turns")
                if self._pending_say:  # a voicemail decided before the call connected replaces the greeting
                    for text in self._pending_say:
                        self.say(text)
                elif self._ctx.first_message:
                    self._start_reply(_Reply(self._next_turn_id(), fixed_text=self._ctx.first_message))
        except BaseExceptionGroup as group:
            # Surface the first real error itself, not a group, to the call session.
            leaves = _leaves(group)
            raise leaves[0] from None
        finally:
            self._bill_stt()

    # ------------------------------------------------------------------ caller audio

    async def _audio_loop(self) -> None:
        opts = self._opts
        while True:
            frame, arrived = await self._audio_q.get()
            self._stt_bytes_unbilled += len(frame)
            stream = self._stt_stream
            if stream is not None:
                stream.push_audio(frame)
                self._stream_ms += len(frame) / ULAW_BYTES_PER_MS
                self._arrivals.append((self._stream_ms, arrived))
            vad = self._vad
            if vad is None:
                if is_voiced(frame):
                    self._last_voiced_at = arrived
                continue
            now = self._clock.monotonic()
            change = vad.process(frame)
            if vad.voiced:
                self._last_voiced_at = arrived
            if change == "speech_start":
                self._on_speech_start(now)
            elif change == "speech_end":
                self._on_speech_end(now)
            if vad.speaking:
                ms = len(frame) / ULAW_BYTES_PER_MS
                self._run_ms += ms
                self._utterance_ms += ms
                if not self._barged and self._run_ms >= opts.min_speech_ms:
                    self._barged = True
                    if opts.interruptible and self._busy():
                        await self._barge_in(now)

    def _on_speech_start(self, now: float) -> None:
        self._run_ms = 0.0
        self._barged = False
        self._cancel_endpoint()  # the caller went on talking

    def _on_speech_end(self, now: float) -> None:
        if self._utterance_ms < self._opts.min_speech_ms and not self._pending:
            return  # a cough or a click: not a turn
        self._start_endpoint()

    def _start_endpoint(self) -> None:
        self._cancel_endpoint()
        assert self._tg is not None
        self._endpoint_task = self._tg.create_task(self._endpoint(), name="pipeline-endpoint")

    async def _endpoint(self) -> None:
        """Silence long enough: ask the STT to finalize, then take what we have if it stays quiet."""
        await asyncio.sleep(self._opts.endpointing_ms / 1000)
        self._flush_requested = True
        self._flushed_at = self._clock.monotonic()  # the pipeline decided the turn is over
        stream = self._stt_stream
        if stream is not None:
            try:
                await stream.flush()
            except ProviderError as exc:
                log.warning("stt flush failed", error=str(exc))
        await asyncio.sleep(self._opts.flush_grace_ms / 1000)
        self._endpoint_task = None  # committing must not cancel this task under itself
        self._commit()

    def _cancel_endpoint(self) -> None:
        task = self._endpoint_task
        self._endpoint_task = None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    # ------------------------------------------------------------------ speech recognition

    async def _stt_loop(self) -> None:
        retried = False
        while True:
            try:
                async with self._stt.stream() as stream:
                    self._stream_ms = 0.0  # audio_ms of a new stream counts from its own start
                    self._arrivals.clear()
                    self._stt_stream = stream
                    async for transcript in stream:
                        retried = False  # the stream works again: a later failure gets its own retry
                        await self._on_transcript(transcript)
                raise ProviderConnectionError(
                    "the STT stream ended while the call was live", provider=self._opts.stt_name
                )
            except ProviderError as exc:
                self._stt_stream = None
                if not exc.retryable or retried:
                    raise
                retried = True
                self._fail("stt", exc)
                await asyncio.sleep(self._opts.retry_backoff_ms / 1000)

    async def _on_transcript(self, transcript: Transcript) -> None:
        text = transcript.text.strip()
        if not transcript.is_final:
            # Without a VAD, recognized words are the only sign that the caller talks over the agent.
            if text and self._vad is None and not self._barged and self._opts.interruptible and self._busy():
                self._barged = True
                await self._barge_in(self._clock.monotonic())
            return
        if text:
            self._pending.append(text)
        if transcript.end_of_utterance or self._flush_requested or self._vad is None:
            self._commit(transcript.audio_ms)
        elif text and not self._vad.speaking and self._endpoint_task is None:
            # The STT heard words the VAD missed: end the turn on silence all the same.
            self._start_endpoint()

    def _commit(self, stt_audio_ms: float | None = None) -> None:
        """The caller's turn is over: queue it with its timing (`stt_audio_ms`: where the STT ended it)."""
        now = self._clock.monotonic()
        self._cancel_endpoint()
        self._flush_requested = False
        flushed_at, self._flushed_at = self._flushed_at, None
        voiced_at, self._last_voiced_at = self._last_voiced_at, None
        text = " ".join(self._pending).strip()
        self._pending = []
        utterance_ms = self._utterance_ms
        self._utterance_ms = 0.0
        self._barged = False
        if not text:
            return
        if self._vad is not None and utterance_ms < self._opts.min_speech_ms and self._busy():
            log.info("ignored short speech over the agent", text=text, speech_ms=utterance_ms)
            return
        at, endpointing_ms, stt_ms = _turn_timing(now, voiced_at, flushed_at, self._arrival_of(stt_audio_ms))
        self._bill_stt()
        self._turn_q.put_nowait(_UserTurn(text, at, stt_ms, endpointing_ms))

    def _arrival_of(self, audio_ms: float | None) -> float | None:
        """When the frame holding the current STT stream's `audio_ms` arrived (None: unknown or too old)."""
        if audio_ms is None:
            return None
        found: float | None = None
        for end_ms, arrived in reversed(self._arrivals):  # the newest frames are the likely ones
            if end_ms < audio_ms:
                break
            found = arrived
        return found

    def _bill_stt(self) -> None:
        if self._stt_bytes_unbilled:
            seconds = self._stt_bytes_unbilled / (ULAW_BYTES_PER_MS * 1000)
            self._stt_bytes_unbilled = 0
            stt_name = active_name(self._stt, self._opts.stt_name)
            self._emit_usage("stt", stt_name, {"audio_seconds": round(seconds, 3)})

    # ------------------------------------------------------------------ turns and barge-in

    async def _turn_loop(self) -> None:
        while True:
            turn = await self._turn_q.get()
            if turn.show:
                self._ctx.emit(
                    TranscriptLine(
                        **self._ctx.new_event_fields(), role="user", text=turn.text, stt_ms=_r(turn.stt_ms)
                    )
                )
            reply = self._reply
            if reply is not None and reply.task is not None and not reply.task.done():
                if self._opts.interruptible:
                    await self._barge_in(self._clock.monotonic())
                else:
                    await asyncio.wait([reply.task])
            elif self._opts.interruptible and self._ctx.audio.speaking:
                await self._barge_in(self._clock.monotonic())
            self.history.append(Message("user", turn.text))
            # Started only now that the previous reply is over, so its audio is not taken for this one's.
            self._ctx.mark_user_speech_end(turn.at)
            self._start_reply(
                _Reply(self._next_turn_id(), endpointing_ms=turn.endpointing_ms, stt_ms=turn.stt_ms)
            )

    def _busy(self) -> bool:
        reply = self._reply
        in_flight = reply is not None and reply.task is not None and not reply.task.done()
        return in_flight or self._ctx.audio.speaking

    async def _barge_in(self, detected_at: float) -> None:
        """Stop the agent at once, cancel its LLM and TTS, keep what the caller heard."""
        reply, self._reply = self._reply, None
        if reply is None and not self._ctx.audio.speaking:
            return
        heard = await self._ctx.audio.interrupt()
        reaction_ms = (self._clock.monotonic() - detected_at) * 1000
        if reply is None:
            played = heard[1] if heard is not None else 0
        else:
            if reply.task is not None:
                reply.task.cancel()
                await asyncio.wait([reply.task])
            if reply.finished:
                return  # it completed before the cancel landed: the caller heard all of it
            if heard is None:
                played = int(reply.queued_ms())  # nothing left playing: all queued audio was heard
            elif heard[0] == reply.turn_id:
                played = heard[1]
            else:
                played = 0
            self._finish_reply(reply, played_ms=played)
        self._ctx.emit(
            BargeIn(**self._ctx.new_event_fields(), played_ms=int(played), reaction_ms=round(reaction_ms, 1))
        )

    # ------------------------------------------------------------------ replies

    def _next_turn_id(self) -> str:
        self._turn_seq += 1
        return f"turn-{self._turn_seq}"

    def _start_reply(self, reply: _Reply) -> None:
        assert self._tg is not None
        self._reply = reply
        reply.task = self._tg.create_task(self._respond(reply), name=f"pipeline-{reply.turn_id}")

    async def _respond(self, reply: _Reply) -> None:
        sentences: asyncio.Queue[_Sentence | None] = asyncio.Queue()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._speak(reply, sentences))
            if reply.fixed_text is not None:
                reply.rounds.append(_Round())
                sentences.put_nowait(_Sentence(reply.fixed_text, 0))
                sentences.put_nowait(None)
            else:
                await self._think(reply, sentences)
        await self._ctx.audio.drained()
        self._finish_reply(reply, played_ms=None)
        if self._reply is reply:
            self._reply = None

    async def _think(self, reply: _Reply, sentences: asyncio.Queue[_Sentence | None]) -> None:
        """LLM rounds: stream text into sentences, run tools, ask again."""
        opts = self._opts
        try:
            for round_no in range(opts.max_tool_rounds + 1):
                current = _Round()
                reply.rounds.append(current)
                chunker = SentenceChunker(opts.min_sentence_chars, opts.max_clause_chars)
                messages = [
                    Message("system", self._ctx.instructions),
                    *self.history,
                    *_round_messages(reply, None),
                ]
                try:
                    await self._stream_llm(reply, current, messages, chunker, sentences, round_no)
                except ProviderError as exc:
                    self._fail("llm", exc)
                    current.tool_calls.clear()
                    if not reply.sentences and sentences.empty() and opts.apology:
                        current.texts.append(opts.apology)
                        sentences.put_nowait(_Sentence(opts.apology, round_no))
                    return
                for piece in chunker.flush():
                    current.texts.append(piece)
                    sentences.put_nowait(_Sentence(piece, round_no))
                if not current.tool_calls or reply.tts_failed:
                    return
                if round_no == opts.max_tool_rounds:
                    self._fail(
                        "llm",
                        ProviderError(
                            f"the model asked for tools more than max_tool_rounds={opts.max_tool_rounds} times"
                        ),
                    )
                    current.tool_calls.clear()
                    return
                results = []
                for call in current.tool_calls:
                    results.append(await self._ctx.run_tool(call.name, call.arguments))
                current.results = results
        finally:
            sentences.put_nowait(None)

    async def _stream_llm(
        self,
        reply: _Reply,
        current: _Round,
        messages: list[Message],
        chunker: SentenceChunker,
        sentences: asyncio.Queue[_Sentence | None],
        round_no: int,
    ) -> None:
        llm = self._llm
        started = self._clock.monotonic()
        for attempt in (0, 1):
            produced = False
            try:
                async with _closing(llm.complete(messages, self._ctx.tools)) as stream:
                    async for chunk in stream:
                        if isinstance(chunk, TextDelta | ToolCallRequest):
                            produced = True
                            if reply.llm_ttft_ms is None:
                                reply.llm_ttft_ms = (self._clock.monotonic() - started) * 1000
                        if isinstance(chunk, TextDelta):
                            for piece in chunker.push(chunk.text):
                                current.texts.append(piece)
                                sentences.put_nowait(_Sentence(piece, round_no))
                            if reply.tts_failed:
                                return  # nothing more can be spoken: stop the model
                        elif isinstance(chunk, ToolCallRequest):
                            current.tool_calls.append(chunk)
                        elif isinstance(chunk, LLMUsage):
                            # input_tokens includes the cached ones; bill those at the cached price only.
                            quantities = {
                                "input_tokens": float(chunk.input_tokens - chunk.cached_tokens),
                                "output_tokens": float(chunk.output_tokens),
                            }
                            if chunk.cached_tokens:
                                quantities["cached_input_tokens"] = float(chunk.cached_tokens)
                            self._emit_usage("llm", llm.name, quantities)
                return
            except ProviderError as exc:
                if attempt == 0 and exc.retryable and not produced:
                    log.info("llm failed, retrying once", error=str(exc))
                    await asyncio.sleep(self._opts.retry_backoff_ms / 1000)
                    continue
                raise

    async def _speak(self, reply: _Reply, sentences: asyncio.Queue[_Sentence | None]) -> None:
        """TTS worker: synthesize sentences in order, play each chunk as soon as it arrives."""
        while (sentence := await sentences.get()) is not None:
            if reply.tts_failed:
                continue
            reply.sentences.append(sentence)
            reply.tts_chars += len(sentence.text)
            try:
                await self._synthesize(reply, sentence)
            except ProviderError as exc:
                # Speak nothing broken: the rest of this reply is dropped, the call goes on.
                reply.tts_failed = True
                self._fail("tts", exc)

    async def _synthesize(self, reply: _Reply, sentence: _Sentence) -> None:
        tts = self._tts
        for attempt in (0, 1):
            started = self._clock.monotonic()
            try:
                async with _closing(tts.synthesize(sentence.text)) as audio:
                    async for chunk in audio:
                        if not chunk:
                            continue
                        now = self._clock.monotonic()
                        if sentence.audio_bytes == 0:
                            self._announce(reply, sentence, now)
                        if reply.tts_ttfb_ms is None:
                            reply.tts_ttfb_ms = (now - started) * 1000
                        if reply.first_audio_at is None:
                            reply.first_audio_at = now
                        sentence.audio_bytes += len(chunk)
                        await self._ctx.audio.play(chunk, segment=reply.turn_id)
                return
            except ProviderError as exc:
                if attempt == 0 and exc.retryable and sentence.audio_bytes == 0:
                    await asyncio.sleep(self._opts.retry_backoff_ms / 1000)
                    continue
                raise

    def _announce(self, reply: _Reply, sentence: _Sentence, now: float) -> None:
        """Show live views the reply's words so far when `sentence` starts playing (it may queue behind others)."""
        spoken = " ".join(s.text for s in reply.sentences[: reply.sentences.index(sentence) + 1])

        def announce() -> None:
            if not reply.finished:
                self._ctx.emit(
                    TranscriptPartial(
                        **self._ctx.new_event_fields(), role="assistant", text=spoken, turn=reply.turn_id
                    )
                )

        ahead_secs = 0.0
        if reply.first_audio_at is not None:  # audio of earlier sentences still playing
            queued_ms = sum(s.audio_bytes for s in reply.sentences if s is not sentence) / ULAW_BYTES_PER_MS
            ahead_secs = queued_ms / 1000 - (now - reply.first_audio_at)
        if ahead_secs > 0:
            reply.announcements.append(asyncio.get_running_loop().call_later(ahead_secs, announce))
        else:
            announce()

    def _finish_reply(self, reply: _Reply, *, played_ms: float | None) -> None:
        """Put what the caller heard into the history and the transcript (once per reply)."""
        if reply.finished:
            return
        reply.finished = True
        for handle in reply.announcements:  # words not reached (barge-in) are never shown
            handle.cancel()
        interrupted = played_ms is not None
        heard = heard_texts(reply.sentences, played_ms)
        self.history.extend(_round_messages(reply, heard))
        text = " ".join(t for t in heard if t)
        if text:
            # latency_ms and transport_ms are the call session's: it knows when audio reached the carrier.
            self._ctx.emit(
                TranscriptLine(
                    **self._ctx.new_event_fields(),
                    role="assistant",
                    text=text,
                    interrupted=interrupted,
                    endpointing_ms=_r(reply.endpointing_ms),
                    stt_ms=_r(reply.stt_ms),
                    llm_ttft_ms=_r(reply.llm_ttft_ms),
                    tts_ttfb_ms=_r(reply.tts_ttfb_ms),
                )
            )
        if reply.tts_chars:
            tts_name = active_name(self._tts, self._opts.tts_name)
            self._emit_usage("tts", tts_name, {"characters": float(reply.tts_chars)})

    # ------------------------------------------------------------------ helpers

    def _emit_usage(
        self, component: Literal["stt", "tts", "llm"], provider: str, quantities: dict[str, float]
    ) -> None:
        self._ctx.emit(
            Usage(
                **self._ctx.new_event_fields(), component=component, provider=provider, quantities=quantities
            )
        )

    def _report_fallback(self, kind: Literal["stt", "tts", "llm"], old: str, new: str, reason: str) -> None:
        self._ctx.emit(
            ProviderFallback(
                **self._ctx.new_event_fields(), kind=kind, from_provider=old, to_provider=new, reason=reason
            )
        )

    def _fail(self, component: str, exc: ProviderError) -> None:
        log.warning("pipeline provider error", component=component, error=str(exc))
        self._ctx.emit(
            CallFailed(**self._ctx.new_event_fields(), component=component, message=str(exc), fatal=False)
        )


def _round_messages(reply: _Reply, heard: list[str] | None) -> list[Message]:
    """The assistant (and tool) messages of a reply's rounds: what the LLM wrote (`heard` None), or what was heard."""
    out: list[Message] = []
    for round_no, rnd in enumerate(reply.rounds):
        if heard is None:
            content = " ".join(rnd.texts)
        else:
            content = " ".join(
                t for t, s in zip(heard, reply.sentences, strict=True) if s.round == round_no and t
            )
        if rnd.results is not None and rnd.tool_calls:
            out.append(Message("assistant", content, tool_calls=tuple(rnd.tool_calls)))
            out.extend(
                Message("tool", result, tool_call_id=call.id)
                for call, result in zip(rnd.tool_calls, rnd.results, strict=True)
            )
        elif content:
            out.append(Message("assistant", content))
    return out


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _turn_timing(
    now: float, voiced_at: float | None, flushed_at: float | None, stt_decided_at: float | None
) -> tuple[float, float | None, float | None]:
    """(turn start, endpointing ms, stt ms) of a turn committed `now`.

    The end of the turn was decided by the pipeline's endpointing timer (`flushed_at`), else by
    the STT at the arrival of the audio it ended the utterance on (`stt_decided_at`); an STT that
    does not say where it ended gives one endpointing stage up to the transcript, with no stt stage.
    """
    decided = flushed_at if flushed_at is not None else stt_decided_at
    if voiced_at is None:  # no voiced frame seen (words in noise the VAD missed): time from the decision
        start = decided if decided is not None else now
        return start, None, (now - start) * 1000 if decided is not None else None
    if decided is None:
        return voiced_at, (now - voiced_at) * 1000, None
    decided = min(max(decided, voiced_at), now)  # the STT's own VAD may call the end before ours
    return voiced_at, (decided - voiced_at) * 1000, (now - decided) * 1000
