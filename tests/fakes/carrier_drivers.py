"""`patterd.testing.carrier` drivers over the built-in carriers' fakes, and the fake engine as an AgentControl.

The scenario adapters of the e2e tests (`tests.e2e.scenarios`, `tests.e2e.more_carriers`) already speak
the driver's verbs; these add what the contract suite needs beyond them (a transfer seen by the fake,
the callee scripted before a dial).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from patterd.testing.carrier import CarrierCall, Reply, Speak
from tests.e2e.more_carriers import PlivoCarrier, PlivoHandle, SignalWireCarrier
from tests.e2e.scenarios import CallHandle, TelnyxCarrier, TelnyxHandle, TwilioCarrier, TwilioHandle
from tests.e2e.vonage_carrier import VonageCarrier, VonageHandle
from tests.fakes.openai_realtime import CallTool, FakeRealtimeServer, Say


async def _until_transferred(read: object, timeout: float) -> str:
    """Poll a fake call's `transferred_to` (the fake sets it from its own socket) until it is set."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while getattr(read, "transferred_to", None) is None:
        if loop.time() > deadline:
            raise AssertionError(f"no transfer within {timeout} s")
        await asyncio.sleep(0.02)
    return str(getattr(read, "transferred_to", ""))


class TwilioDriver(TwilioCarrier):
    """FakeTwilio: a transfer is a REST update whose TwiML <Dial>s the number."""

    async def answer_outbound(self, to: str, answered_by: str) -> CallHandle:
        """The callee answers; the AMD result only goes back when the dial asked for it."""
        if self.dial_request().get("AsyncAmd") == "true":
            return await super().answer_outbound(to, answered_by)
        assert self.net is not None
        resource = await self.rest.wait_for_call(index=self._outbound_seen())
        assert resource.to == to
        return TwilioHandle(await self.net.answer_outbound(resource), self.rest)

    async def wait_transferred(self, call: CarrierCall, timeout: float = 10.0) -> str:
        assert isinstance(call, TwilioHandle)
        return await _until_transferred(call.call, timeout)


class SignalWireDriver(SignalWireCarrier):
    """FakeSignalWire: a transfer redirects the call to cXML that <Dial>s the number."""

    async def wait_transferred(self, call: CarrierCall, timeout: float = 10.0) -> str:
        assert isinstance(call, TwilioHandle)
        return await _until_transferred(call.call, timeout)


class PlivoDriver(PlivoCarrier):
    """FakePlivo: a transfer points the A leg at XML that <Dial>s the number."""

    async def wait_transferred(self, call: CarrierCall, timeout: float = 10.0) -> str:
        assert isinstance(call, PlivoHandle)
        return await _until_transferred(call.call, timeout)


class TelnyxDriver(TelnyxCarrier):
    """FakeTelnyx: a transfer is the Call Control `transfer` command; callees are scripted before a dial."""

    def expect_dial(self, to: str) -> None:
        self.script_callee(to, "human")

    async def answer_outbound(self, to: str, answered_by: str) -> CallHandle:
        """The scripted callee answered; the AMD result only comes when the dial asked for it."""
        if self.dial_request().get("answering_machine_detection") not in (None, "disabled"):
            return await super().answer_outbound(to, answered_by)
        await self.fake.wait_command("dial")
        dial = [c for c in self.fake.commands if c.action == "dial" and c.body.get("to") == to][-1]
        return await self._answered(self.fake.calls[dial.call_control_id])

    async def wait_transferred(self, call: CarrierCall, timeout: float = 10.0) -> str:
        assert isinstance(call, TelnyxHandle)
        command = await self.fake.wait_command("transfer", call.call.call_control_id, timeout=timeout)
        return str(command.body.get("to", ""))


class VonageDriver(VonageCarrier):
    """FakeVonage: a transfer is a REST PUT whose NCCO connects the number."""

    async def wait_transferred(self, call: CarrierCall, timeout: float = 10.0) -> str:
        assert isinstance(call, VonageHandle)
        return await _until_transferred(call.call, timeout)


class EngineAgent:
    """The fake OpenAI Realtime server as the suite's AgentControl."""

    def __init__(self, engine: FakeRealtimeServer) -> None:
        self.engine = engine

    def script(self, replies: Sequence[Reply], transcripts: Sequence[str] = ()) -> None:
        self.engine.replies[:] = [
            Say(r.text) if isinstance(r, Speak) else CallTool(r.name, dict(r.arguments)) for r in replies
        ]
        self.engine.transcripts[:] = list(transcripts)

    def caller_turns(self) -> Sequence[str]:
        return self.engine.user_turns

    def audio_in(self) -> int:
        return self.engine.audio_bytes_in
