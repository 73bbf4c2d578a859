"""CallSession lifecycle on in-memory fakes: connect, media, end reasons, failures, max duration, tools."""

from __future__ import annotations

import asyncio
import json

import pytest

from patterd.calls.session import CallState
from patterd.calls.tools import ToolSet
from patterd.errors import ProviderConnectionError
from patterd.protocols.events import (
    CallEnded,
    CallerAudio,
    CallerDtmf,
    CallFailed,
    CallStatusChanged,
    DtmfReceived,
    StreamStarted,
    ToolCalled,
    TransferStarted,
)
from tests.calls.fakes import TIMEOUT, Rig, rig

FRAME = b"\x10" * 160


async def connected(r: Rig) -> None:
    r.leg.feed(StreamStarted("s1"))
    r.connect()
    await r.engine.wait_session()


async def test_connect_passes_media_to_the_engine_and_a_caller_hang_up_completes_the_call() -> None:
    r = rig()
    assert r.session.state is CallState.RINGING and r.session.snapshot().status == "ringing"
    await connected(r)
    engine = r.engine.sessions[0]
    assert engine.ctx.call_id == "call-1" and engine.ctx.audio is r.session.playout
    assert r.session.snapshot().state is CallState.CONNECTED
    assert [e.status for e in r.log.of(CallStatusChanged)] == ["in_progress"]
    r.leg.feed(CallerAudio(FRAME))
    r.leg.feed(CallerDtmf("5"))
    r.session.push_text("hello")
    r.leg.hang_up()
    await r.ended()
    assert engine.audio == [FRAME] and engine.dtmf == ["5"] and engine.texts == ["hello"]
    assert [e.digit for e in r.log.of(DtmfReceived)] == ["5"]
    ended = r.log.of(CallEnded)
    assert len(ended) == 1 and ended[0].status == "completed" and ended[0].reason == "caller hung up"
    assert r.carrier.hangups == []  # the caller hung up: nothing to tell the carrier
    assert r.leg.closed and r.session.frames_in == 1
    assert r.session.snapshot().as_dict() == {
        "call_id": "call-1",
        "agent": "desk",
        "state": "ended",
        "status": "completed",
        "direction": "inbound",
        "carrier": "fake",
    }


async def test_request_end_hangs_up_through_the_carrier_with_its_reason() -> None:
    r = rig()
    await connected(r)
    r.session.request_end("api hangup")
    await r.ended()
    assert r.carrier.hangups == ["CA1"]
    ended = r.log.of(CallEnded)[0]
    assert (ended.status, ended.reason) == ("completed", "api hangup")


async def test_request_end_before_media_cancels_the_call() -> None:
    r = rig()
    r.session.request_end("drain")
    assert r.session.state is CallState.ENDED
    ended = r.log.of(CallEnded)[0]
    assert (ended.status, ended.reason) == ("canceled", "drain")
    async with asyncio.timeout(TIMEOUT):
        while not r.carrier.hangups:
            await asyncio.sleep(0)
    assert r.carrier.hangups == ["CA1"]
    assert not await r.session.engine_ready()  # ended without an engine: nobody waits forever


async def test_max_duration_ends_the_call_as_completed() -> None:
    r = rig(agent={"max_duration_secs": 0.05})
    await connected(r)
    await r.ended()
    ended = r.log.of(CallEnded)[0]
    assert (ended.status, ended.reason) == ("completed", "max_duration")
    assert r.carrier.hangups == ["CA1"]


async def test_an_engine_failure_fails_the_call_and_hangs_up() -> None:
    r = rig()
    await connected(r)
    r.engine.sessions[0].fail(ProviderConnectionError("socket closed", provider="fake"))
    await r.ended()
    failed = r.log.of(CallFailed)[0]
    assert failed.component == "engine" and failed.fatal and "socket closed" in failed.message
    assert r.log.of(CallEnded)[0].status == "failed"
    assert r.carrier.hangups == ["CA1"]


async def test_a_broken_media_stream_is_the_carriers_failure() -> None:
    r = rig()
    await connected(r)
    r.leg.break_stream(TimeoutError("media idle"))
    await r.ended()
    failed = r.log.of(CallFailed)[0]
    assert failed.component == "carrier" and failed.message.startswith("media stream failed: TimeoutError")
    assert r.log.of(CallEnded)[0].status == "failed"


async def test_an_engine_that_cannot_open_fails_the_call() -> None:
    r = rig()
    r.engine.open_error = ProviderConnectionError("refused", provider="fake")
    r.leg.feed(StreamStarted("s1"))
    r.connect()
    await r.ended()
    assert r.log.of(CallFailed)[0].component == "engine"
    assert r.log.of(CallEnded)[0].status == "failed"
    assert r.carrier.hangups == ["CA1"]


async def test_finish_records_the_first_final_status_only() -> None:
    r = rig()
    r.session.finish("no-answer", reason="not answered in time")
    r.session.finish("failed", reason="later")
    assert [(e.status, e.reason) for e in r.log.of(CallEnded)] == [("no-answer", "not answered in time")]


async def test_carrier_recording_starts_and_its_failure_does_not_break_the_call() -> None:
    r = rig(agent={"recording": True})
    r.carrier.fail_recording = OSError("recording refused")
    await connected(r)
    failed = await r.log.wait_for(CallFailed)
    assert failed.component == "recording" and not failed.fatal
    r.leg.hang_up()
    await r.ended()
    assert r.log.of(CallEnded)[0].status == "completed"


async def test_transfer_tool_transfers_through_the_carrier_and_ends_the_call() -> None:
    r = rig(toolset=ToolSet(transfer_numbers=("+15550009999",)))
    await connected(r)
    result = await r.session.run_tool("transfer_call", {"number": "+15550009999"})
    await r.ended()
    assert r.carrier.transfers == [("CA1", "+15550009999")]
    assert r.log.of(TransferStarted)[0].to == "+15550009999"
    tool = r.log.of(ToolCalled)[0]
    assert tool.name == "transfer_call" and tool.error is None and tool.result == result
    assert r.log.of(CallEnded)[0].reason == "transferred to +15550009999"


async def test_an_unknown_tool_is_an_error_result_for_the_model_not_a_failure() -> None:
    r = rig()
    await connected(r)
    result = await r.session.run_tool("launch_rockets", {})
    assert "error" in json.loads(result)
    assert r.log.of(ToolCalled)[0].error is not None
    assert r.session.state is CallState.CONNECTED
    r.leg.hang_up()
    await r.ended()


@pytest.mark.parametrize("speak", [True, False])
async def test_end_call_tool_waits_for_the_goodbye_then_hangs_up(speak: bool) -> None:
    r = rig(toolset=ToolSet(end_call=True))
    r.session.playout.goodbye_quiet_secs = 0.05
    r.session.playout.goodbye_wait_secs = 0.05  # how long a goodbye still to come may take to start
    await connected(r)
    if speak:  # the goodbye is already queued: the call ends once it has played
        await r.session.playout.play(b"\xff" * 800, segment="bye")
    await r.session.run_tool("end_call", {"reason": "done"})
    assert r.task is not None and not r.task.done()
    r.clock.advance(1.0)  # the goodbye's 100 ms have played (without one, the call ends after the wait)
    await r.ended()
    ended = r.log.of(CallEnded)[0]
    assert (ended.status, ended.reason) == ("completed", "done")
    assert r.carrier.hangups == ["CA1"]
