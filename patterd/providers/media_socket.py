"""The receiving side of a carrier's media websocket: frame size cap, idle watchdog, dropped-frame accounting.

Every carrier leg reads its frames through a MediaSocket, so the three legs drop, count and log a bad
frame the same way and none of them can hang on a peer that went silent.
"""

from __future__ import annotations

import asyncio

import structlog
from starlette.websockets import WebSocket

from patterd.errors import ProviderConnectionError
from patterd.protocols.frames import MAX_FRAME_CHARS
from patterd.providers.kinds import CallRouter

log = structlog.get_logger("patterd.media")

LOG_FIRST = 3  # dropped frames of a stream logged one by one; after that ...
LOG_EVERY_SECS = 10.0  # ... at most one line per interval, saying how many were dropped meanwhile
RECHECK_SECS = 1.0  # the watchdog looks again this soon when the reader is busy rather than waiting


class MediaSocket:
    """Frames from one carrier media websocket.

    `receive()` returns the next frame no longer than MAX_FRAME_CHARS (longer ones are dropped and
    counted), None once the socket has closed, and raises ProviderConnectionError when no frame at all
    has arrived for `idle_timeout_secs` (carriers send one every 20 ms, silence included). The watchdog
    is one timer per idle period, not a timeout per frame: the hot path only stores a timestamp.
    """

    def __init__(
        self, websocket: WebSocket, carrier: str, router: CallRouter, idle_timeout_secs: float = 0.0
    ) -> None:
        self._receive = websocket.receive
        self.carrier = carrier
        self._router = router
        self.idle_timeout_secs = idle_timeout_secs
        self._loop = asyncio.get_running_loop()
        self.last_frame = self._loop.time()
        self.end_reason = ""  # why receive() returned None: "disconnected" or "closed"
        self.dropped = 0
        self._task: asyncio.Task[object] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._waiting = False
        self._timed_out = False
        self._stopped = False
        self._warnings = 0
        self._suppressed = 0
        self._next_log = 0.0

    async def receive(self) -> str | bytes | None:
        """The next frame (text, or the bytes of a binary message); None once the socket is closed."""
        self._task = asyncio.current_task()
        if self._timer is None and self.idle_timeout_secs > 0 and not self._stopped:
            self._timer = self._loop.call_later(self.idle_timeout_secs, self._check_idle)
        while True:
            self._waiting = True
            try:
                message = await self._receive()
            except RuntimeError:  # receive after the socket was closed from our side
                self._ended("closed")
                return None
            except asyncio.CancelledError:
                task = self._task
                if self._timed_out and task is not None and task.uncancel() == 0:  # our cancel, no one else's
                    self.stop()
                    raise ProviderConnectionError(
                        f"no media frame from {self.carrier} for {self.idle_timeout_secs:g} s "
                        "(server.media_idle_timeout_secs): the stream is dead",
                        provider=self.carrier,
                    ) from None
                raise
            finally:
                self._waiting = False
            self.last_frame = self._loop.time()
            if message["type"] == "websocket.disconnect":
                self._ended("disconnected")
                return None
            frame: str | bytes | None = message.get("text")
            if frame is None:
                frame = message.get("bytes") or b""
            if len(frame) > MAX_FRAME_CHARS:
                self.drop("too_large", f"{len(frame)} characters (limit {MAX_FRAME_CHARS})")
                continue
            return frame

    def drop(self, reason: str, error: str, **fields: object) -> None:
        """Count a frame that was dropped (by carrier and reason) and log it, rate-limited, no traceback."""
        self.dropped += 1
        self._router.count_bad_frame(self.carrier, reason)
        self.warn("media frame dropped", reason=reason, error=error[:200], dropped=self.dropped, **fields)

    def warn(self, event: str, **fields: object) -> None:
        """Log a warning about this stream: the first LOG_FIRST, then one per LOG_EVERY_SECS (with a count)."""
        self._warnings += 1
        now = self._loop.time()
        if self._warnings > LOG_FIRST and now < self._next_log:
            self._suppressed += 1
            return
        log.warning(event, carrier=self.carrier, not_logged=self._suppressed, **fields)
        self._suppressed = 0
        if self._warnings >= LOG_FIRST:
            self._next_log = now + LOG_EVERY_SECS

    def stop(self) -> None:
        """Stop the watchdog (the stream ended or the leg closed)."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _ended(self, reason: str) -> None:
        self.end_reason = reason
        self.stop()

    def _check_idle(self) -> None:
        self._timer = None
        task = self._task
        if self._stopped or task is None or task.done():
            return
        silent = self._loop.time() - self.last_frame
        if silent < self.idle_timeout_secs or not self._waiting:
            again = self.idle_timeout_secs - silent if silent < self.idle_timeout_secs else RECHECK_SECS
            self._timer = self._loop.call_later(max(again, 0.01), self._check_idle)
            return
        self._timed_out = True
        task.cancel()  # receive() turns this cancellation into ProviderConnectionError
