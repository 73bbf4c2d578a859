"""Turn latency through a real CallSession and pipeline, frame by frame on an injected clock: exact stages."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

import pytest

from patterd.calls.agent import AgentRuntime
from patterd.calls.pipeline import PipelineEngine, PipelineOptions
from patterd.calls.session import CallSession, CallSpec
from patterd.calls.turn_latency import TurnLatency
from patterd.config.model import AgentConfig
from patterd.graph import AgentParts, Graph
from patterd.metrics import Metrics
from patterd.protocols.audio import pcm16_to_ulaw, silence_ulaw
from patterd.protocols.events import (
    TURN_STAGES,
    CallerAudio,
    CallEvent,
    MarkPlayed,
    MediaEvent,
    StreamStarted,
    StreamStopped,
    TranscriptLine,
)
from patterd.providers.kinds import Carrier, LLMChunk, Message, TextDelta, ToolSchema, Transcript
from patterd.providers.offline_vad import OfflineVAD, OfflineVADOptions, OfflineVADStream

TIMEOUT = 5.0
START = 1000.0  # the manual clock's first reading, seconds
LOUD = pcm16_to_ulaw(
    b"".join(
        int(8000 * math.sin(2 * math.pi * 440 * i / 8000)).to_bytes(2, "little", signed=True)
        for i in range(160)
    )
)
QUIET = silence_ulaw(20)
WRITE_WAIT_MS = 3.0  # the fake carrier socket's wait after each write
STAGE_NAMES = [stage for _, stage in TURN_STAGES]
REPLY = "Hello there, how can I help you today?"


class ManualClock:
    """A clock that moves only when the test (or a fake standing for real work) moves it."""

    def __init__(self) -> None:
        self.t = START

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.t)

    def advance(self, ms: float) -> None:
        self.t += ms / 1000


# ------------------------------------------------------------------ the carrier side


class FakeLeg:
    """A carrier media leg: the test feeds caller frames; agent audio and marks are recorded when sent."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.inbox: asyncio.Queue[MediaEvent] = asyncio.Queue()
        self.sent: list[tuple[float, int]] = []  # (clock as the frame is handed to the socket, bytes)

    async def events(self) -> AsyncIterator[MediaEvent]:
        while True:
            event = await self.inbox.get()
            yield event
            if isinstance(event, StreamStopped):
                return

    async def send_audio(self, ulaw: bytes) -> None:
        self.sent.append((self.clock.monotonic(), len(ulaw)))
        # Waiting for the socket after the write (or for the loop to resume us) is not the caller's wait.
        self.clock.advance(WRITE_WAIT_MS)

    async def send_mark(self, name: str) -> None:
        self.inbox.put_nowait(MarkPlayed(name))  # played at once: the test's caller has a fast ear

    async def clear(self) -> None:
        pass

    async def close(self) -> None:
        pass


# ------------------------------------------------------------------ providers that take known times


class CountingVAD:
    """vad.offline (energy detector) that counts frames, and lets the endpointing timer's wait pass.

    The pipeline's endpointing timer sleeps in real time; on this clock that wait is `endpointing_ms`
    from the VAD's speech end, so the clock moves by it there.
    """

    def __init__(self, clock: ManualClock, endpointing_ms: float) -> None:
        self.clock = clock
        self.endpointing_ms = endpointing_ms
        self.processed = 0
        self.changed = asyncio.Event()
        self._vad = OfflineVAD(OfflineVADOptions(detector="energy", min_speech_ms=60, min_silence_ms=100))

    def stream(self) -> CountingVAD:
        self._stream: OfflineVADStream = self._vad.stream()
        return self

    def process(self, ulaw: bytes) -> Literal["speech_start", "speech_end"] | None:
        change = self._stream.process(ulaw)
        if change == "speech_end":
            self.clock.advance(self.endpointing_ms)
        self.processed += 1
        self.changed.set()
        return change

    @property
    def speaking(self) -> bool:
        return self._stream.speaking

    @property
    def voiced(self) -> bool:
        return self._stream.voiced

    async def wait_processed(self, n: int) -> None:
        async with asyncio.timeout(TIMEOUT):
            while self.processed < n:
                self.changed.clear()
                await self.changed.wait()


