"""The carrier contract suite: inbound and outbound calls, signatures, media both ways, clear, DTMF, hangup, transfer.

Usage (one daemon per carrier, shared by every case)::

    @pytest.mark.parametrize("case", CarrierSuite.cases())
    async def test_contract(world: CarrierSetup, case: str) -> None:
        await CarrierSuite(world).run(case)

Each case places its own call through the driver and checks what the far end saw on the wire, what the
agent heard, and the call's record through the ops API. A case needing a feature the setup does not list
(`patterd.testing.carrier.OUTBOUND`, ...) is skipped.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, cast

from patterd.testing.audio import silent_ulaw, voiced_ulaw
from patterd.testing.carrier import (
    OUTBOUND,
    REST_HANGUP,
    SIGNATURES,
    TRANSFER,
    CarrierCall,
    CarrierSetup,
    OpsApi,
    Speak,
    TransferringDriver,
)
from patterd.testing.harness import CaseSkipped, skip, wait_until

# Short lines (every case waits for them to play in real time), the long one for barge-in.
GREETING = "Hi, how can I help?"
REPLY = "It has shipped."
LONG = "Let me tell you all about our opening hours, our prices and the many services we offer."
TURN = "I would like to check on my order."
HEARD_GREETING = 3200  # μ-law bytes (0.4 s) of the greeting: the agent's audio reaches the caller
FORGED_CALL = "call_00000000000000000000000000000000"


def _speech() -> bytes:
    """A caller turn any energy VAD hears: 0.6 s voiced, then enough silence to end the turn."""
    return voiced_ulaw(600) + silent_ulaw(700)


async def wait_quiet(call: CarrierCall, quiet_secs: float = 0.3, timeout: float = 15.0) -> None:
    """Until the caller has heard nothing new for `quiet_secs` (the agent finished speaking).

    Quiet must also last a number of polls, not only wall time: after a stall of this event loop (a
    loaded machine) the fake's player has not caught up yet, and the time alone would look like quiet.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    polls = max(1, round(quiet_secs / 0.02))
    heard, since, unchanged = call.heard_bytes(), loop.time(), 0
    while loop.time() - since < quiet_secs or unchanged < polls:
        if loop.time() > deadline:
            raise AssertionError(f"the agent was still speaking after {timeout} s")
        await asyncio.sleep(0.02)  # the fake plays audio on its own socket
        unchanged += 1
        if call.heard_bytes() != heard:
            heard, since, unchanged = call.heard_bytes(), loop.time(), 0


def _ended(body: dict[str, Any]) -> bool:
    return body["metadata"].get("status") not in (None, "ringing", "in_progress", "in-progress")


