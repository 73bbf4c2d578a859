"""Playout on an in-memory leg and a manual clock: marks, drain, barge-in accounting, goodbyes."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from patterd.calls.playout import MARK_EVERY_MS, Playout
from patterd.calls.turn_latency import TurnLatency
from patterd.protocols.audio import FRAME_MS
from tests.calls.fakes import TIMEOUT, FakeClock, FakeLeg

MS_100 = b"\xff" * 800  # 100 ms of 8 kHz μ-law


def playout(*, echo_marks: bool = False) -> tuple[Playout, FakeLeg, FakeClock, list[float]]:
    clock = FakeClock()
    firsts: list[float] = []
    out = Playout(clock, TurnLatency(clock), firsts.append, goodbye_quiet_secs=0.02, goodbye_wait_secs=0.05)
    leg = FakeLeg(echo_marks=echo_marks)
    out.attach(cast(Any, leg))
    return out, leg, clock, firsts


async def echo_marks(leg: FakeLeg, out: Playout) -> None:
    """The carrier reports every mark sent so far as played."""
    for name in leg.marks:
        out.on_mark(name)


async def test_audio_is_sent_counted_and_marked_every_200_ms() -> None:
    out, leg, clock, firsts = playout()
    for _ in range(5):
        await out.play(MS_100, segment="turn-1")
    assert b"".join(leg.audio) == MS_100 * 5
    assert out.frames_out == 25  # 20 ms frames
    assert len(leg.marks) == int(500 // MARK_EVERY_MS)  # after 200 and 400 ms
    assert firsts == [clock.monotonic()]  # the first audio is reported once
    assert out.speaking


async def test_speaking_ends_when_the_audio_has_played_and_the_marks_came_back() -> None:
    out, leg, clock, _ = playout()
    await out.play(MS_100 * 2, segment="a")  # 200 ms: one mark
    clock.advance(0.5)
    assert out.speaking  # the time is past, but the carrier has not confirmed
    await echo_marks(leg, out)
    assert not out.speaking


async def test_drained_marks_the_tail_and_returns_when_the_carrier_echoes_it() -> None:
    out, leg, _, _ = playout()
    await out.play(MS_100, segment="a")  # under MARK_EVERY_MS: no mark yet
    assert leg.marks == []
    waiter = asyncio.create_task(out.drained())
    async with asyncio.timeout(TIMEOUT):
        while not leg.marks:
            await asyncio.sleep(0)
    assert not waiter.done()
    await echo_marks(leg, out)
    async with asyncio.timeout(TIMEOUT):
        await waiter


async def test_a_finished_segment_is_marked_in_its_partial_frames_slot() -> None:
    out, leg, clock, _ = playout()
    await out.play(MS_100 + MS_100[:400], segment="a")  # 150 ms: 7 whole frames, a partial one held
    out.finish_segment()
    assert leg.marks == []  # its slot is 140 ms after the segment started: not yet
    clock.advance(7 * FRAME_MS / 1000)  # the slot has come: the mark (which flushes the leg) goes at once
    out.finish_segment()  # asked again: the flush already waiting is not doubled
    async with asyncio.timeout(TIMEOUT):
        while not leg.marks:
            await asyncio.sleep(0)
    assert len(leg.marks) == 1
    out.finish_segment()  # everything is marked now: nothing to send, nothing due
    assert out._finishing is None


async def test_audio_after_a_finish_or_a_barge_in_cancels_the_pending_flush() -> None:
    out, leg, _, _ = playout()
    await out.play(MS_100[:440], segment="a")  # 55 ms
    out.finish_segment()  # due in a frame's time (the fake clock has not moved: the slot is ahead)
    due = out._finishing
    assert due is not None
    await out.play(MS_100[:440], segment="b")  # the next reply came first: the partial frame goes with it
    assert due.cancelled() and out._finishing is None
    out.finish_segment()
    due = out._finishing
    assert due is not None
    assert await out.interrupt() is not None  # barge-in: the leg drops its partial frame itself
    assert due.cancelled() and out._finishing is None
    assert leg.marks == [] and leg.clears == 1


async def test_interrupt_clears_the_carrier_and_returns_the_heard_share_of_the_segment() -> None:
    out, leg, clock, _ = playout()
    await out.play(MS_100 * 10, segment="turn-2")  # one second
    clock.advance(0.35)
    assert await out.interrupt() == ("turn-2", 350)
    assert leg.clears == 1
    assert not out.speaking  # the buffer is gone, its marks mean nothing now
    assert await out.interrupt() is None  # nothing left playing
    assert leg.clears == 1


async def test_a_pause_inside_a_segment_is_not_counted_as_heard_audio() -> None:
    out, _, clock, _ = playout()
    await out.play(MS_100, segment="s")
    clock.advance(0.3)  # played 100 ms, then 200 ms of silence waiting for the TTS
    await out.play(MS_100 * 3, segment="s")
    clock.advance(0.1)
    assert await out.interrupt() == ("s", 200)


async def test_a_new_segment_counts_from_its_own_start_behind_the_queue() -> None:
    out, _, clock, _ = playout()
    await out.play(MS_100 * 5, segment="one")
    await out.play(MS_100 * 5, segment="two")  # starts once "one" has played
    clock.advance(0.7)
    assert await out.interrupt() == ("two", 200)


async def test_after_stop_audio_is_dropped() -> None:
    out, leg, _, firsts = playout()
    out.stop()
    await out.play(MS_100, segment="late")
    assert leg.audio == [] and firsts == [] and not out.speaking


async def test_goodbye_heard_waits_for_audio_still_to_come_then_for_quiet() -> None:
    out, leg, clock, _ = playout(echo_marks=True)
    # In-memory legs echo marks into their inbox; here the playout hears them directly.
    leg.echo_marks = False
    goodbye = asyncio.create_task(out.goodbye_heard())
    await asyncio.sleep(0)
    await out.play(MS_100, segment="bye")  # the goodbye arrives after the tool call
    assert not goodbye.done()
    clock.advance(0.2)
    async with asyncio.timeout(TIMEOUT):
        while not goodbye.done():
            await echo_marks(leg, out)
            await asyncio.sleep(0.005)
    assert not out.speaking


async def test_goodbye_heard_gives_up_waiting_for_a_goodbye_that_never_comes() -> None:
    out, _, _, _ = playout()
    async with asyncio.timeout(TIMEOUT):
        await out.goodbye_heard()