class TimedSTTStream:
    """Hears one utterance; finalizes on flush after `final_ms`, or itself after `own_end_frames` quiet frames."""

    def __init__(self, stt: TimedSTT) -> None:
        self.stt = stt
        self.out: asyncio.Queue[Transcript] = asyncio.Queue()
        self.audio_ms = 0.0
        self.quiet = 0
        self.heard = False

    def push_audio(self, ulaw: bytes) -> None:
        self.audio_ms += len(ulaw) / 8
        if ulaw == LOUD:
            self.heard, self.quiet = True, 0
            return
        self.quiet += 1
        if self.heard and self.stt.own_end_frames and self.quiet == self.stt.own_end_frames:
            self._final(end_of_utterance=True)  # decided on the frame just pushed

    def _final(self, *, end_of_utterance: bool = False) -> None:
        self.stt.clock.advance(self.stt.final_ms)  # decoding the utterance
        self.heard = False
        self.out.put_nowait(
            Transcript("what time do you open", True, end_of_utterance, audio_ms=self.audio_ms)
        )

    async def flush(self) -> None:
        self.stt.flushes += 1
        if self.heard:
            self._final()

    async def __aiter__(self) -> AsyncIterator[Transcript]:
        while True:
            yield await self.out.get()


@dataclass
class TimedSTT:
    clock: ManualClock
    final_ms: float
    own_end_frames: int = 0
    flushes: int = 0
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    @contextlib.asynccontextmanager
    async def stream(self) -> AsyncIterator[TimedSTTStream]:
        self.opened.set()
        yield TimedSTTStream(self)


@dataclass
class TimedLLM:
    clock: ManualClock
    ttft_ms: float
    rest_ms: float = 0.0
    name: str = "timed"

    async def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSchema]
    ) -> AsyncIterator[LLMChunk]:
        self.clock.advance(self.ttft_ms)
        yield TextDelta(REPLY[:12])
        # The rest of the sentence comes later and speech waits for it: a gap between stages.
        self.clock.advance(self.rest_ms)
        yield TextDelta(REPLY[12:])


@dataclass
class TimedTTS:
    clock: ManualClock
    ttfb_ms: float

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self.clock.advance(self.ttfb_ms)
        yield b"\x2a" * 480  # 60 ms of agent audio


# ------------------------------------------------------------------ the call


