"""AMD verdicts: the Voicemail decision on its own, and the session leaving the message and hanging up."""

from __future__ import annotations

import asyncio

import pytest

from patterd.calls.voicemail import AMD_MACHINE, Voicemail
from patterd.protocols.events import CallEnded, CallStatusChanged, MachineDetected, StreamStarted
from tests.calls.fakes import TIMEOUT, rig

MESSAGE = "Hi, this is the clinic calling about your appointment."


def voicemail(message: str | None = MESSAGE, grace: float = 10.0) -> tuple[Voicemail, list[str]]:
    left: list[str] = []
    return Voicemail(message, left.append, grace_secs=grace), left


@pytest.mark.parametrize("answered_by", ["human", "unknown", "no_answer"])
async def test_a_person_or_no_verdict_leaves_nothing(answered_by: str) -> None:
    vm, left = voicemail()
    assert not vm.verdict(answered_by)
    assert left == []


@pytest.mark.parametrize("answered_by", sorted(AMD_MACHINE - {"machine_start"}))
async def test_a_machine_gets_the_message_once(answered_by: str) -> None:
    vm, left = voicemail()
    assert vm.verdict(answered_by)
    assert vm.verdict("machine_end_other")  # a later verdict is still a voicemail call
    assert left == [MESSAGE]


async def test_without_a_message_a_machine_is_just_a_verdict() -> None:
    vm, left = voicemail(message=None)
    assert not vm.verdict("machine_end_beep")
    assert left == []


async def test_machine_start_waits_for_the_end_of_the_greeting() -> None:
    vm, left = voicemail(grace=10.0)
    assert vm.verdict("machine_start")
    await asyncio.sleep(0.01)
    assert left == []  # still in the greeting
    assert vm.verdict("machine_end_beep")
    assert left == [MESSAGE]


async def test_machine_start_alone_leaves_the_message_after_the_grace() -> None:
    vm, left = voicemail(grace=0.02)
    vm.verdict("machine_start")
    async with asyncio.timeout(TIMEOUT):
        while not left:
            await asyncio.sleep(0.005)
    assert left == [MESSAGE]


async def test_a_call_that_ended_during_the_grace_leaves_nothing() -> None:
    vm, left = voicemail(grace=0.02)
    vm.verdict("machine_start")
    vm.close()
    await asyncio.sleep(0.05)
    assert left == []
    assert vm.verdict("machine_end_beep") and left == []


async def test_the_session_speaks_the_message_after_connecting_then_ends_as_voicemail() -> None:
    r = rig(voicemail_message=MESSAGE, direction="outbound")
    r.session.playout.goodbye_quiet_secs = 0.02
    r.session.on_machine_detected("machine_end_beep")  # before the media stream connected
    assert r.log.of(MachineDetected)[0].answered_by == "machine_end_beep"
    assert [e.status for e in r.log.of(CallStatusChanged)] == ["voicemail"]
    r.leg.feed(StreamStarted("s1"))
    r.connect()
    engine = await r.engine.wait_session()
    played: list[asyncio.Task[None]] = []
    engine.on_say = lambda text: played.append(
        asyncio.create_task(r.session.playout.play(b"\xff" * 800, "vm"))
    )
    async with asyncio.timeout(TIMEOUT):
        while not engine.said:
            await asyncio.sleep(0.005)
    assert engine.said == [MESSAGE]
    r.clock.advance(1.0)  # the message has played
    await r.ended()
    ended = r.log.of(CallEnded)[0]
    assert (ended.status, ended.reason) == ("voicemail", "voicemail left")
    assert r.carrier.hangups == ["CA1"]
    # the status stays voicemail: connecting did not turn it back into in_progress
    assert [e.status for e in r.log.of(CallStatusChanged)] == ["voicemail"]
