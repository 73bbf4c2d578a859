"""The caller's receiver report through a real CallSession and pipeline: which frame is announced, and the
stage arithmetic that puts heard_ms and network_ms on the turn's line (or in a TurnHeard when it came late)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from patterd.calls.turn_latency import LateHeard, TurnAnnounce, TurnLatency, network_stage
from patterd.clock import iso_ms
from patterd.metrics import Metrics
from patterd.protocols.events import CallerHeard, TranscriptLine, TurnHeard
from tests.calls.test_turn_latency import (
    LOUD,
    QUIET,
    START,
    TIMEOUT,
    FakeLeg,
    ManualClock,
    Rig,
    call,
    stage_sum,
)

NETWORK_MS = 12.3  # the two one-way trips the test's caller reports on top of the daemon's latency


class ReportingLeg(FakeLeg):
    """A leg that can ask its caller what it heard; this caller answers at once (before the line is out)."""

    answer = True

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock)
        self.announced: list[tuple[TurnAnnounce, int]] = []  # (announcement, agent writes before it)

    async def announce_turn(self, turn: int, frame: int, latency_ms: float) -> None:
        self.announced.append((TurnAnnounce(turn, frame, latency_ms), len(self.sent)))
        if self.answer:
            self.inbox.put_nowait(CallerHeard(turn, latency_ms + NETWORK_MS))


class SlowReportingLeg(ReportingLeg):
    """Its caller's report comes only when the test sends it (after the line was recorded)."""

    answer = False


async def wait_event(rig: Rig, kind: type[TurnHeard]) -> TurnHeard:
    async with asyncio.timeout(TIMEOUT):
        while True:
            found = [e for e in rig.events if isinstance(e, kind)]
            if found:
                return found[0]
            rig.changed.clear()
            await rig.changed.wait()


async def test_the_last_voiced_frame_is_announced_before_the_first_agent_frame_and_the_report_lands_on_the_line() -> (
    None
):
    async with call(
        endpointing_ms=50, stt_final_ms=40, llm_ms=150, tts_ms=30, gap_ms=5, leg_type=ReportingLeg
    ) as rig:
        await rig.feed(QUIET, 3)
        await rig.feed(LOUD, 25)  # frames 4..28: frame 28 is the caller's last voiced one
        await rig.feed(QUIET, 5)
        line = await rig.wait_line("assistant")
    leg = rig.leg
    assert isinstance(leg, ReportingLeg)
    assert leg.announced == [(TurnAnnounce(1, 28, 375.0), 0)]  # once, before any agent audio was written
    assert line.latency_ms == 375.0
    assert line.heard_ms == 387.3 and line.network_ms == NETWORK_MS
    # The waterfall: latency stages sum to latency_ms, and with the network bar to what the caller heard.
    assert stage_sum(line) == pytest.approx(line.latency_ms, abs=0.05)
    assert stage_sum(line) + line.network_ms == pytest.approx(line.heard_ms, abs=0.05)
    assert not [e for e in rig.events if isinstance(e, TurnHeard)]


async def test_a_report_after_the_line_was_recorded_becomes_a_turn_heard_event() -> None:
    async with call(
        endpointing_ms=50, stt_final_ms=40, llm_ms=100, tts_ms=20, gap_ms=2, leg_type=SlowReportingLeg
    ) as rig:
        await rig.feed(LOUD, 10)
        await rig.feed(QUIET, 5)
        line = await rig.wait_line("assistant")
        assert line.heard_ms is None and line.latency_ms is not None
        rig.leg.inbox.put_nowait(CallerHeard(1, line.latency_ms + 40.0))
        late = await wait_event(rig, TurnHeard)
        rig.leg.inbox.put_nowait(CallerHeard(1, line.latency_ms + 1.0))  # once per turn: a second is ignored
        rig.leg.inbox.put_nowait(CallerHeard(7, 500.0))  # a turn that never was
        await rig.feed(QUIET, 2)  # (both read by now)
    assert isinstance(rig.leg, ReportingLeg) and rig.leg.announced[0][0].frame == 10
    assert (late.line_ts, late.latency_ms) == (iso_ms(line.ts), line.latency_ms)
    assert late.heard_ms == round(line.latency_ms + 40.0, 1) and late.network_ms == 40.0
    assert len([e for e in rig.events if isinstance(e, TurnHeard)]) == 1


