"""One media leg for every carrier: the websocket loop around a carrier's sans-I/O MediaCodec.

A carrier keeps only its wire format, as a `protocols.media_codec.MediaCodec` (receive → events,
media/mark/clear → messages; see that module for the exact shape).

`MediaLeg` does the rest, the same way for every carrier (it is the `kinds.CarrierLeg` the session runs):
- reads frames through `MediaSocket` (size cap, idle watchdog), hands them to the codec, drops and counts a
  frame the codec refuses (`BadFrame`) or fails on (`decoder_error`) without ending the call, logs a codec's
  `Notice` rate-limited, and ends with `StreamStopped` when the peer stops or the socket closes;
- frames agent audio into `frame_bytes` messages (0: send each chunk as it comes), flushing the partial
  frame before a mark (as a short message, or padded with μ-law silence when `pad_marks`);
- marks: sends the codec's mark; when the wire has none (`mark()` is None; build the leg with
  `emulate_marks=True` then) it emulates them, tracking play-out on the leg's clock at 8 kHz real time and yielding `MarkPlayed` when the audio sent before the
  mark has had time to play; `clear()` fires every pending emulated mark at once (what carriers with
  marks do for the marks of cleared audio);
- clear and close (idempotent; sending after the peer left is a no-op: `events()` reports the end).
DTMF, starts and stops are just `MediaEvent`s the codec returns.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import suppress

import structlog
from starlette.websockets import WebSocket

from patterd.protocols.audio import ULAW_SILENCE, FrameSplitter
from patterd.protocols.events import MarkPlayed, MediaEvent, StreamStopped
from patterd.protocols.frames import BadFrame
from patterd.protocols.media_codec import MediaCodec, Notice
from patterd.providers.media_socket import MediaSocket

log = structlog.get_logger("patterd.media")

RATE = 8000  # μ-law bytes per second of play-out


class MediaLeg:
    """One call's media websocket as a `kinds.CarrierLeg`, for any carrier's codec."""

    def __init__(
        self,
        websocket: WebSocket,
        codec: MediaCodec,
        frames: MediaSocket,
        *,
        frame_bytes: int = 160,
        pad_marks: bool = False,
        first_events: Sequence[MediaEvent] = (),
        end_reason: str = "",
        emulate_marks: bool = False,
    ) -> None:
        self.websocket = websocket
        self.codec = codec
        self._frames = frames
        self._frame_bytes = frame_bytes
        self._pad_marks = pad_marks
        self._splitter = FrameSplitter(frame_bytes) if frame_bytes > 0 else None
        self._pending: list[MediaEvent] = list(first_events)
        self._stopped = any(isinstance(e, StreamStopped) for e in first_events)
        self._end_reason = end_reason  # a fixed StreamStopped reason, else the socket's
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._emulated: deque[tuple[float, str]] = deque()  # (play-out deadline, mark name)
        # The wire has no marks (codec.mark() is None): track play-out from the first audio on. Off by
        # default so carriers with marks pay no clock read per frame (also turned on by the first None).
        self._emulate = emulate_marks
        self._played_until = 0.0  # loop time when everything sent so far has played (emulated marks)
        self._reader: asyncio.Task[str | bytes | None] | None = None
        self._wakeup: asyncio.Future[None] | None = None

    # ------------------------------------------------------------ inbound

    async def events(self) -> AsyncIterator[MediaEvent]:
        """Media events until the peer stops the stream or the socket goes away (then StreamStopped)."""
        for event in self._pending:
            yield event
        self._pending = []
        if self._stopped:
            return
        decode = self.codec.receive
        while True:
            if self._emulate or self._reader is not None:  # emulated marks come due while we wait for a frame
                for mark in await self._due_marks():
                    yield mark
                if self._reader is None or not self._reader.done():
                    continue
                frame = self._take_read()
            else:  # the fast path: no task, no timer per frame
                frame = await self._frames.receive()  # raises ProviderConnectionError when silent too long
            if frame is None:
                yield StreamStopped(self._end_reason or self._frames.end_reason)
                return
            try:
                decoded = decode(frame)
            except BadFrame as exc:
                self._frames.drop(exc.reason, str(exc))
                continue
            except Exception as exc:  # a decoder bug must cost one frame, never the call
                self._frames.drop("decoder_error", f"{type(exc).__name__}: {exc}")
                continue
            for item in decoded:
                if isinstance(item, Notice):  # rate-limited: a peer repeating it cannot flood the log
                    self._frames.warn(item.event, **item.fields)
                    continue
                yield item
                if isinstance(item, StreamStopped):
                    self._stopped = True
                    return

    async def _due_marks(self) -> list[MediaEvent]:
        """Wait for the next frame, the next emulated mark's play-out or a new mark; the marks now due."""
        if self._reader is None:
            self._reader = asyncio.ensure_future(self._frames.receive())
        delay = self._emulated[0][0] - self._loop.time() if self._emulated else None
        if delay is None or delay > 0:
            self._wakeup = self._loop.create_future()  # send_mark/clear resolve it
            await asyncio.wait(
                (self._reader, self._wakeup), timeout=delay, return_when=asyncio.FIRST_COMPLETED
            )
            self._wakeup = None
        now = self._loop.time()
        due: list[MediaEvent] = []
        while self._emulated and self._emulated[0][0] <= now:
            due.append(MarkPlayed(self._emulated.popleft()[1]))
        return due

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def _take_read(self) -> str | bytes | None:
        """The frame the background read got (it is done: `_due_marks` waited for it or a mark)."""
        reader = self._reader
        assert reader is not None and reader.done()
        self._reader = None
        if reader.cancelled():  # close() stopped it: the stream is over
            return None
        return reader.result()  # re-raises the watchdog's ProviderConnectionError

    # ------------------------------------------------------------ outbound

    async def _send(self, message: str | bytes) -> None:
        if self._closed:
            return
        try:
            if isinstance(message, str):
                await self.websocket.send({"type": "websocket.send", "text": message})
            else:
                await self.websocket.send({"type": "websocket.send", "bytes": message})
        except (RuntimeError, OSError) as exc:  # peer gone; events() reports the end of the stream
            self._closed = True
            log.debug("media send after close", carrier=self._frames.carrier, error=str(exc))

    def _played(self, size: int) -> None:
        """`size` more bytes are queued for play-out after what was sent before (or from now)."""
        self._played_until = max(self._played_until, self._loop.time()) + size / RATE

    async def send_audio(self, ulaw: bytes) -> None:
        """Queue agent audio; sent as `frame_bytes` messages, a partial frame waits for more audio."""
        splitter = self._splitter
        frames = splitter.push(ulaw) if splitter is not None else [ulaw] if ulaw else []
        if self._emulate:
            self._played(sum(map(len, frames)))
        media = self.codec.media
        for frame in frames:
            await self._send(media(frame))

    async def send_mark(self, name: str) -> None:
        """Send what is left of the audio, then the mark (or emulate it when the wire has none).

        By default the remainder goes out as a short message rather than padded with silence: marks
        come every few hundred ms in the middle of speech, and padding would put gaps in it.
        """
        if self._splitter is not None:
            for rest in self._splitter.flush(pad=ULAW_SILENCE if self._pad_marks else b""):
                if self._emulate:
                    self._played(len(rest))
                await self._send(self.codec.media(rest))
        message = self.codec.mark(name)
        if message is not None:
            await self._send(message)
            return
        self._emulate = True  # (turned on here, the wait for it starts with the next frame)
        self._emulated.append((max(self._played_until, self._loop.time()), name))
        self._wake()

    async def clear(self) -> None:
        """Drop our partial frame and ask the carrier to drop its playback buffer (barge-in)."""
        if self._splitter is not None:
            self._splitter = FrameSplitter(self._frame_bytes)
        now = self._loop.time()
        self._played_until = now
        if self._emulated:  # the cleared audio's marks fire now
            self._emulated = deque((now, name) for _, name in self._emulated)
            self._wake()
        message = self.codec.clear()
        if message is not None:
            await self._send(message)

    async def close(self) -> None:
        """Close the websocket from our side (idempotent)."""
        self._frames.stop()
        if not self._closed:
            self._closed = True
            with suppress(Exception):  # already closed by the peer or the server: nothing left to do
                await self.websocket.close(1000)
        reader = self._reader
        if reader is not None and not reader.done():
            reader.cancel()  # events(), if still iterating, ends with StreamStopped (see _take_read)
