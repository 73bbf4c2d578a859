"""A media leg that sends agent audio at real-time pace, for carriers whose wire has no clear.

Why: a carrier that buffers whatever we send and offers no "drop your buffer" message (Vonage's
websocket) would keep playing a whole reply after a barge-in if we sent it as fast as the engine
makes it. `PacedLeg` wraps a `MediaLeg` (built with `emulate_marks=True`) and holds agent audio in its own
queue: a pacer task hands the inner leg one 20 ms frame at a time, each `lead_secs` before it is due
to play, so the carrier never holds more than about `lead_secs` + one frame. `clear()` drops what
is still queued here: the caller stops hearing the agent within that lead (two frames by default).
Marks travel in the queue with the audio, so an emulated mark is timed from when its audio actually
left; a clear fires the queued marks at once, as the inner leg does for its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

import structlog

from patterd.protocols.audio import FRAME_BYTES, ULAW_SILENCE, FrameSplitter
from patterd.protocols.events import MediaEvent
from patterd.providers.media_leg import MediaLeg

log = structlog.get_logger("patterd.media")

FRAME_SECS = 0.020
DEFAULT_LEAD_SECS = 0.040


class PacedLeg:
    """A `kinds.CarrierLeg`: `inner` fed one μ-law frame per 20 ms of play-out, `lead_secs` ahead."""

    def __init__(self, inner: MediaLeg, *, lead_secs: float = DEFAULT_LEAD_SECS) -> None:
        self.inner = inner
        self.lead_secs = lead_secs
        self._loop = asyncio.get_running_loop()
        self._splitter = FrameSplitter(FRAME_BYTES)
        self._queue: deque[bytes | str] = deque()  # bytes: one frame of audio; str: a mark's name
        self._wake = asyncio.Event()
        self._next_play: float | None = None  # loop time the next frame starts playing; None: idle
        self._closed = False
        self._pacer = asyncio.ensure_future(self._pace())

    def events(self) -> AsyncIterator[MediaEvent]:
        return self.inner.events()

    @property
    def queued_frames(self) -> int:
        """Frames waiting here (not yet sent to the carrier)."""
        return sum(1 for item in self._queue if isinstance(item, bytes))

    async def send_audio(self, ulaw: bytes) -> None:
        """Queue agent audio; whole 20 ms frames go out at play-out pace, a partial one waits."""
        frames = self._splitter.push(ulaw)
        if frames:
            self._queue.extend(frames)
            self._wake.set()

    async def send_mark(self, name: str) -> None:
        """Queue the partial frame (padded: the wire takes whole frames only), then the mark."""
        self._queue.extend(self._splitter.flush(pad=ULAW_SILENCE))
        self._queue.append(name)
        self._wake.set()

    async def clear(self) -> None:
        """Drop the audio not sent yet; its marks fire now (what the inner leg does for its own)."""
        marks = [item for item in self._queue if isinstance(item, str)]
        self._queue.clear()
        self._splitter = FrameSplitter(FRAME_BYTES)
        self._next_play = None
        for name in marks:
            await self.inner.send_mark(name)
        await self.inner.clear()
        self._wake.set()

    async def close(self) -> None:
        self._closed = True
        self._pacer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pacer
        await self.inner.close()

    async def _pace(self) -> None:
        try:
            while not self._closed:
                if not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                item = self._queue[0]
                if isinstance(item, str):
                    self._queue.popleft()
                    await self.inner.send_mark(item)
                    continue
                now = self._loop.time()
                if self._next_play is None or self._next_play < now:
                    self._next_play = now  # nothing left playing: this frame plays at once
                wait = self._next_play - self.lead_secs - now
                if wait > 0:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait)
                    continue  # re-check: a clear may have emptied the queue meanwhile
                self._queue.popleft()
                self._next_play += FRAME_SECS
                await self.inner.send_audio(item)
        except asyncio.CancelledError:
            raise
        except Exception:  # a pacer bug must not leave the call silent without a trace
            log.exception("paced_leg_failed")
