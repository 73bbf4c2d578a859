"""Local call recording: a CarrierLeg wrapper that feeds both directions of a call to a stereo timeline.

It sits at the leg boundary, so it works the same on every carrier: caller audio is what the leg's
events() yields, agent audio is what the session hands to send_audio, a clear is a barge-in.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog

from patterd.calls.recording_timeline import LAG_SECS, RecordingSink, StereoTimeline
from patterd.clock import Clock
from patterd.protocols.events import CallerAudio, MediaEvent
from patterd.providers.kinds import CarrierLeg

log = structlog.get_logger("patterd.recording")


class RecordingLeg:
    """A CarrierLeg that records what passes through it (into the record's `recording.wav`)."""

    def __init__(self, leg: CarrierLeg, timeline: StereoTimeline) -> None:
        self.leg = leg
        self.timeline = timeline
        self._ticker: asyncio.TimerHandle | None = None
        self._schedule()
        # The leg is read from now on, not from when the session starts reading (after its engine
        # connected): caller frames are stamped when they arrive, and the session gets them in order.
        self._events: asyncio.Queue[MediaEvent | Exception | None] = asyncio.Queue()
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="recording-reader")

    def __getattr__(self, name: str) -> Any:
        """Whatever else the leg offers (the browser phone's send_transcript) passes through unchanged."""
        if name == "leg":  # not set yet (a half-made object): fail instead of recursing
            raise AttributeError(name)
        return getattr(self.leg, name)

    async def events(self) -> AsyncIterator[MediaEvent]:
        while True:
            item = await self._events.get()
            if item is None:
                return
            if isinstance(item, Exception):
                raise item
            yield item

    async def _read(self) -> None:
        try:
            async for event in self.leg.events():
                if type(event) is CallerAudio:
                    self._guard(self.timeline.caller, event.payload)
                self._events.put_nowait(event)
        except Exception as exc:  # the leg's failure is the session's to see, as without recording
            self._events.put_nowait(exc)
        finally:
            self._events.put_nowait(None)

    async def send_audio(self, ulaw: bytes) -> None:
        self._guard(self.timeline.agent_audio, ulaw)
        await self.leg.send_audio(ulaw)

    async def send_mark(self, name: str) -> None:
        await self.leg.send_mark(name)

    async def clear(self) -> None:
        self._guard(lambda _: self.timeline.clear(), b"")
        await self.leg.clear()

    async def close(self) -> None:
        self.finish()
        await self.leg.close()

    def finish(self) -> None:
        """Stop recording: write what was heard and close the file (idempotent)."""
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        self._reader.cancel()
        self._guard(lambda _: self.timeline.close(), b"")

    def _schedule(self) -> None:
        self._ticker = asyncio.get_running_loop().call_later(LAG_SECS, self._tick)

    def _tick(self) -> None:
        if self.timeline.closed:
            return
        self._guard(lambda _: self.timeline.tick(), b"")
        self._schedule()

    def _guard(self, step: Callable[[bytes], None], data: bytes) -> None:
        """A recording that fails (disk full) stops recording; the call goes on."""
        if self.timeline.closed:
            return
        try:
            step(data)
        except OSError as exc:
            log.warning("recording stopped", error=str(exc), path=str(self.timeline.out.path))
            self.timeline.closed = True
            self.timeline.out.close()


def record_leg(leg: CarrierLeg, out: RecordingSink | None, clock: Clock) -> CarrierLeg:
    """`leg` wrapped to record into `out` from now on; `leg` itself when there is nowhere to record."""
    if out is None:
        return leg
    return RecordingLeg(leg, StereoTimeline(out, clock, clock.monotonic()))


def finish_recording(leg: CarrierLeg) -> None:
    """Close the recording of a leg `record_leg` wrapped (nothing for any other leg)."""
    if isinstance(leg, RecordingLeg):
        leg.finish()
