"""The pipeline's mouth: one reply at a time, LLM rounds with tools streamed sentence by sentence into the TTS, barge-in."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from patterd.calls.pipeline_report import emit_usage, report_failure, rounded
from patterd.calls.sentences import ULAW_BYTES_PER_MS, Sentence, SentenceChunker, heard_texts
from patterd.errors import ProviderError
from patterd.protocols.events import BargeIn, TranscriptLine, TranscriptPartial
from patterd.providers.fallback import active_name
from patterd.providers.kinds import (
    LLM,
    TTS,
    CallContext,
    LLMUsage,
    Message,
    TextDelta,
    ToolCallRequest,
)

if TYPE_CHECKING:
    from patterd.calls.pipeline import PipelineOptions

log = structlog.get_logger("patterd.calls.pipeline")


@dataclass
class Round:
    """One LLM request of a reply and the tools it called."""

    texts: list[str] = field(default_factory=list)  # every piece the LLM wrote, spoken or not yet
    tool_calls: list[ToolCallRequest] = field(default_factory=list)
    results: list[str] | None = None  # set once every tool call of the round has run


@dataclass
class Reply:
    """One agent turn: its rounds, its sentences in playout order, and its stage times."""

    turn_id: str
    endpointing_ms: float | None = None
    stt_ms: float | None = None
    fixed_text: str | None = None  # speak this instead of asking the LLM (first message)
    sentences: list[Sentence] = field(default_factory=list)  # in playout order
    rounds: list[Round] = field(default_factory=list)
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


@contextlib.asynccontextmanager
async def _closing(stream: AsyncIterator[Any]) -> AsyncIterator[AsyncIterator[Any]]:
    """Close an async generator when leaving (cancellation closes the provider's HTTP stream at once)."""
    try:
        yield stream
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


class Replies:
    """Makes and speaks one call's replies; `history` keeps only what the caller heard."""

    def __init__(self, ctx: CallContext, llm: LLM, tts: TTS, options: PipelineOptions) -> None:
        self._ctx = ctx
        self._clock = ctx.clock
        self._llm = llm
        self._tts = tts
        self._opts = options
        self.history: list[Message] = []  # what the conversation was, as the caller heard it
        self.current: Reply | None = None
        self._turn_seq = 0
        self._tg: asyncio.TaskGroup | None = None

    def start(self, tg: asyncio.TaskGroup) -> None:
        """Replies run as tasks of `tg` (the call's task group)."""
        self._tg = tg

    def next_turn_id(self) -> str:
        self._turn_seq += 1
        return f"turn-{self._turn_seq}"

    def begin(self, reply: Reply) -> None:
        """Make and speak `reply` (the previous one is over or was cut off)."""
        assert self._tg is not None
        self.current = reply
        reply.task = self._tg.create_task(self._respond(reply), name=f"pipeline-{reply.turn_id}")

    def in_flight(self) -> Reply | None:
        """The reply still being made, if any."""
        reply = self.current
        return reply if reply is not None and reply.task is not None and not reply.task.done() else None

    def busy(self) -> bool:
        """A reply is being made or its audio is still playing."""
        return self.in_flight() is not None or self._ctx.audio.speaking

    async def barge_in(self, detected_at: float) -> None:
        """Stop the agent at once, cancel its LLM and TTS, keep what the caller heard."""
        reply, self.current = self.current, None
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
            self._finish(reply, played_ms=played)
        self._ctx.emit(
            BargeIn(**self._ctx.new_event_fields(), played_ms=int(played), reaction_ms=round(reaction_ms, 1))
        )

    # ------------------------------------------------------------------ making a reply

    async def _respond(self, reply: Reply) -> None:
        sentences: asyncio.Queue[Sentence | None] = asyncio.Queue()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._speak(reply, sentences))
            if reply.fixed_text is not None:
                reply.rounds.append(Round())
                sentences.put_nowait(Sentence(reply.fixed_text, 0))
                sentences.put_nowait(None)
            else:
                await self._think(reply, sentences)
        await self._ctx.audio.drained()
        self._finish(reply, played_ms=None)
        if self.current is reply:
            self.current = None

    async def _think(self, reply: Reply, sentences: asyncio.Queue[Sentence | None]) -> None:
        """LLM rounds: stream text into sentences, run tools, ask again."""
        opts = self._opts
        try:
            for round_no in range(opts.max_tool_rounds + 1):
                current = Round()
                reply.rounds.append(current)
                chunker = SentenceChunker(opts.min_sentence_chars, opts.max_clause_chars)
                messages = [
                    Message("system", self._ctx.instructions),
                    *self.history,
                    *round_messages(reply, None),
                ]
                try:
                    await self._stream_llm(reply, current, messages, chunker, sentences, round_no)
                except ProviderError as exc:
                    report_failure(self._ctx, "llm", exc)
                    current.tool_calls.clear()
                    if not reply.sentences and sentences.empty() and opts.apology:
                        current.texts.append(opts.apology)
                        sentences.put_nowait(Sentence(opts.apology, round_no))
                    return
                for piece in chunker.flush():
                    current.texts.append(piece)
                    sentences.put_nowait(Sentence(piece, round_no))
                if not current.tool_calls or reply.tts_failed:
                    return
                if round_no == opts.max_tool_rounds:
                    report_failure(
                        self._ctx,
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
        reply: Reply,
        current: Round,
        messages: list[Message],
        chunker: SentenceChunker,
        sentences: asyncio.Queue[Sentence | None],
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
                                sentences.put_nowait(Sentence(piece, round_no))
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
                            emit_usage(self._ctx, "llm", llm.name, quantities)
                return
            except ProviderError as exc:
                if attempt == 0 and exc.retryable and not produced:
                    log.info("llm failed, retrying once", error=str(exc))
                    await asyncio.sleep(self._opts.retry_backoff_ms / 1000)
                    continue
                raise

    # ------------------------------------------------------------------ speaking it

    async def _speak(self, reply: Reply, sentences: asyncio.Queue[Sentence | None]) -> None:
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
                report_failure(self._ctx, "tts", exc)

    async def _synthesize(self, reply: Reply, sentence: Sentence) -> None:
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

    def _announce(self, reply: Reply, sentence: Sentence, now: float) -> None:
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

    def _finish(self, reply: Reply, *, played_ms: float | None) -> None:
        """Put what the caller heard into the history and the transcript (once per reply)."""
        if reply.finished:
            return
        reply.finished = True
        for handle in reply.announcements:  # words not reached (barge-in) are never shown
            handle.cancel()
        interrupted = played_ms is not None
        heard = heard_texts(reply.sentences, played_ms)
        self.history.extend(round_messages(reply, heard))
        text = " ".join(t for t in heard if t)
        if text:
            # latency_ms and transport_ms are the call session's: it knows when audio reached the carrier.
            self._ctx.emit(
                TranscriptLine(
                    **self._ctx.new_event_fields(),
                    role="assistant",
                    text=text,
                    interrupted=interrupted,
                    endpointing_ms=rounded(reply.endpointing_ms),
                    stt_ms=rounded(reply.stt_ms),
                    llm_ttft_ms=rounded(reply.llm_ttft_ms),
                    tts_ttfb_ms=rounded(reply.tts_ttfb_ms),
                )
            )
        if reply.tts_chars:
            tts_name = active_name(self._tts, self._opts.tts_name)
            emit_usage(self._ctx, "tts", tts_name, {"characters": float(reply.tts_chars)})


def round_messages(reply: Reply, heard: list[str] | None) -> list[Message]:
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