@dataclass
class Rig:
    clock: ManualClock
    leg: FakeLeg
    vad: CountingVAD
    stt: TimedSTT
    events: list[CallEvent]
    changed: asyncio.Event
    fed: int = 0

    async def feed(self, frame: bytes, n: int) -> float:
        """Send `n` caller frames, each arriving 20 ms after the last; returns the last arrival time."""
        for _ in range(n):
            self.clock.advance(20)
            self.leg.inbox.put_nowait(CallerAudio(frame))
            self.fed += 1
            await self.vad.wait_processed(self.fed)  # stamped and heard before the clock moves on
        return self.clock.monotonic()

    async def wait_line(self, role: str) -> TranscriptLine:
        async with asyncio.timeout(TIMEOUT):
            while True:
                lines = [e for e in self.events if isinstance(e, TranscriptLine) and e.role == role]
                if lines:
                    return lines[0]
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def call(
    *,
    endpointing_ms: float,
    stt_final_ms: float,
    own_end_frames: int = 0,
    llm_ms: float,
    tts_ms: float,
    gap_ms: float,
    leg_type: type[FakeLeg] = FakeLeg,
) -> AsyncIterator[Rig]:
    clock = ManualClock()
    vad = CountingVAD(clock, endpointing_ms)
    stt = TimedSTT(clock, stt_final_ms, own_end_frames)
    # The real endpointing timer: short in real time (its fake-time length is CountingVAD's job),
    # or long enough never to fire when the STT is to end the turn itself.
    options = PipelineOptions(
        endpointing_ms=30 if not own_end_frames else 10_000, flush_grace_ms=2000, min_speech_ms=60
    )
    engine = PipelineEngine(
        stt, TimedLLM(clock, llm_ms, gap_ms), TimedTTS(clock, tts_ms), vad, options=options
    )
    config = AgentConfig.model_validate({"name": "desk"}, context={"pipeline_checked": True})
    agent = AgentRuntime(AgentParts(config), cast(Any, engine))
    events: list[CallEvent] = []
    changed = asyncio.Event()

    def emit(event: CallEvent) -> None:
        events.append(event)
        changed.set()

    spec = CallSpec("call-1", "inbound", "local", "", "+15550001111", "+15550002222")
    session = CallSession(spec, cast(Graph, None), agent, cast(Carrier, None), emit=emit, clock=clock)
    leg = leg_type(clock)
    leg.inbox.put_nowait(StreamStarted("s1"))
    task = asyncio.create_task(session.run(leg))
    try:
        async with asyncio.timeout(TIMEOUT):
            await stt.opened.wait()
        yield Rig(clock, leg, vad, stt, events, changed)
    finally:
        leg.inbox.put_nowait(StreamStopped("test over"))
        async with asyncio.timeout(TIMEOUT):
            await task


def stage_sum(line: TranscriptLine) -> float:
    keys = ("endpointing_ms", "stt_ms", "llm_ttft_ms", "tts_ttfb_ms", "engine_ms", "transport_ms")
    total: float = sum(v for k in keys if (v := getattr(line, k)) is not None)
    return total


# ------------------------------------------------------------------ tests


async def test_pipeline_turn_runs_from_the_last_voiced_frame_to_the_first_frame_on_the_socket() -> None:
    async with call(endpointing_ms=50, stt_final_ms=40, llm_ms=150, tts_ms=30, gap_ms=5) as rig:
        await rig.feed(QUIET, 3)
        last_voiced = await rig.feed(LOUD, 25)  # 500 ms of speech
        await rig.feed(QUIET, 5)  # vad.offline's 100 ms silence window: speech ends on the 5th
        line = await rig.wait_line("assistant")
        user = await rig.wait_line("user")
        first_sent = rig.leg.sent[0][0]
    assert rig.stt.flushes == 1
    assert user.text == "what time do you open" and user.stt_ms == 40.0
    assert line.text == REPLY
    assert line.endpointing_ms == 150.0  # 100 ms VAD silence window + 50 ms endpointing timer
    assert line.stt_ms == 40.0
    assert line.llm_ttft_ms == 150.0
    assert line.tts_ttfb_ms == 30.0
    assert line.transport_ms == 5.0  # the rest: the first sentence waited 5 ms for its end
    assert line.engine_ms is None
    assert line.latency_ms == 375.0 == round((first_sent - last_voiced) * 1000, 1)
    assert stage_sum(line) == pytest.approx(line.latency_ms, abs=0.05)


async def test_an_stt_that_ends_the_turn_itself_is_timed_by_the_audio_it_ended_on() -> None:
    # The STT closes the utterance after 8 quiet frames (160 ms), before the pipeline's own timer.
    async with call(
        endpointing_ms=0, stt_final_ms=25, own_end_frames=8, llm_ms=120, tts_ms=10, gap_ms=1
    ) as rig:
        last_voiced = await rig.feed(LOUD, 20)
        await rig.feed(QUIET, 8)
        line = await rig.wait_line("assistant")
        first_sent = rig.leg.sent[0][0]
    assert rig.stt.flushes == 0
    assert line.endpointing_ms == 160.0  # last voiced frame → arrival of the frame the STT ended on
    assert line.stt_ms == 25.0  # that arrival → the final transcript
    assert (line.llm_ttft_ms, line.tts_ttfb_ms, line.transport_ms) == (120.0, 10.0, 1.0)
    assert line.latency_ms == 316.0 == round((first_sent - last_voiced) * 1000, 1)
    assert stage_sum(line) == pytest.approx(line.latency_ms, abs=0.05)