def test_frames_are_named_by_their_stamps_and_the_stage_arithmetic() -> None:
    clock = ManualClock()
    turns = TurnLatency(clock)
    turns.reporting = True
    for _ in range(5):  # frames 1..5 handed to the engine at START+20 ms .. START+100 ms
        clock.advance(20)
        turns.caller_frame()
    assert turns.frame_at(START) is None  # before every frame kept
    # The engine stamps a frame at or after the session's stamp of it, and before the next frame's.
    assert turns.frame_at(START + 0.061) == 3 and turns.frame_at(START + 0.059) == 2
    assert turns.frame_at(START + 0.2) == 5
    turns.start(START + 0.0605)  # the engine's stamp of frame 3
    clock.advance(400)
    announce = turns.sent()
    assert announce == TurnAnnounce(1, 3, 439.5)
    assert turns.sent() is None  # only the first agent frame of a turn
    assert turns.heard(2, 500.0) is None  # not a turn we asked about: nothing changes
    assert turns.heard(1, 452.04) is None  # before its line: kept for it
    line = TranscriptLine("c", clock.now(), role="assistant", text="hi", endpointing_ms=300.0, stt_ms=20.0)
    done = turns.complete(line)
    assert (done.latency_ms, done.transport_ms, done.heard_ms, done.network_ms) == (439.5, 119.5, 452.0, 12.5)
    # The next turn's report comes after its line: a LateHeard for the store to put on that line.
    turns.start()
    clock.advance(100)
    assert turns.sent() == TurnAnnounce(2, 5, 100.0)
    later = turns.complete(TranscriptLine("c", clock.now(), role="assistant", text="ok"))
    assert later.heard_ms is None
    assert turns.heard(2, 130.0) == LateHeard(iso_ms(later.ts), 100.0, 130.0, 30.0)
    assert turns.heard(2, 130.0) is None  # once
    # A turn whose answer never got a line: its report has nothing to go on, and the next turn is unaffected.
    turns.start()
    clock.advance(50)
    assert turns.sent() is not None
    turns.heard(3, 60.0)
    turns.start()
    clock.advance(70)
    assert turns.sent() == TurnAnnounce(4, 5, 70.0)
    assert turns.complete(TranscriptLine("c", clock.now(), role="assistant", text="x")).heard_ms is None


def test_not_reporting_announces_nothing_and_network_is_never_negative() -> None:
    clock = ManualClock()
    turns = TurnLatency(clock)
    turns.start()
    clock.advance(10)
    assert turns.sent() is None
    assert network_stage(100.0, 100.1) == 0.0  # rounding only: the leg refuses a real undercut
    assert network_stage(100.06, 90.0) == 10.1


def test_metrics_count_the_network_stage_from_lines_and_late_reports() -> None:
    metrics = Metrics("test")
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    metrics.observe(
        TranscriptLine(
            "c",
            ts,
            role="assistant",
            text="a",
            latency_ms=400.0,
            transport_ms=400.0,
            heard_ms=410.0,
            network_ms=10.0,
        )
    )
    metrics.observe(TurnHeard("c", ts, line_ts=iso_ms(ts), latency_ms=300.0, heard_ms=330.0, network_ms=30.0))
    rows = dict(
        row.rsplit(" ", 1) for row in metrics.render().decode().splitlines() if not row.startswith("#")
    )
    assert float(rows['patterd_turn_stage_seconds_count{stage="network"}']) == 2
    assert float(rows['patterd_turn_stage_seconds_sum{stage="network"}']) == pytest.approx(0.04)
    assert float(rows["patterd_turn_latency_seconds_count"]) == 1  # a late report is no new turn
