"""Scenario adapters (the `scenarios.Carrier` and `CallHandle` verbs) for the Plivo and SignalWire fakes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from patterd.protocols import plivo as plivo_proto
from tests.e2e.scenarios import (
    CALLER,
    NUMBER,
    PUBLIC_HOST,
    CallHandle,
    RestNetCarrier,
    StreamCallVerbs,
    TwilioHandle,
    _try_ws,
)
from tests.fakes.plivo import FakePlivo, FakePlivoCall, FakePlivoRest
from tests.fakes.signalwire import FakeSignalWire, FakeSignalWireRest


@dataclass
class PlivoHandle(StreamCallVerbs):
    """A FakePlivo call behind the neutral verbs."""

    call: FakePlivoCall
    rest: FakePlivoRest

    @property
    def call_id(self) -> str:
        return plivo_proto.decode_extra_headers(self.call.extra_headers)["call_id"]

    async def hangup_from_far_end(self) -> None:
        """The caller hangs up: Plivo closes the stream socket (and posts the hangup_url it has)."""
        await self.call.remote_end("completed")

    async def wait_hung_up_by_daemon(self, timeout: float = 10.0) -> None:
        """The daemon hung up over REST (DELETE Call/{uuid}/) and Plivo closed the stream."""
        uuid = self.call.call_sid
        await self.rest.wait_for_request(
            lambda r: r.method == "DELETE" and r.path.endswith(f"/Call/{uuid}/"), timeout=timeout
        )
        await self.call.wait_closed(timeout=timeout)


class PlivoCarrier(RestNetCarrier[FakePlivoRest, FakePlivo]):
    """FakePlivoRest + FakePlivo."""

    name = "plivo"

    def __init__(self) -> None:
        super().__init__(FakePlivoRest(), FakePlivo)

    def config(self) -> str:
        return (
            f"carrier: {{type: plivo, auth_id: {self.rest.auth_id}, auth_token: '{self.rest.auth_token}', "
            f"base_url: '{self.rest.base_url}', retry_backoff_secs: 0.05}}\n"
        )

    async def inbound_call(self, from_: str = CALLER, to: str = NUMBER) -> CallHandle:
        assert self.net is not None
        call = await self.net.inbound_call(from_, to)
        assert call.webhook_status == 200 and call.xml is not None and call.xml.stream_url, (
            call.webhook_status,
            call.xml,
        )
        return PlivoHandle(call, self.rest)

    async def answer_outbound(self, to: str, answered_by: str = "human") -> CallHandle:
        assert self.net is not None
        seen = sum(1 for c in self.net.calls.values() if c.direction == "outbound")
        resource = await self.rest.wait_for_call(index=seen)
        assert resource.to == to.lstrip("+")
        return PlivoHandle(await self.net.answer_outbound(resource), self.rest)

    def dial_request(self) -> dict[str, Any]:
        return [r.body for r in self.rest.requests if r.method == "POST" and r.path.endswith("/Call/")][-1]

    async def send_bad_signature(self) -> int:
        assert self.net is not None
        params = {"CallUUID": "u-forged", "From": CALLER, "To": NUMBER, "Direction": "inbound"}
        url = self.net.public_url("/webhooks/plivo/voice")
        status, _ = await self.net.post_webhook(url, params, signature="bm90IGEgc2lnbmF0dXJl")
        return status

    async def open_media(self, call_id: str) -> int | None:
        assert self.net is not None
        url = self.net.local_url(f"wss://{PUBLIC_HOST}/ws/plivo/stream/{call_id}?token=guess")
        return await _try_ws(self.net.session, url, {})

    def hangup_requests(self, handle: CallHandle) -> int:
        assert isinstance(handle, PlivoHandle)
        uuid = handle.call.call_sid
        return sum(1 for r in self.rest.requests if r.method == "DELETE" and uuid in r.path)


class SignalWireCarrier(RestNetCarrier[FakeSignalWireRest, FakeSignalWire]):
    """FakeSignalWireRest + FakeSignalWire; calls are Twilio-shaped (TwilioHandle fits them)."""

    name = "signalwire"

    def __init__(self) -> None:
        super().__init__(FakeSignalWireRest(), FakeSignalWire)

    def config(self) -> str:
        return (
            f"carrier: {{type: signalwire, project_id: {self.rest.project_id}, token: {self.rest.token}, "
            f"signing_key: {self.rest.signing_key}, space_url: '{self.rest.base_url}', "
            "retry_backoff_secs: 0.05}\n"
        )

    async def inbound_call(self, from_: str = CALLER, to: str = NUMBER) -> CallHandle:
        assert self.net is not None
        call = await self.net.inbound_call(from_, to)
        assert call.webhook_status == 200 and call.twiml is not None and call.twiml.stream_url, call.twiml
        return TwilioHandle(call, self.rest)

    async def answer_outbound(self, to: str, answered_by: str = "human") -> CallHandle:
        assert self.net is not None
        seen = sum(1 for c in self.net.calls.values() if c.direction == "outbound-api")
        resource = await self.rest.wait_for_call(index=seen)
        assert resource.to == to
        return TwilioHandle(await self.net.answer_outbound(resource), self.rest)

    def dial_request(self) -> dict[str, Any]:
        dials = [r for r in self.rest.requests if r.path.endswith("/Calls.json") and r.method == "POST"]
        return dict(dials[-1].form)

    async def send_bad_signature(self) -> int:
        assert self.net is not None
        params = {"CallSid": "c-forged", "From": CALLER, "To": NUMBER, "CallStatus": "ringing"}
        url = self.net.public_url("/webhooks/signalwire/voice")
        status, _ = await self.net.post_webhook(url, params, signature="bm90IGEgc2lnbmF0dXJl")
        return status

    async def open_media(self, call_id: str) -> int | None:
        assert self.net is not None
        url = self.net.local_url(f"wss://{PUBLIC_HOST}/ws/signalwire/stream/{call_id}")
        return await _try_ws(self.net.session, url, {"Authorization": "Bearer guess"})

    def hangup_requests(self, handle: CallHandle) -> int:
        assert isinstance(handle, TwilioHandle)
        sid = handle.call.call_sid
        return sum(1 for r in self.rest.requests if r.path.endswith(f"/Calls/{sid}.json") and r.get("Status"))
