"""One call's two audio channels on one clock, interleaved into the recording file about once a second.

The caller's channel is placed by frame count from its first frame's arrival (carriers send 20 ms frames
in real time), jumping forward to the arrival time only when the stream fell a whole second behind (it
stopped sending). The agent's channel is placed where the carrier plays it: the carrier plays what is queued at
8 kHz in real time, so a chunk starts at max(now, end of what is queued); a clear (barge-in) drops what
was queued but not yet played. Everything is written `LAG_SECS` behind the clock, so late caller frames
still land, and at most about a second sits in memory.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from patterd.clock import Clock
from patterd.lazy import lazy_import

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_import("numpy")  # the first call imports it, or the warm-up after ready (start-up, issue 14)

RATE = 8000  # samples a second, each channel (8 kHz μ-law, as everywhere between session and carrier)


class RecordingSink(Protocol):
    """Where the interleaved stereo audio goes (patterd.store.recording_file.RecordingFile)."""

    path: Path

    def append(self, interleaved: memoryview) -> None:
        """Write (left, right) μ-law sample frames after what is there; OSError when it cannot."""
        ...

    def close(self) -> None: ...


SILENCE = 0xFF  # μ-law zero
LAG_SECS = 0.5  # written this far behind the clock; a flush every LAG_SECS keeps ≤ 1 s in memory
WINDOW = 4 * RATE  # samples held before a write: room for LAG + a flush period + a late burst
# Carriers (and a browser's microphone, muted or not) send frames without pause, but not always evenly: a
# stalled network or event loop delivers a backlog in a burst, which frame counting places right. Only a
# stream that fell this far behind the clock is taken to have stopped, and placed by arrival again.
GAP_SAMPLES = RATE
PULL_SLACK = 40  # 5 ms: a frame this much sooner than its count places it moves the stream earlier


class StereoTimeline:
    """Places caller and agent audio on the clock of `clock` from `start` (monotonic) and writes it out."""

    def __init__(self, out: RecordingSink, clock: Clock, start: float) -> None:
        self.out = out
        self.clock = clock
        self.start = start
        self.written = 0  # samples of each channel in the file
        self.caller_pos = -1  # where the next caller sample goes (-1: no frame yet)
        self._run_floor = 0  # where the current run of caller frames may be moved back to at most
        self.queued_end = 0  # where agent audio queued so far stops playing
        # Agent audio not written yet: (first sample, chunk as sent); chunks are kept, not copied.
        self.agent: deque[tuple[int, bytes]] = deque()
        # Preallocated once: the caller window, the agent window, the interleaved output.
        self._left = bytearray([SILENCE]) * WINDOW
        self._right = bytearray([SILENCE]) * WINDOW
        self._out = np.empty(2 * WINDOW, dtype=np.uint8)
        self._left_np = np.frombuffer(self._left, dtype=np.uint8)
        self._right_np = np.frombuffer(self._right, dtype=np.uint8)
        self._out_view = memoryview(self._out.data).cast("B")
        self._silence = memoryview(bytes([SILENCE]) * WINDOW)
        self.closed = False

    def now(self) -> int:
        """The clock as a sample index."""
        return round((self.clock.monotonic() - self.start) * RATE)

    def caller(self, ulaw: bytes) -> None:
        """A caller frame that just arrived."""
        if self.closed or not ulaw:
            return
        size = len(ulaw)
        arrived = self.now() - size  # where it starts if it was sent in real time
        pos = self.caller_pos
        if pos < 0 or arrived > pos + GAP_SAMPLES:
            self._run_floor = max(pos, 0)  # a pull-back of this run stops at the end of the last one
            pos = max(arrived, self.written, 0)
        elif pos - arrived > PULL_SLACK:
            pos = self._pull_back(pos, pos - arrived)
        self.caller_pos = pos + size
        if pos < self.written:  # later than the lag: the part already written is lost
            skip = self.written - pos
            if skip >= size:
                return
            ulaw, pos, size = ulaw[skip:], self.written, size - skip
        if pos + size - self.written > WINDOW:  # a burst far ahead of the clock: make room
            self.flush(pos + size - WINDOW)
        at = pos - self.written
        self._left[at : at + size] = ulaw

    def _pull_back(self, pos: int, by: int) -> int:
        """A frame came sooner than counting allows: earlier ones were late (a backlog read in a burst).

        The stream's timing is the least delayed frame's, so this run of frames, as far as it is not
        written yet, moves `by` samples earlier (into the silence after the previous run; at the start
        of the call, what would move before the file's start was sent before the recording began).
        """
        floor = max(self.written, self._run_floor)
        by = min(by, pos - floor)
        if by > 0:
            low, held = floor - self.written, pos - self.written
            self._left[low : held - by] = self._left[low + by : held]
            self._left[held - by : held] = self._silence[:by]
        return pos - by

    def agent_audio(self, ulaw: bytes) -> None:
        """Agent audio handed to the carrier now: it plays after what is queued already."""
        if self.closed or not ulaw:
            return
        begin = max(self.now(), self.queued_end, self.written)
        self.agent.append((begin, ulaw))
        self.queued_end = begin + len(ulaw)

    def clear(self) -> None:
        """Barge-in: agent audio not played by now never will be."""
        cut = max(self.now(), self.written)
        while self.agent and self.agent[-1][0] >= cut:
            self.agent.pop()
        if self.agent:
            begin, chunk = self.agent[-1]
            if begin + len(chunk) > cut:
                self.agent[-1] = (begin, chunk[: cut - begin])
        self.queued_end = min(self.queued_end, cut)

    def tick(self) -> None:
        """Write what is `LAG_SECS` old; called every LAG_SECS."""
        self.flush(self.now() - int(LAG_SECS * RATE))

    def flush(self, upto: int) -> None:
        """Write both channels up to sample `upto` (silence where nothing was placed)."""
        while upto > self.written:
            n = min(upto - self.written, WINDOW)
            self._fill_right(n)
            out = self._out
            out[0 : 2 * n : 2] = self._left_np[:n]
            out[1 : 2 * n : 2] = self._right_np[:n]
            self.out.append(self._out_view[: 2 * n])
            self.written += n
            # Slide the caller window; what follows is not placed yet, so silence.
            self._left[: WINDOW - n] = self._left[n:]
            self._left[WINDOW - n :] = self._silence[:n]

    def close(self) -> None:
        """Write everything heard so far (agent audio still queued was never played) and close the file."""
        if self.closed:
            return
        try:
            self.flush(max(self.now(), self.caller_pos))
        finally:
            self.closed = True
            self.out.close()

    def _fill_right(self, n: int) -> None:
        """The agent window's first `n` samples from the queued chunks; chunks wholly written are dropped."""
        right, start, end = self._right, self.written, self.written + n
        right[:n] = self._silence[:n]
        while self.agent:
            begin, chunk = self.agent[0]
            if begin >= end:
                break
            stop = begin + len(chunk)
            lo, hi = max(begin, start), min(stop, end)
            if hi > lo:
                right[lo - start : hi - start] = memoryview(chunk)[lo - begin : hi - begin]
            if stop <= end:
                self.agent.popleft()
            else:
                break
