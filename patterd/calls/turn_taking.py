"""The pipeline's ear: caller audio through the STT and VAD, barge-in detection, endpointing, committed user turns."""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import structlog

from patterd.calls.pipeline_report import emit_usage, report_failure
from patterd.calls.sentences import ULAW_BYTES_PER_MS
from patterd.errors import ProviderConnectionError, ProviderError
from patterd.protocols.audio import is_voiced
from patterd.providers.fallback import active_name
from patterd.providers.kinds import STT, CallContext, STTStream, Transcript, VADStream

if TYPE_CHECKING:
    from patterd.calls.pipeline import PipelineOptions

log = structlog.get_logger("patterd.calls.pipeline")

ARRIVALS_KEPT = 1500  # 30 s of frame arrival times: an STT ends an utterance on audio newer than that


@dataclass
class UserTurn:
    """What the caller said (or keyed, or typed), ready for a reply."""

    text: str
    at: float  # monotonic arrival of the turn's last voiced frame (or of the text / key press)
    stt_ms: float | None = None
    endpointing_ms: float | None = None
    show: bool = True  # emit a user TranscriptLine (DTMF is recorded by the session instead)


class Speaker(Protocol):
    """The agent's mouth as the ear sees it: whether it is busy, and how to cut it off."""

    def busy(self) -> bool:
        """A reply is being made or its audio is still playing."""
        ...

    async def barge_in(self, detected_at: float) -> None:
        """Stop the agent now: the caller talks over it (detected at monotonic `detected_at`)."""
        ...


class TurnTaker:
    """Listens to one call's caller: feeds the STT and VAD, detects barge-in, queues each finished turn."""

    def __init__(
        self,
        ctx: CallContext,
        stt: STT,
        vad: VADStream | None,
        options: PipelineOptions,
        speaker: Speaker,
        turns: asyncio.Queue[UserTurn],
    ) -> None:
        self._ctx = ctx
        self._clock = ctx.clock
        self._stt = stt
        self._vad = vad
        self._opts = options
        self._speaker = speaker
        self._turns = turns
        self._audio_q: asyncio.Queue[tuple[bytes, float]] = asyncio.Queue()  # (frame, monotonic arrival)
        self._tg: asyncio.TaskGroup | None = None
        self.stream: STTStream | None = None
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

    def push_audio(self, ulaw: bytes) -> None:
        """Caller audio (one frame); processed by the audio loop."""
        self._audio_q.put_nowait((ulaw, self._clock.monotonic()))  # arrival: where a turn's latency starts

    def start(self, tg: asyncio.TaskGroup) -> None:
        """Run the STT and audio loops in `tg` (the call's task group)."""
        self._tg = tg
        tg.create_task(self._stt_loop(), name="pipeline-stt")
        tg.create_task(self._audio_loop(), name="pipeline-audio")

    # ------------------------------------------------------------------ caller audio

    async def _audio_loop(self) -> None:
        opts = self._opts
        while True:
            frame, arrived = await self._audio_q.get()
            self._stt_bytes_unbilled += len(frame)
            stream = self.stream
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
                self._on_speech_start()
            elif change == "speech_end":
                self._on_speech_end()
            if vad.speaking:
                ms = len(frame) / ULAW_BYTES_PER_MS
                self._run_ms += ms
                self._utterance_ms += ms
                if not self._barged and self._run_ms >= opts.min_speech_ms:
                    self._barged = True
                    if opts.interruptible and self._speaker.busy():
                        await self._speaker.barge_in(now)

    def _on_speech_start(self) -> None:
        self._run_ms = 0.0
        self._barged = False
        self._cancel_endpoint()  # the caller went on talking

    def _on_speech_end(self) -> None:
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
        stream = self.stream
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
                    self.stream = stream
                    async for transcript in stream:
                        retried = False  # the stream works again: a later failure gets its own retry
                        await self._on_transcript(transcript)
                raise ProviderConnectionError(
                    "the STT stream ended while the call was live", provider=self._opts.stt_name
                )
            except ProviderError as exc:
                self.stream = None
                if not exc.retryable or retried:
                    raise
                retried = True
                report_failure(self._ctx, "stt", exc)
                await asyncio.sleep(self._opts.retry_backoff_ms / 1000)

    async def _on_transcript(self, transcript: Transcript) -> None:
        text = transcript.text.strip()
        if not transcript.is_final:
            # Without a VAD, recognized words are the only sign that the caller talks over the agent.
            if (
                text
                and self._vad is None
                and not self._barged
                and self._opts.interruptible
                and self._speaker.busy()
            ):
                self._barged = True
                await self._speaker.barge_in(self._clock.monotonic())
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
        if self._vad is not None and utterance_ms < self._opts.min_speech_ms and self._speaker.busy():
            log.info("ignored short speech over the agent", text=text, speech_ms=utterance_ms)
            return
        at, endpointing_ms, stt_ms = turn_timing(now, voiced_at, flushed_at, self._arrival_of(stt_audio_ms))
        self.bill_stt()
        self._turns.put_nowait(UserTurn(text, at, stt_ms, endpointing_ms))

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

    def bill_stt(self) -> None:
        """A Usage event for the caller audio the STT has heard since the last one."""
        if self._stt_bytes_unbilled:
            seconds = self._stt_bytes_unbilled / (ULAW_BYTES_PER_MS * 1000)
            self._stt_bytes_unbilled = 0
            stt_name = active_name(self._stt, self._opts.stt_name)
            emit_usage(self._ctx, "stt", stt_name, {"audio_seconds": round(seconds, 3)})


def turn_timing(
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
