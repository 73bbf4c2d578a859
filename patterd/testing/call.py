"""An in-memory call for engine suites: a CallContext that records events and an ear that records audio."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from patterd.clock import SYSTEM_CLOCK, Clock
from patterd.protocols.events import CallEvent, TranscriptLine
from patterd.providers.kinds import AudioOut, EngineEvent, ToolSchema, UserTurnEnded

E = TypeVar("E", bound=CallEvent)


class Ear:
    """The caller's ear (AudioOut): plays audio at real time by the clock and remembers what came, and when."""

    def __init__(self, changed: asyncio.Event, clock: Clock = SYSTEM_CLOCK) -> None:
        self._changed = changed
        self._clock = clock
        self._chunks: list[
            tuple[str, float, float]
        ] = []  # segment, start, seconds: what is queued or playing
        self._end = 0.0  # when everything queued will have played
        self.bytes_by_segment: dict[str, int] = {}
        self.total_bytes = 0
        self.interrupts = 0
        self.finished_segments = 0  # finish_segment() calls: an engine saying a reply's audio is complete
        self.bytes_after_interrupt: dict[str, int] = {}  # per interrupted segment: audio that still came

    async def play(self, ulaw: bytes, segment: str = "") -> None:
        now = self._clock.monotonic()
        start = max(now, self._end)
        self._end = start + len(ulaw) / 8000
        self._chunks.append((segment, start, len(ulaw) / 8000))
        self.bytes_by_segment[segment] = self.bytes_by_segment.get(segment, 0) + len(ulaw)
        self.total_bytes += len(ulaw)
        if segment in self.bytes_after_interrupt:
            self.bytes_after_interrupt[segment] += len(ulaw)
        self._changed.set()

    async def interrupt(self) -> tuple[str, int] | None:
        now = self._clock.monotonic()
        self.interrupts += 1
        started = [c for c in self._chunks if c[1] <= now]
        self._chunks, self._end = [], now
        self._changed.set()
        if not started:
            return None
        segment = started[-1][0]
        self.bytes_after_interrupt.setdefault(segment, 0)
        heard = sum(min(dur, now - start) for seg, start, dur in started if seg == segment)
        return segment, int(heard * 1000)

    async def drained(self) -> None:
        await asyncio.sleep(max(0.0, self._end - self._clock.monotonic()))

    def finish_segment(self) -> None:
        self.finished_segments += 1

    @property
    def speaking(self) -> bool:
        return self._clock.monotonic() < self._end


class RecordingCall:
    """A CallContext for one engine session: events kept in order, tools answered from a table."""

    def __init__(
        self,
        *,
        instructions: str = "You are a helpful assistant.",
        first_message: str | None = None,
        tools: Sequence[ToolSchema] = (),
        tool_results: Mapping[str, str] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.call_id = "call-testing-1"
        self.agent_name = "suite"
        self.instructions = instructions
        self.first_message = first_message
        self.tools = tools
        self.clock: Clock = clock
        self.changed = asyncio.Event()
        self.ear = Ear(self.changed, clock)  # the same object, with its recording attributes typed
        self.audio: AudioOut = self.ear
        self.events: list[CallEvent] = []
        self.tool_calls: list[tuple[str, dict[str, Any]]] = []
        self.tool_results = dict(tool_results or {})
        self.speech_ends: list[float] = []

    async def run_tool(self, name: str, arguments: Mapping[str, Any]) -> str:
        self.tool_calls.append((name, dict(arguments)))
        self.changed.set()
        return self.tool_results.get(name, '{"ok": true}')

    def emit(self, event: EngineEvent) -> None:
        if isinstance(event, UserTurnEnded):  # the turn-latency clock's start, not a recorded event
            self.speech_ends.append(self.clock.monotonic() if event.at is None else event.at)
        else:
            self.events.append(event)
        self.changed.set()

    def new_event_fields(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "ts": datetime.now().astimezone()}

    def of(self, kind: type[E]) -> list[E]:
        """The events of one type, in order."""
        return [e for e in self.events if isinstance(e, kind)]

    def lines(self, role: str) -> list[TranscriptLine]:
        """Transcript lines said by `role` ("user" or "assistant")."""
        return [e for e in self.of(TranscriptLine) if e.role == role]

    async def until(
        self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
    ) -> None:
        """Wait until `predicate()` holds, re-checked on every event or audio chunk."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None
