"""Turn latency as the caller hears it: last voiced frame in → first agent frame out, split into stages."""

from __future__ import annotations

import bisect
import collections
import dataclasses
from datetime import datetime

from patterd.clock import Clock, iso_ms
from patterd.protocols.events import TURN_STAGES, TranscriptLine, TurnHeard

# The stages an engine measures itself; transport_ms is what is left of latency_ms after them.
ENGINE_STAGES = tuple(key for key, _ in TURN_STAGES if key != "transport_ms")
ARRIVALS_KEPT = 1500  # 30 s of caller frame arrivals: a turn ends long before its last voiced frame is older
LINES_KEPT = 8  # recorded lines still waiting for their caller's report (it normally comes within ms)


@dataclasses.dataclass(frozen=True, slots=True)
class TurnAnnounce:
    """What the leg tells a reporting caller right before a turn's first agent frame."""

    turn: int  # the turn's number in this call
    frame: int  # the caller frame (1-based count of caller audio frames) counted as its last voiced one
    latency_ms: float  # the turn's latency_ms, as its transcript line will carry it


@dataclasses.dataclass(frozen=True, slots=True)
class LateHeard:
    """A caller's report for a turn whose assistant line was already recorded (emit it as TurnHeard)."""

    line_ts: str
    latency_ms: float
    heard_ms: float
    network_ms: float

    def event(self, call_id: str, ts: datetime) -> TurnHeard:
        """The call event that carries it to the store, metrics and live views."""
        return TurnHeard(call_id, ts, self.line_ts, self.latency_ms, self.heard_ms, self.network_ms)


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
        # Receiver reports (a leg whose caller says what it heard: `reporting`): the session stamps every
        # caller frame as it hands it to the engine, so the engine's `at` names the frame it was stamped on.
        self.reporting = False
        self._frames = 0
        self._stamps: collections.deque[float] = collections.deque(maxlen=ARRIVALS_KEPT)
        self._turn = 0
        self._frame: int | None = None  # the running turn's last voiced frame
        self._announced: TurnAnnounce | None = None  # latency measured and announced, line still to come
        self._heard: dict[int, float] = {}  # reports that came before their turn's line
        self._lines: collections.OrderedDict[int, tuple[str, float]] = collections.OrderedDict()

    def caller_frame(self) -> None:
        """A caller frame is about to go to the engine (called only while `reporting`)."""
        self._frames += 1
        self._stamps.append(self._clock.monotonic())

    def start(self, at: float | None = None) -> None:
        """A caller turn ended; its last voiced frame arrived at monotonic `at` (None: now)."""
        self._t0 = self._clock.monotonic() if at is None else at
        self._latency_ms = None  # an answer that never produced a transcript line must not lend its time
        self._announced = None
        self._heard.clear()  # a report for an answer that never got a line has nothing to go on
        self._turn += 1
        self._frame = self.frame_at(self._t0) if self.reporting else None

    def frame_at(self, at: float) -> int | None:
        """The number of the last caller frame stamped at or before `at` (None: none kept)."""
        # Frame k is stamped before the engine stamps it, frame k+1 after: the last stamp <= at is k.
        index = bisect.bisect_right(self._stamps, at)
        return self._frames - len(self._stamps) + index if index else None

    def sent(self) -> TurnAnnounce | None:
        """Agent audio was just written to the carrier socket: stop the timer if it runs.

        Returns what to tell a reporting caller before that first frame of the answer (else None).
        """
        t0 = self._t0
        if t0 is None:
            return None
        self._latency_ms = (self._clock.monotonic() - t0) * 1000
        self._t0 = None
        if self._frame is None:
            return None
        self._announced = TurnAnnounce(self._turn, self._frame, round(self._latency_ms, 1))
        return self._announced

    def complete(self, line: TranscriptLine) -> TranscriptLine:
        """An assistant line with the measured latency and its transport remainder (others unchanged),
        and what its caller heard when that report has come."""
        if line.role != "assistant" or line.latency_ms is not None or self._latency_ms is None:
            return line
        latency = round(self._latency_ms, 1)
        self._latency_ms = None
        line = dataclasses.replace(line, latency_ms=latency, transport_ms=transport_remainder(line, latency))
        announced, self._announced = self._announced, None
        if announced is None:
            return line
        heard = self._heard.pop(announced.turn, None)
        if heard is not None:
            return dataclasses.replace(line, heard_ms=heard, network_ms=network_stage(heard, latency))
        self._lines[announced.turn] = (iso_ms(line.ts), latency)  # the report may still come
        while len(self._lines) > LINES_KEPT:
            self._lines.popitem(last=False)
        return line

    def heard(self, turn: int, heard_ms: float) -> LateHeard | None:
        """The caller's report for `turn` (validated by the leg): None when the turn's line is still to
        come (it will carry it) or nothing waits for it; a LateHeard when the line was recorded already."""
        heard = round(heard_ms, 1)
        announced = self._announced
        if announced is not None and announced.turn == turn:
            self._heard[turn] = heard
            return None
        recorded = self._lines.pop(turn, None)
        if recorded is None:
            return None
        line_ts, latency = recorded
        return LateHeard(line_ts, latency, heard, network_stage(heard, latency))


def transport_remainder(line: TranscriptLine, latency_ms: float) -> float:
    """latency_ms minus the stages the engine measured (≥ 0, rounded like them) so the stages sum to it."""
    measured: float = sum(v for k in ENGINE_STAGES if (v := getattr(line, k)) is not None)
    # The stages are disjoint intervals inside the turn; only rounding to 0.1 ms can push this below 0.
    return max(0.0, round(latency_ms - measured, 1))


def network_stage(heard_ms: float, latency_ms: float) -> float:
    """heard_ms minus latency_ms (≥ 0, rounded like the stages): the two one-way trips the caller adds."""
    # Both are rounded to 0.1 ms; the leg refused reports that heard the answer before it was sent.
    return max(0.0, round(heard_ms - latency_ms, 1))