async def test_speech_that_resumes_restarts_the_turn_from_its_new_last_voiced_frame() -> None:
    async with call(endpointing_ms=50, stt_final_ms=40, llm_ms=100, tts_ms=20, gap_ms=2) as rig:
        await rig.feed(LOUD, 10)
        await rig.feed(QUIET, 3)  # a pause shorter than the VAD's silence window
        last_voiced = await rig.feed(LOUD, 10)
        await rig.feed(QUIET, 5)
        line = await rig.wait_line("assistant")
    assert line.endpointing_ms == 150.0
    assert line.latency_ms == 150.0 + 40.0 + 100.0 + 20.0 + 2.0
    assert line.latency_ms == round((rig.leg.sent[0][0] - last_voiced) * 1000, 1)


def test_turn_latency_transport_is_the_remainder_of_the_measured_stages() -> None:
    clock = ManualClock()
    turns = TurnLatency(clock)
    line = TranscriptLine("c", clock.now(), role="assistant", text="hi", endpointing_ms=300.04, stt_ms=20.0)
    assert turns.complete(line) is line  # nothing measured yet
    turns.start(START - 0.1)  # the last voiced frame arrived 100 ms ago
    clock.advance(300)
    turns.sent()
    clock.advance(500)
    turns.sent()  # later frames do not move the first one
    done = turns.complete(line)
    assert done.latency_ms == 400.0 and done.transport_ms == 80.0
    assert turns.complete(line) is line  # one measurement, one line
    turns.start()
    clock.advance(10)
    turns.sent()
    turns.start()  # a new turn before the last answer's line: that measurement is dropped
    assert turns.complete(line) is line
    user = TranscriptLine("c", clock.now(), role="user", text="hey")
    clock.advance(5)
    turns.sent()
    assert turns.complete(user) is user  # only assistant lines take a turn's latency


def test_metrics_histogram_every_stage_and_the_stages_sum_to_the_turns() -> None:
    metrics = Metrics("test")
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    pipeline = TranscriptLine(
        "c1", ts, role="assistant", text="a", latency_ms=700.0, endpointing_ms=600.0, stt_ms=20.0,
        llm_ttft_ms=50.0, tts_ttfb_ms=25.0, transport_ms=5.0,
    )  # fmt: skip
    realtime = TranscriptLine(
        "c2", ts, role="assistant", text="b", latency_ms=400.0, engine_ms=390.0, transport_ms=10.0
    )
    greeting = TranscriptLine("c2", ts, role="assistant", text="hello")  # no caller turn: not a turn
    for line in (pipeline, realtime, greeting):
        metrics.observe(line)
    text = metrics.render().decode()
    value = {}
    for row in text.splitlines():
        if row.startswith(("patterd_turn_stage_seconds_", "patterd_turn_latency_seconds_")):
            name, number = row.rsplit(" ", 1)
            value[name] = float(number)
    counts = {stage: value[f'patterd_turn_stage_seconds_count{{stage="{stage}"}}'] for stage in STAGE_NAMES}
    assert counts == {"endpointing": 1, "stt": 1, "llm": 1, "tts": 1, "engine": 1, "transport": 2}
    stage_sum = sum(value[f'patterd_turn_stage_seconds_sum{{stage="{stage}"}}'] for stage in STAGE_NAMES)
    assert value["patterd_turn_latency_seconds_count"] == 2
    assert stage_sum == pytest.approx(value["patterd_turn_latency_seconds_sum"]) == pytest.approx(1.1)
