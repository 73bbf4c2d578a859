"""A protocol-faithful fake Twilio on loopback: the REST API patterd calls, and callers that dial patterd.

Followed: twilio.com/docs/voice/api/call-resource, /docs/voice/api/recording,
/docs/phone-numbers/api/incomingphonenumber-resource, /docs/usage/twilios-response (error JSON),
/docs/usage/webhooks/voice-webhooks (voice webhook form fields), /docs/usage/webhooks/webhooks-security
(signed with the official `twilio.request_validator.RequestValidator`), /docs/voice/twiml/stream,
/docs/voice/media-streams/websocket-messages (connected, start, media, dtmf, mark, stop; playback of
media, mark echo after playback, clear drops the buffer and echoes pending marks),
/docs/voice/answering-machine-detection (AsyncAmd callback fields).

Two cooperating pieces: `FakeTwilioRest` (aiohttp server on 127.0.0.1:0) and `FakeTwilio`, the
phone network, which places inbound calls into the daemon, answers the outbound calls the daemon
created through the REST fake, and runs each call's Media Stream as a `FakeCall`.
The REST fake lives in `twilio_rest.py`, the caller in `twilio_call.py`; this module re-exports both.
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field

from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from tests.fakes.carrier_net import CarrierNet
from tests.fakes.twilio_call import FRAME_SECS, SILENCE, FakeCall, spoken_ulaw
from tests.fakes.twilio_rest import (
    API_VERSION,
    CallResource,
    FakeTwilioRest,
    RecordedRequest,
    _wait_until,
    basic_auth,
    new_sid,
)

# ====================================================================== TwiML and the phone network


@dataclass(frozen=True)
class Twiml:
    """What a TwiML answer asked for (the parts patterd uses)."""

    raw: str
    verbs: tuple[str, ...]
    stream_url: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    dial: str | None = None

    @property
    def rejected(self) -> bool:
        return "Reject" in self.verbs


def parse_twiml(text: str) -> Twiml:
    """Parse a `<Response>`; raises AssertionError for anything Twilio would refuse."""
    root = ET.fromstring(text)
    assert root.tag == "Response", f"TwiML root is <{root.tag}>, expected <Response>"
    verbs = tuple(child.tag for child in root)
    stream = root.find("Connect/Stream")
    url, params = None, {}
    if stream is not None:
        url = stream.get("url")
        assert url and url.startswith(("wss://", "ws://")), f"<Stream url={url!r}>: expected a wss:// URL"
        for param in stream.findall("Parameter"):
            params[param.get("name") or ""] = param.get("value") or ""
    dial = root.find("Dial")
    return Twiml(text, verbs, url, params, (dial.text or "").strip() if dial is not None else None)


class FakeTwilio(CarrierNet["FakeCall"]):
    """Twilio's side of calls with a patterd daemon: signed webhooks, TwiML, Media Streams callers."""

    def __init__(
        self,
        daemon_url: str,
        public_host: str,
        *,
        rest: FakeTwilioRest | None = None,
        account_sid: str | None = None,
        auth_token: str | None = None,
        public_scheme: str = "https",
    ) -> None:
        super().__init__(daemon_url, public_host, public_scheme=public_scheme)
        self.rest = rest
        self.account_sid = account_sid or (rest.account_sid if rest else new_sid("AC"))
        self.auth_token = auth_token or (rest.auth_token if rest else secrets.token_hex(16))
        self.validator = RequestValidator(self.auth_token)
        if rest is not None:
            rest.on_call_update = self._on_rest_update

    def sign(self, public_url: str, params: dict[str, str] | None) -> str:
        return str(self.validator.compute_signature(public_url, params or {}))

    async def post_webhook(
        self, public_url: str, params: dict[str, str], *, signature: str | None = "auto"
    ) -> tuple[int, str]:
        """POST form params to the daemon as Twilio would; `signature=None` omits the header."""
        headers = {"User-Agent": "TwilioProxy/1.1", "Content-Type": "application/x-www-form-urlencoded"}
        if signature == "auto":
            signature = self.sign(public_url, params)
        if signature is not None:
            headers["X-Twilio-Signature"] = signature
        async with self.session.post(self.local_url(public_url), data=params, headers=headers) as resp:
            return resp.status, await resp.text()

    def _call_params(self, call: FakeCall, status: str) -> dict[str, str]:
        return {
            "CallSid": call.call_sid,
            "AccountSid": self.account_sid,
            "From": call.from_,
            "To": call.to,
            "Caller": call.from_,
            "Called": call.to,
            "CallStatus": status,
            "Direction": call.direction,
            "ApiVersion": API_VERSION,
        }

    async def _fetch_twiml(
        self, call: FakeCall, public_url: str, status: str, signature: str | None
    ) -> FakeCall:
        call.webhook_status, body = await self.post_webhook(
            public_url, self._call_params(call, status), signature=signature
        )
        if call.webhook_status == 200:
            call.twiml = parse_twiml(body)
        self.calls[call.call_sid] = call
        return call

    async def inbound_call(
        self,
        from_: str = "+15551230001",
        to: str = "+15550001234",
        *,
        voice_path: str = "/webhooks/twilio/voice",
        signature: str | None = "auto",
        connect: bool = True,
        continuous: bool = True,
    ) -> FakeCall:
        """Ring the daemon: POST the voice webhook; if it answers <Connect><Stream>, open the stream."""
        call = FakeCall(self, new_sid("CA"), from_, to, "inbound", continuous=continuous)
        call.status_callback = self.public_url("/webhooks/twilio/status")
        if self.rest is not None:
            self.rest.calls[call.call_sid] = CallResource(
                call.call_sid, to, from_, "inbound", status="ringing"
            )
        await self._fetch_twiml(call, self.public_url(voice_path), "ringing", signature)
        if connect and call.twiml is not None and call.twiml.stream_url:
            await call.connect_media()
        return call

    async def answer_outbound(
        self, resource: CallResource | None = None, *, connect: bool = True, continuous: bool = True
    ) -> FakeCall:
        """The callee picks up a call the daemon created via Calls.json: fetch its Url, open the stream."""
        if resource is None:
            assert self.rest is not None, "answer_outbound needs the FakeTwilioRest the daemon dials through"
            resource = await self.rest.wait_for_call()
        assert resource.url, f"call {resource.sid} has no Url to fetch TwiML from"
        resource.status = "in-progress"
        call = FakeCall(
            self, resource.sid, resource.from_, resource.to, "outbound-api", continuous=continuous
        )
        call.status_callback = resource.status_callback
        call.amd_callback = resource.amd_callback
        await self._fetch_twiml(call, resource.url, "in-progress", "auto")
        if connect and call.twiml is not None and call.twiml.stream_url:
            await call.connect_media()
        return call

    def _on_rest_update(self, resource: CallResource, form: list[tuple[str, str]]) -> None:
        call = self.calls.get(resource.sid)
        if call is None:
            return
        fields = dict(form)
        if fields.get("Status") in ("completed", "canceled"):
            call.background(call.remote_end(fields["Status"]))
        elif "Twiml" in fields:  # new TwiML replaces <Connect><Stream>: the stream stops
            call.transferred_to = parse_twiml(fields["Twiml"]).dial
            call.background(call.remote_end(None))


__all__: Sequence[str] = (
    "API_VERSION",
    "FRAME_SECS",
    "SILENCE",
    "CallResource",
    "FakeCall",
    "FakeTwilio",
    "FakeTwilioRest",
    "RecordedRequest",
    "Twiml",
    "_wait_until",
    "basic_auth",
    "new_sid",
    "parse_twiml",
    "spoken_ulaw",
)
