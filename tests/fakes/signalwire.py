"""A protocol-faithful fake SignalWire on loopback: the Twilio fake where the wire is Twilio's, SignalWire where not.

SignalWire's compatibility API is Twilio's wire with these differences (developer.signalwire.com
compatibility-api: rest/, cxml/voice/stream, guides/webhook-security), and only these are overridden:
- REST under `/api/laml/2010-04-01/Accounts/{project id}` with basic auth project id : API token;
- webhooks signed with the project's Signing Key (Twilio's algorithm, computed with twilio's
  `RequestValidator`, which the 2.0.4 SignalWire SDK builds on), sent as `X-SignalWire-Signature`
  and, on compatibility callbacks, `X-Twilio-Signature` as well;
- the media websocket upgrade carries `Authorization: Bearer <authBearerToken>` from the <Stream>,
  no signature;
- a call update with `Url` makes SignalWire fetch that cXML (signed) and follow it: a `<Dial>` ends
  the stream (the fake's transfer).
Media Streams messages, pacing, playback, marks and clear are the Twilio fake's.
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from tests.fakes.twilio import (
    API_VERSION,
    CallResource,
    FakeCall,
    FakeTwilio,
    FakeTwilioRest,
    parse_twiml,
)

API_ROOT = f"/api/laml/{API_VERSION}"

__all__: Sequence[str] = ("FakeSignalWire", "FakeSignalWireCall", "FakeSignalWireRest")


class FakeSignalWireRest(FakeTwilioRest):
    """The LaML REST API of one project (ids are UUIDs, the root is /api/laml)."""

    def __init__(self, project_id: str | None = None, token: str | None = None) -> None:
        super().__init__(project_id or _uuid(), token or "PT" + secrets.token_hex(24))
        self.api_root = API_ROOT
        self.signing_key = "PSK_" + secrets.token_hex(12)

    @property
    def project_id(self) -> str:
        return self.account_sid

    @property
    def token(self) -> str:
        return self.auth_token


def _uuid() -> str:
    raw = secrets.token_hex(16)
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"


class FakeSignalWire(FakeTwilio):
    """SignalWire's side of calls: Signing-Key-signed webhooks, cXML, bearer-token media streams."""

    def __init__(self, daemon_url: str, public_host: str, *, rest: FakeSignalWireRest) -> None:
        super().__init__(
            daemon_url, public_host, rest=rest, account_sid=rest.project_id, auth_token=rest.token
        )
        self.signing_key = rest.signing_key
        self.validator = RequestValidator(self.signing_key)  # SignalWire signs with the Signing Key

    async def post_webhook(
        self, public_url: str, params: dict[str, str], *, signature: str | None = "auto"
    ) -> tuple[int, str]:
        headers = {"User-Agent": "SignalWire-LaML", "Content-Type": "application/x-www-form-urlencoded"}
        if signature == "auto":
            signature = self.sign(public_url, params)
        if signature is not None:
            headers["X-SignalWire-Signature"] = signature
            headers["X-Twilio-Signature"] = signature
        async with self.session.post(self.local_url(public_url), data=params, headers=headers) as resp:
            return resp.status, await resp.text()

    async def inbound_call(  # type: ignore[override]
        self,
        from_: str = "+15551230001",
        to: str = "+15550001234",
        *,
        signature: str | None = "auto",
        connect: bool = True,
        continuous: bool = True,
    ) -> FakeSignalWireCall:
        call = FakeSignalWireCall(self, _uuid(), from_, to, "inbound", continuous=continuous)
        call.status_callback = self.public_url("/webhooks/signalwire/status")
        assert self.rest is not None
        self.rest.calls[call.call_sid] = CallResource(call.call_sid, to, from_, "inbound", status="ringing")
        await self._fetch_twiml(call, self.public_url("/webhooks/signalwire/voice"), "ringing", signature)
        if connect and call.twiml is not None and call.twiml.stream_url:
            await call.connect_media()
        return call

    async def answer_outbound(
        self, resource: CallResource | None = None, *, connect: bool = True, continuous: bool = True
    ) -> FakeSignalWireCall:
        if resource is None:
            assert self.rest is not None
            resource = await self.rest.wait_for_call()
        assert resource.url, f"call {resource.sid} has no Url"
        resource.status = "in-progress"
        call = FakeSignalWireCall(
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
        elif "Url" in fields and isinstance(call, FakeSignalWireCall):
            call.background(call.redirect(fields["Url"]))


class FakeSignalWireCall(FakeCall):
    """A compatibility media stream: Twilio's messages, opened with SignalWire's bearer token."""

    net: FakeSignalWire

    @property
    def bearer_token(self) -> str | None:
        if self.twiml is None:
            return None
        stream = ET.fromstring(self.twiml.raw).find("Connect/Stream")
        return None if stream is None else stream.get("authBearerToken")

    def handshake_headers(self, public_url: str, signature: str | None) -> dict[str, str]:
        """SignalWire signs no upgrade: it sends the <Stream authBearerToken> (`signature` overrides it)."""
        token = self.bearer_token if signature == "auto" else signature
        headers = {"User-Agent": "SignalWire-Stream"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def redirect(self, url: str) -> None:
        """SignalWire fetches the new cXML (signed); a <Dial> there ends the stream."""
        status, body = await self.net.post_webhook(url, self.net._call_params(self, "in-progress"))
        if status == 200:
            self.transferred_to = parse_twiml(body).dial
        await self.remote_end(None)
