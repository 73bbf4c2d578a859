"""Agent audio toward the caller: what is queued on the carrier, its marks, drain and barge-in accounting."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable

import structlog

from patterd.calls.turn_latency import TurnLatency
from patterd.clock import Clock
from patterd.protocols.audio import FRAME_BYTES, FRAME_MS
from patterd.providers.kinds import CarrierLeg

log = structlog.get_logger("patterd.playout")

MARK_EVERY_MS = 200.0  # one mark per ~200 ms of audio: enough precision for truncation, cheap on the wire
DRAIN_SLACK_SECS = 2.0  # how long past the estimated end of playout we wait for the carrier's last mark
GOODBYE_QUIET_SECS = 0.4  # after end_call, wait this long with no new agent audio before hanging up
GOODBYE_WAIT_SECS = 3.0  # how long a goodbye (or voicemail message) still to come may take to start playing


class Playout:
    """One call's AudioOut: sends agent audio on the leg and knows when it will have been heard.

    The carrier plays at real time, so the end of playout is estimated from the audio's length and
    confirmed by marks the carrier echoes once everything before them has played.
    """

    def __init__(
        self,
        clock: Clock,
        turn: TurnLatency,
        first_audio: Callable[[float], None],
        *,
        goodbye_quiet_secs: float = GOODBYE_QUIET_SECS,
        goodbye_wait_secs: float = GOODBYE_WAIT_SECS,
    ) -> None:
        self._clock = clock
        self._turn = turn  # caller's last voiced frame → first agent frame on the socket
        self._first_audio = first_audio  # told the monotonic time of the call's first agent audio
        self.goodbye_quiet_secs = goodbye_quiet_secs
        self.goodbye_wait_secs = goodbye_wait_secs
        self._leg: CarrierLeg | None = None
        self._stopped = False
        self.frames_out = 0
        self._first_audio_sent = False
        self._play_end = 0.0  # when the queued agent audio will have finished playing
        self._segment = ""
        self._segment_start = 0.0
        self._segment_ms = 0.0
        self._unmarked_ms = 0.0
        self._marks: dict[str, float] = {}
        self._mark_seq = itertools.count(1)
        self._marks_done = asyncio.Event()
        self._marks_done.set()
        self._last_play_mono = 0.0
        self._audio_played = asyncio.Event()  # set by every play(); lets a goodbye wait for its first audio
        # A finished segment's flush, due in its partial frame's slot (finish_segment).
        self._finishing: asyncio.TimerHandle | None = None
        self._flush: asyncio.Task[None] | None = None  # that flush once due (kept: a task must be referenced)

    def attach(self, leg: CarrierLeg) -> None:
        """Audio goes to this media leg from now on."""
        self._leg = leg

    def stop(self) -> None:
        """The call has ended: later audio is dropped."""
        self._stopped = True
        self._cancel_finish()

    async def play(self, ulaw: bytes, segment: str = "") -> None:
        """Send agent audio to the carrier and account for when it will have played."""
        leg = self._leg
        if leg is None or self._stopped:
            return
        if self._finishing is not None:  # more audio after all: the partial frame goes out with it
            self._cancel_finish()
        now = self._clock.monotonic()
        ms = len(ulaw) / 8.0
        start = max(now, self._play_end)
        if segment != self._segment or self._segment_ms == 0:
            self._segment = segment
            self._segment_start = start
            self._segment_ms = 0.0
        elif now > self._play_end:
            # A pause inside the segment: shift its start so elapsed time = heard audio.
            self._segment_start += now - self._play_end
        self._segment_ms += ms
        self._play_end = start + ms / 1000.0
        self._last_play_mono = now
        self._audio_played.set()
        if not self._first_audio_sent:
            self._first_audio_sent = True
            self._first_audio(now)
        self.frames_out += (len(ulaw) + FRAME_BYTES - 1) // FRAME_BYTES
        # Stopped as the frame goes to the socket's writer (the write itself does not wait): stamping after
        # the await would add however long this task then waits for the loop, which the caller never hears.
        announce = self._turn.sent()
        tell = getattr(leg, "announce_turn", None) if announce is not None else None
        if tell is not None and announce is not None:  # the caller is asked what it heard, before this frame
            await tell(announce.turn, announce.frame, announce.latency_ms)
        await leg.send_audio(ulaw)
        self._unmarked_ms += ms
        if self._unmarked_ms >= MARK_EVERY_MS:
            await self._send_mark()

    def finish_segment(self) -> None:
        """The segment's audio is complete: the leg's partial frame goes out now rather than with the next reply.

        A carrier leg cuts audio into 20 ms frames and keeps the remainder for the next audio; the end of a
        reply (a filter's tail, a delta cut mid-frame) would otherwise wait there until the next reply's first
        mark and reach the caller as a short message amid that reply's frames. It is sent, with a mark, in
        the slot the caller's carrier expects the next frame (at once if that is past, at most a frame from
        now), so the reply's frames stay 20 ms apart to its end.
        """
        if self._leg is None or self._stopped or self._unmarked_ms == 0 or self._finishing is not None:
            return
        # The leg has sent the segment's whole frames; the partial one's slot is the next (audio streamed
        # in real time reaches it now or within a frame; audio that came faster has time to spare).
        slot = self._segment_start + (self._segment_ms // FRAME_MS) * FRAME_MS / 1000.0
        delay = min(FRAME_MS / 1000.0, max(0.0, slot - self._clock.monotonic()))
        self._finishing = asyncio.get_running_loop().call_later(delay, self._finish_due)

    def _finish_due(self) -> None:
        self._finishing = None
        self._flush = asyncio.ensure_future(self._flush_partial())

    async def _flush_partial(self) -> None:
        try:
            await self._send_mark()
        except Exception as exc:  # no one awaits this task: the leg's reader reports a dead stream
            log.debug("finished segment's flush failed", error=str(exc))

    def _cancel_finish(self) -> None:
        if self._finishing is not None:
            self._finishing.cancel()
            self._finishing = None

    async def _send_mark(self) -> None:
        leg = self._leg
        if leg is None:
            return
        name = f"m{next(self._mark_seq)}"
        self._marks[name] = self._play_end
        self._marks_done.clear()
        self._unmarked_ms = 0.0
        await leg.send_mark(name)

    def on_mark(self, name: str) -> None:
        """The carrier played everything queued before mark `name`."""
        if self._marks.pop(name, None) is not None and not self._marks:
            self._marks_done.set()

    async def interrupt(self) -> tuple[str, int] | None:
        """Barge-in: clear the carrier's buffer; returns (segment, ms of it the caller heard)."""
        if not self.speaking or self._leg is None:
            return None
        self._cancel_finish()
        now = self._clock.monotonic()
        played = max(0.0, min(self._segment_ms, (now - self._segment_start) * 1000.0))
        await self._leg.clear()
        segment = self._segment
        self._play_end = now
        self._segment_ms = 0.0
        self._unmarked_ms = 0.0
        self._marks.clear()  # the carrier echoes (or drops) them on clear; they no longer mean anything
        self._marks_done.set()
        return segment, int(played)

    async def drained(self) -> None:
        """Wait until everything queued has been played (the carrier's marks say so)."""
        if self._leg is None:
            return
        self._cancel_finish()
        if self._unmarked_ms > 0:
            await self._send_mark()
        budget = max(0.0, self._play_end - self._clock.monotonic()) + DRAIN_SLACK_SECS
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(budget):
                await self._marks_done.wait()

    @property
    def speaking(self) -> bool:
        """True while agent audio is queued or playing."""
        return bool(self._marks) or self._clock.monotonic() < self._play_end

    async def goodbye_heard(self) -> None:
        """Return once the agent's goodbye has played out (its audio may still be on the way)."""
        if not self.speaking:
            # The goodbye is still to come (the model answers the tool output, or the voicemail
            # message was just requested): a first audio frame takes longer than the quiet gap.
            self._audio_played.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.goodbye_wait_secs):
                    await self._audio_played.wait()
        while True:
            await self.drained()
            quiet_since = self._last_play_mono
            await asyncio.sleep(self.goodbye_quiet_secs)
            if self._last_play_mono == quiet_since and not self.speaking:
                return