class CarrierSuite:
    """The cases every carrier passes, against one `CarrierSetup` (a running daemon shared by the cases)."""

    def __init__(self, setup: CarrierSetup, *, timeout: float = 15.0) -> None:
        self.setup = setup
        self.driver = setup.driver
        self.agent = setup.agent
        self.api = OpsApi(setup.api_url, setup.api_headers)
        self.timeout = timeout

    @classmethod
    def cases(cls) -> tuple[str, ...]:
        """Every case name, in definition order (for `pytest.mark.parametrize`)."""
        return tuple(
            name.removeprefix("case_")
            for name, value in vars(cls).items()
            if name.startswith("case_") and inspect.iscoroutinefunction(value)
        )

    async def run(self, case: str) -> None:
        """Run one case; AssertionError when the carrier breaks the contract."""
        method = getattr(self, f"case_{case}", None)
        if method is None:
            raise ValueError(f"CarrierSuite has no case {case!r}; cases: {', '.join(self.cases())}")
        async with asyncio.timeout(self.timeout * 3):
            await method()

    async def run_all(self) -> dict[str, str]:
        """Every case (outside pytest): case → "passed" or "skipped: why"; the first failure raises."""
        results: dict[str, str] = {}
        for case in self.cases():
            try:
                await self.run(case)
            except CaseSkipped as exc:
                results[case] = f"skipped: {exc}"
            else:
                results[case] = "passed"
        return results

    def _needs(self, feature: str) -> None:
        if feature not in self.setup.features:
            skip(f"the {self.driver.name} driver does not offer {feature!r}")

    async def _answered(self, *replies: Speak, transcripts: tuple[str, ...] = ()) -> CarrierCall:
        """An inbound call whose greeting the caller has started to hear."""
        self.agent.script(replies or (Speak(GREETING),), transcripts)
        call = await self.driver.inbound_call()
        await call.wait_heard(HEARD_GREETING, timeout=self.timeout)
        return call

    async def _finish(self, call: CarrierCall, status: str = "completed") -> dict[str, Any]:
        """The caller hangs up; the record as the ops API serves it once the call ended with `status`."""
        await call.hangup_from_far_end()
        body = await self.api.wait_call(call.call_id, _ended, self.timeout, "the call to end")
        assert body["metadata"]["status"] == status, body["metadata"]
        assert not call.violations(), call.violations()
        return body

    # ------------------------------------------------------------------ cases

    async def case_inbound_call(self) -> None:
        """A signed call comes in, is answered, the greeting is heard; the far end's hangup ends it cleanly."""
        call = await self._answered()
        assert call.call_id, "the daemon's answer carried no call id"
        await wait_quiet(call)  # the whole greeting played: the record holds all of it
        body = await self._finish(call)
        meta = body["metadata"]
        assert meta["telephony_provider"] == self.driver.name, meta
        assert meta["direction"] == "inbound" and meta["error"] in (None, ""), meta
        assert any(GREETING in line["text"] for line in body["transcript"] if line["role"] == "assistant")
        if REST_HANGUP in self.setup.features:
            assert self.driver.hangup_requests(call) == 0, "the far end hung up; the daemon need not"

    async def case_outbound_call(self) -> None:
        """POST /api/v1/calls dials over the carrier's REST API; the callee answers and hears the agent."""
        self._needs(OUTBOUND)
        self.agent.script([Speak(GREETING)])
        expect = getattr(self.driver, "expect_dial", None)
        if callable(expect):  # fakes that script the callee before the dial
            expect(self.setup.outbound_to)
        status, created = await self.api.request("POST", "/api/v1/calls", {"to": self.setup.outbound_to})
        assert status == 201, (status, created)
        dial = self.driver.dial_request()
        assert self.setup.outbound_to.lstrip("+") in str(dict(dial)), dial
        call = await self.driver.answer_outbound(self.setup.outbound_to, "human")
        assert call.call_id == created["call_id"], (call.call_id, created)
        await call.wait_heard(HEARD_GREETING, timeout=self.timeout)
        body = await self._finish(call)
        assert body["metadata"]["direction"] == "outbound", body["metadata"]
        if REST_HANGUP in self.setup.features:
            assert self.driver.hangup_requests(call) == 0, "the callee hung up; the daemon need not"

    async def case_signature_rejection(self) -> None:
        """A forged webhook gets 403 and a media socket without credentials is refused; both counted."""
        self._needs(SIGNATURES)

        def labelled(line: str) -> bool:
            return f'"{self.driver.name}"' in line

        before = await self.api.metric("patterd_webhook_rejections_total", labelled)
        assert await self.driver.send_bad_signature() == 403
        refused = await self.driver.open_media(FORGED_CALL)
        assert refused is not None and refused >= 400, f"media socket without credentials: {refused}"
        after = await self.api.metric("patterd_webhook_rejections_total", labelled)
        assert after == before + 2, (before, after)

    async def case_media_both_ways(self) -> None:
        """The caller's speech reaches the agent (a turn), the agent's reply reaches the caller."""
        call = await self._answered(Speak(GREETING), Speak(REPLY), transcripts=(TURN,))
        await wait_quiet(call)
        audio_before = self.agent.audio_in()
        await call.say(_speech())
        await wait_until(lambda: TURN in self.agent.caller_turns(), self.timeout, "the agent to hear a turn")
        assert self.agent.audio_in() > audio_before
        await call.wait_heard(call.heard_bytes() + HEARD_GREETING, timeout=self.timeout)
        await wait_quiet(call)  # the whole reply played: the record holds all of it
        body = await self._finish(call)
        users = [line["text"] for line in body["transcript"] if line["role"] == "user"]
        assert users == [TURN], body["transcript"]
        assert any(REPLY in line["text"] for line in body["transcript"] if line["role"] == "assistant")

    async def case_clear(self) -> None:
        """The caller speaks over the agent: the daemon clears the carrier's playback at once."""
        call = await self._answered(Speak(LONG), Speak("Sure."), transcripts=(TURN,))
        await call.wait_heard(8000, timeout=self.timeout)  # a second of the long answer played
        await call.say(_speech())
        cleared_at = await call.wait_for_clear(timeout=self.timeout)
        spoke_at = call.speech_started()[-1]
        assert 0 <= cleared_at - spoke_at < 2.0, f"clear {cleared_at - spoke_at:.3f} s after the speech"
        await wait_until(
            lambda: TURN in self.agent.caller_turns(), self.timeout, "the agent to hear the turn"
        )
        await wait_quiet(call)  # the answer to the barge-in played
        body = await self._finish(call)
        assert "barge_in" in [e["type"] for e in body["events"]]
        assert any(line.get("interrupted") for line in body["transcript"] if line["role"] == "assistant")

    async def case_dtmf(self) -> None:
        """A key press reaches the agent (it answers) and the record."""
        call = await self._answered(Speak(GREETING), Speak("Okay."))
        await wait_quiet(call)
        heard = call.heard_bytes()
        await call.send_dtmf("7")
        await call.wait_heard(heard + 800, timeout=self.timeout)  # the agent's answer to the key
        body = await self._finish(call)
        digits = [e["data"].get("digit") for e in body["events"] if e["type"] == "dtmf"]
        assert digits == ["7"], body["events"]

    async def case_hangup(self) -> None:
        """POST /api/v1/calls/{id}/hangup ends the call the carrier's way (its REST hangup, the socket closed)."""
        call = await self._answered()
        status, _ = await self.api.request("POST", f"/api/v1/calls/{call.call_id}/hangup")
        assert 200 <= status < 300, status
        await call.wait_hung_up_by_daemon(timeout=self.timeout)
        body = await self.api.wait_call(call.call_id, _ended, self.timeout, "the call to end")
        assert body["metadata"]["error"] in (None, ""), body["metadata"]
        if REST_HANGUP in self.setup.features:
            assert self.driver.hangup_requests(call) >= 1
        assert not call.violations(), call.violations()

    async def case_transfer(self) -> None:
        """POST /api/v1/calls/{id}/transfer sends the live call to another number over the carrier's REST API."""
        self._needs(TRANSFER)
        driver = self.driver
        if not callable(getattr(driver, "wait_transferred", None)):
            skip(f"the {driver.name} driver has no wait_transferred()")
        transferring = cast(TransferringDriver, driver)  # it has wait_transferred (checked just above)
        call = await self._answered()
        to = self.setup.transfer_to
        status, answer = await self.api.request("POST", f"/api/v1/calls/{call.call_id}/transfer", {"to": to})
        assert status == 202, (status, answer)
        number = await transferring.wait_transferred(call, timeout=self.timeout)
        assert number.lstrip("+") == to.lstrip("+"), (number, to)
        body = await self.api.wait_call(
            call.call_id,
            lambda b: "transfer" in [e["type"] for e in b["events"]],
            self.timeout,
            "a transfer event",
        )
        assert any(to in str(e["data"]) for e in body["events"] if e["type"] == "transfer"), body["events"]
