"""Turn latency as the caller hears it: last voiced frame in → first agent frame out, split into stages."""

from __future__ import annotations

import dataclasses

from patterd.clock import Clock
from patterd.protocols.events import TURN_STAGES, TranscriptLine

# The stages an engine measures itself; transport_ms is what is left of latency_ms after them.
ENGINE_STAGES = tuple(key for key, _ in TURN_STAGES if key != "transport_ms")


class TurnLatency:
    """One call's turn timer: started at the caller's last voiced frame, stopped by the first frame sent.

    The engine starts it (`start`) when it answers a caller turn, with the monotonic time the last
    voiced frame of that turn arrived from the carrier; the call session stops it (`sent`) once the
    first agent audio of the answer is written to the carrier socket, and `complete` puts the
    measurement on the answer's transcript line.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._t0: float | None = None
        self._latency_ms: float | None = None

    def start(self, at: float | None = None) -> None:
        """A caller turn ended; its last voiced frame arrived at monotonic `at` (None: now)."""
        self._t0 = self._clock.monotonic() if at is None else at
        self._latency_ms = None  # an answer that never produced a transcript line must not lend its time

    def sent(self) -> None:
        """Agent audio was just written to the carrier socket: stop the timer if it runs."""
        t0 = self._t0
        if t0 is not None:
            self._latency_ms = (self._clock.monotonic() - t0) * 1000
            self._t0 = None

    def complete(self, line: TranscriptLine) -> TranscriptLine:
        """An assistant line with the measured latency and its transport remainder (others unchanged)."""
        if line.role != "assistant" or line.latency_ms is not None or self._latency_ms is None:
            return line
        latency = round(self._latency_ms, 1)
        self._latency_ms = None
        return dataclasses.replace(line, latency_ms=latency, transport_ms=transport_remainder(line, latency))


def transport_remainder(line: TranscriptLine, latency_ms: float) -> float:
    """latency_ms minus the stages the engine measured (≥ 0, rounded like them) so the stages sum to it."""
    measured: float = sum(v for k in ENGINE_STAGES if (v := getattr(line, k)) is not None)
    # The stages are disjoint intervals inside the turn; only rounding to 0.1 ms can push this below 0.
    return max(0.0, round(latency_ms - measured, 1))
