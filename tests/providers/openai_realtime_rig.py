"""Rig for the OpenAI Realtime engine tests: an in-test call (ear, tools, events), options, a running session."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from patterd.clock import SYSTEM_CLOCK, Clock
from patterd.protocols.audio import FRAME_BYTES, read_wav_ulaw8k, silence_ulaw
from patterd.protocols.events import CallEvent, TranscriptLine
from patterd.providers.kinds import EngineEvent, ToolSchema, UserTurnEnded
from patterd.providers.openai_realtime import SPEC, OpenAIRealtimeOptions, RealtimeSession
from patterd.providers.spec import BuildContext
from tests.fakes.openai_realtime import FakeRealtimeServer

TIMEOUT = 10.0


class Ear:
    """The caller's ear: plays at real time (`realtime=True`) or instantly, and remembers what it got."""

    def __init__(self, clock: Clock, changed: asyncio.Event, realtime: bool = False) -> None:
        self.clock = clock
        self.changed = changed
        self.realtime = realtime
        self.chunks: list[tuple[str, float, float]] = []  # segment, start, seconds
        self.bytes_by_segment: dict[str, int] = {}
        self.first_audio_at: float | None = None
        self.interrupted_at: float | None = None
        self.bytes_after_interrupt = 0
        self.finished_segments = 0
        self._end = 0.0

    async def play(self, ulaw: bytes, segment: str = "") -> None:
        now = self.clock.monotonic()
        if self.first_audio_at is None:
            self.first_audio_at = now
        if self.interrupted_at is not None and segment == self.interrupted_segment:
            self.bytes_after_interrupt += len(ulaw)
        self.bytes_by_segment[segment] = self.bytes_by_segment.get(segment, 0) + len(ulaw)
        if self.realtime:
            start = max(now, self._end)
            self._end = start + len(ulaw) / 8000
            self.chunks.append((segment, start, len(ulaw) / 8000))
        self.changed.set()

    interrupted_segment: str | None = None

    async def interrupt(self) -> tuple[str, int] | None:
        now = self.clock.monotonic()
        started = [c for c in self.chunks if c[1] <= now]
        self._end = now
        self.chunks = []
        self.changed.set()
        if not started:
            return None
        segment = started[-1][0]
        heard = sum(min(dur, now - start) for seg, start, dur in started if seg == segment)
        self.interrupted_at = now
        self.interrupted_segment = segment
        return segment, int(heard * 1000)

    async def drained(self) -> None:
        await asyncio.sleep(max(0.0, self._end - self.clock.monotonic()))

    def finish_segment(self) -> None:
        self.finished_segments += 1

    @property
    def speaking(self) -> bool:
        return self.realtime and self.clock.monotonic() < self._end

    def played_ms(self) -> float:
        now = self.clock.monotonic()
        return sum(min(dur, now - start) * 1000 for _, start, dur in self.chunks if start <= now)


class Call:
    """An in-test CallContext: records events, runs scripted tools, notes speech ends."""

    def __init__(
        self,
        *,
        first_message: str | None = "Thanks for calling Acme.",
        tools: Sequence[ToolSchema] = (),
        tool_results: Mapping[str, str] | None = None,
        realtime_ear: bool = False,
    ) -> None:
        self.call_id = "call-1"
        self.agent_name = "receptionist"
        self.instructions = "You are a friendly receptionist."
        self.first_message = first_message
        self.tools = tools
        self.clock: Clock = SYSTEM_CLOCK
        self.changed = asyncio.Event()
        self.audio = Ear(self.clock, self.changed, realtime=realtime_ear)
        self.events: list[CallEvent] = []
        self.tool_calls: list[tuple[str, dict[str, Any]]] = []
        self.tool_results = dict(tool_results or {})
        self.speech_ends: list[float] = []

    async def run_tool(self, name: str, arguments: Mapping[str, Any]) -> str:
        self.tool_calls.append((name, dict(arguments)))
        self.changed.set()
        return self.tool_results.get(name, '{"ok": true}')

    def emit(self, event: EngineEvent) -> None:
        if isinstance(event, UserTurnEnded):
            self.speech_ends.append(self.clock.monotonic() if event.at is None else event.at)
        else:
            self.events.append(event)
        self.changed.set()

    def new_event_fields(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "ts": datetime.now().astimezone()}

    def of(self, kind: type[CallEvent]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def lines(self, role: str) -> list[TranscriptLine]:
        return [e for e in self.of(TranscriptLine) if e.role == role]

    async def until(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


def options(fake: FakeRealtimeServer, **extra: Any) -> OpenAIRealtimeOptions:
    values: dict[str, Any] = {"api_key": "sk-test", "base_url": fake.url, "retry_backoff_secs": 0.01, **extra}
    return OpenAIRealtimeOptions.model_validate(values)


@contextlib.asynccontextmanager
async def running(
    opts: OpenAIRealtimeOptions, call: Call
) -> AsyncIterator[tuple[RealtimeSession, asyncio.Task[None]]]:
    async with SPEC.build(opts, BuildContext()) as engine, engine.session(call) as session:
        task = asyncio.create_task(session.run())
        try:
            yield session, task
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def espoken(tmp_path_factory: pytest.TempPathFactory, text: str = "Where is my order?") -> bytes:
    """`text` spoken by espeak-ng, as 8 kHz μ-law."""
    wav = Path(tmp_path_factory.mktemp("wav")) / "caller.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
    return read_wav_ulaw8k(wav)


async def push_speech(
    session: RealtimeSession, ulaw: bytes, *, realtime: bool = False, silence_ms: int = 800
) -> None:
    """Push the caller's audio in 20 ms frames, then silence so the VAD ends the turn."""
    audio = ulaw + silence_ulaw(silence_ms)
    for i in range(0, len(audio) - FRAME_BYTES + 1, FRAME_BYTES):
        session.push_audio(audio[i : i + FRAME_BYTES])
        # Real time when the test needs it; otherwise just let the sender run.
        await asyncio.sleep(0.02 if realtime else 0)


class SteppedClock:
    """A clock the test moves by hand: caller frames are stamped with exactly known arrival times."""

    def __init__(self) -> None:
        self.t = 500.0

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return datetime.now().astimezone()
