"""Shared rig for the pipeline tests: the caller's ear, the call, scripted STT/TTS/VAD, the fake Chat Completions LLM."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from patterd.calls.pipeline import (
    PipelineEngine,
    PipelineOptions,
    PipelineSession,
)
from patterd.calls.turn_latency import TurnLatency
from patterd.clock import SYSTEM_CLOCK, Clock
from patterd.errors import ProviderError
from patterd.protocols.audio import FRAME_BYTES
from patterd.protocols.events import CallEvent, TranscriptLine
from patterd.providers.kinds import AudioOut, EngineEvent, ToolSchema, Transcript, UserTurnEnded
from patterd.providers.openai_llm import Options, build
from patterd.providers.spec import BuildContext
from tests.fakes.openai_chat import FakeChatServer, Reply

LOUD = b"\x10" * FRAME_BYTES  # a loud μ-law frame: "speech" for the fake VAD and STT
QUIET = b"\xff" * FRAME_BYTES
TONE = b"\x2a"
PLAYOUT_SPEED = 5.0  # the fake caller's ear plays 20 ms of audio in 4 ms
TIMEOUT = 5.0

# ------------------------------------------------------------------ the caller's ear


class FakeAudioOut:
    """Plays queued audio frame by frame in (accelerated) real time; interrupt drops what is left."""

    def __init__(self) -> None:
        self._queue: list[tuple[str, bytes]] = []
        self._current: str | None = None
        self.played: dict[str, float] = {}  # segment → ms played
        self.plays: list[tuple[float, str, int]] = []  # (monotonic, segment, bytes) per play() call
        self.interrupts: list[tuple[float, tuple[str, int] | None]] = []
        self._progress = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.on_play: list[Callable[[], None]] = []  # what a call session does once audio reaches the carrier

    async def __aenter__(self) -> FakeAudioOut:
        self._task = asyncio.get_running_loop().create_task(self._playout())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _playout(self) -> None:
        while True:
            if not self._queue:
                self._current = None
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            segment, data = self._queue[0]
            frame, rest = data[:FRAME_BYTES], data[FRAME_BYTES:]
            if rest:
                self._queue[0] = (segment, rest)
            else:
                self._queue.pop(0)
            self._current = segment
            await asyncio.sleep(len(frame) / 8 / 1000 / PLAYOUT_SPEED)  # pacing the fake's playout
            self.played[segment] = self.played.get(segment, 0.0) + len(frame) / 8
            self._progress.set()
            self._progress.clear()

    async def play(self, ulaw: bytes, segment: str = "") -> None:
        self.plays.append((SYSTEM_CLOCK.monotonic(), segment, len(ulaw)))
        self._queue.append((segment, ulaw))
        self._idle.clear()
        self._wake.set()
        for callback in self.on_play:
            callback()

    async def interrupt(self) -> tuple[str, int] | None:
        heard: tuple[str, int] | None = None
        if self.speaking:
            segment = self._current or self._queue[0][0]
            heard = (segment, int(self.played.get(segment, 0.0)))
        self._queue.clear()
        self.interrupts.append((SYSTEM_CLOCK.monotonic(), heard))
        return heard

    async def drained(self) -> None:
        await self._idle.wait()

    def finish_segment(self) -> None:
        pass  # the pipeline waits for drained() at the end of each reply instead

    @property
    def speaking(self) -> bool:
        return bool(self._queue) or (not self._idle.is_set() and self._current is not None)

    async def wait_played(self, segment: str, ms: float) -> None:
        async with asyncio.timeout(TIMEOUT):
            while self.played.get(segment, 0.0) < ms:
                await self._progress.wait()


# ------------------------------------------------------------------ the call


@dataclass
class FakeCall:
    """A CallContext: records events and tool calls, answers tools from a table."""

    audio: AudioOut
    instructions: str = "You are a helpful receptionist."
    first_message: str | None = None
    tools: Sequence[ToolSchema] = ()
    tool_results: dict[str, str] = field(default_factory=dict)
    call_id: str = "call-1"
    agent_name: str = "support"
    clock: Clock = SYSTEM_CLOCK
    events: list[CallEvent] = field(default_factory=list)
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    speech_ends: list[float] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        # The turn timer the call session keeps: latency_ms and transport_ms come from it, as in a real call.
        self.turns = TurnLatency(self.clock)
        if isinstance(self.audio, FakeAudioOut):
            self.audio.on_play.append(self.turns.sent)

    async def run_tool(self, name: str, arguments: Mapping[str, Any]) -> str:
        self.tool_calls.append((name, dict(arguments)))
        return self.tool_results.get(name, '{"ok": true}')

    def emit(self, event: EngineEvent) -> None:
        if isinstance(event, UserTurnEnded):
            self.speech_ends.append(self.clock.monotonic() if event.at is None else event.at)
            self.turns.start(event.at)
            return
        if isinstance(event, TranscriptLine):
            event = self.turns.complete(event)
        self.events.append(event)
        self._changed.set()

    def new_event_fields(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "ts": self.clock.now()}

    def of(self, kind: type[CallEvent]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def lines(self, role: str) -> list[TranscriptLine]:
        return [e for e in self.of(TranscriptLine) if e.role == role]

    async def wait(self, predicate: Callable[[], Any]) -> Any:
        async with asyncio.timeout(TIMEOUT):
            while not (result := predicate()):
                self._changed.clear()
                await self._changed.wait()
        return result

    async def wait_lines(self, role: str, n: int) -> list[TranscriptLine]:
        return await self.wait(lambda: len(self.lines(role)) >= n and self.lines(role))  # type: ignore[no-any-return]


# ------------------------------------------------------------------ scripted STT, TTS, VAD


def loud(frame: bytes) -> bool:
    return frame[0] != 0xFF


class FakeVADStream:
    """Energy VAD: a loud frame starts speech; `hangover` quiet frames end it."""

    def __init__(self, hangover: int = 3) -> None:
        self.hangover = hangover
        self._speaking = False
        self._quiet = 0
        self.voiced = False

    def process(self, ulaw: bytes) -> Literal["speech_start", "speech_end"] | None:
        self.voiced = loud(ulaw)
        if loud(ulaw):
            self._quiet = 0
            if not self._speaking:
                self._speaking = True
                return "speech_start"
            return None
        if self._speaking:
            self._quiet += 1
            if self._quiet >= self.hangover:
                self._speaking = False
                return "speech_end"
        return None

    @property
    def speaking(self) -> bool:
        return self._speaking


class FakeVAD:
    def stream(self) -> FakeVADStream:
        return FakeVADStream()


class FakeSTTStream:
    """Recognizes the next scripted utterance from loud frames: an interim after 8, the final on flush (or own endpoint)."""

    def __init__(self, stt: FakeSTT) -> None:
        self.stt = stt
        self._out: asyncio.Queue[Transcript | BaseException] = asyncio.Queue()
        self._loud = 0
        self._quiet = 0
        self._interim_sent = False

    def push_audio(self, ulaw: bytes) -> None:
        if loud(ulaw):
            self._loud += 1
            self._quiet = 0
            if self._loud >= 8 and not self._interim_sent and self.stt.script:
                self._interim_sent = True
                self._out.put_nowait(Transcript(self.stt.script[0].split()[0], is_final=False))
        elif self._loud:
            self._quiet += 1
            if self.stt.own_endpoint_frames and self._quiet >= self.stt.own_endpoint_frames:
                self._final(end_of_utterance=True)

    def _final(self, *, end_of_utterance: bool = False) -> None:
        text = self.stt.script.pop(0) if self._loud >= 8 and self.stt.script else ""
        self._loud = self._quiet = 0
        self._interim_sent = False
        self._out.put_nowait(Transcript(text, is_final=True, end_of_utterance=end_of_utterance))

    async def flush(self) -> None:
        self.stt.flushes += 1
        self._final()

    def fail(self, exc: BaseException) -> None:
        self._out.put_nowait(exc)

    def inject(self, transcript: Transcript) -> None:
        """Deliver a transcript the audio did not produce (a recognizer hearing what the VAD missed)."""
        self._out.put_nowait(transcript)

    async def __aiter__(self) -> AsyncIterator[Transcript]:
        while True:
            item = await self._out.get()
            if isinstance(item, BaseException):
                raise item
            yield item


class FakeSTT:
    def __init__(self, script: Sequence[str] = (), *, own_endpoint_frames: int = 0) -> None:
        self.script = list(script)
        self.own_endpoint_frames = own_endpoint_frames
        self.flushes = 0
        self.streams: list[FakeSTTStream] = []
        self._opened = asyncio.Event()

    @contextlib.asynccontextmanager
    async def stream(self) -> AsyncIterator[FakeSTTStream]:
        stream = FakeSTTStream(self)
        self.streams.append(stream)
        self._opened.set()
        yield stream

    async def wait_streams(self, n: int) -> list[FakeSTTStream]:
        async with asyncio.timeout(TIMEOUT):
            while len(self.streams) < n:
                self._opened.clear()
                await self._opened.wait()
        return self.streams


class FakeTTS:
    """`ms_per_char` of tone per sentence, in 20 ms chunks with a little synthesis time each."""

    def __init__(self, ms_per_char: int = 20, *, fail: Mapping[str, ProviderError] | None = None) -> None:
        self.ms_per_char = ms_per_char
        self.fail = dict(fail or {})
        self.calls: list[tuple[float, str]] = []
        self.closed_early: list[str] = []
        self.open = 0

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self.calls.append((SYSTEM_CLOCK.monotonic(), text))
        if text in self.fail:
            raise self.fail.pop(text)
        total = len(text) * self.ms_per_char * 8
        sent = 0
        self.open += 1
        try:
            while sent < total:
                await asyncio.sleep(0.001)  # synthesis time, faster than playout
                n = min(FRAME_BYTES, total - sent)
                sent += n
                yield TONE * n
        finally:
            self.open -= 1
            if sent < total:
                self.closed_early.append(text)


# ------------------------------------------------------------------ the rig


@dataclass
class Rig:
    server: FakeChatServer
    call: FakeCall
    session: PipelineSession
    stt: FakeSTT
    tts: FakeTTS
    task: asyncio.Task[None]
    audio: FakeAudioOut

    def speak(self, frames: int, then_quiet: int = 6) -> None:
        for _ in range(frames):
            self.session.push_audio(LOUD)
        for _ in range(then_quiet):
            self.session.push_audio(QUIET)

    async def request_messages(self, n: int) -> list[dict[str, Any]]:
        received = await self.server.wait_requests(n)
        return received[n - 1].body["messages"]  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def rig(
    replies: Sequence[Reply],
    *,
    script: Sequence[str] = (),
    first_message: str | None = None,
    tools: Sequence[ToolSchema] = (),
    tool_results: Mapping[str, str] | None = None,
    tts: FakeTTS | None = None,
    stt: FakeSTT | None = None,
    vad: bool = True,
    options: PipelineOptions | None = None,
) -> AsyncIterator[Rig]:
    opts = options or PipelineOptions(
        endpointing_ms=80, flush_grace_ms=300, retry_backoff_ms=10, stt_name="fake", tts_name="fake"
    )
    stt = stt or FakeSTT(script)
    tts = tts or FakeTTS()
    async with (
        FakeChatServer(replies) as server,
        build(Options(api_key="sk-test", base_url=server.base_url), BuildContext()) as llm,
        FakeAudioOut() as audio,
    ):
        call = FakeCall(
            audio, first_message=first_message, tools=tools, tool_results=dict(tool_results or {})
        )
        engine = PipelineEngine(stt, llm, tts, FakeVAD() if vad else None, options=opts)
        async with engine.session(call) as session:
            task = asyncio.get_running_loop().create_task(session.run())
            try:
                yield Rig(server, call, session, stt, tts, task, audio)
            finally:
                if not task.done():  # a test that saw run() fail has consumed its error already
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task


LOOKUP = ToolSchema(
    "lookup_order",
    "Look up an order by id.",
    {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
)
CHECK_STOCK = ToolSchema(
    "check_stock", "Is an item in stock?", {"type": "object", "properties": {"sku": {"type": "string"}}}
)
