"""A protocol-faithful fake Vonage on loopback: callers that dial patterd (its REST API: `vonage_rest.py`).

Followed: Vonage's WebSockets guide and signed-webhooks guide, vonage-voice 1.5.1 (`models/ncco.py`,
`models/connect_endpoints.py`: the NCCO must validate as the SDK's `Connect`/`WebsocketEndpoint`) and
vonage-jwt 1.1.5 (`verify_signature`). Webhooks are JSON POSTs carrying `Authorization: Bearer <HS256 JWT>`
signed with the signature secret, claims iat, jti, iss "Vonage", payload_hash (hex SHA-256 of the body),
api_key, application_id. The websocket: a TEXT `websocket:connected` {content-type, ...the NCCO endpoint's
headers}, then BINARY 640-byte frames of L16 16 kHz both ways at real-time pace; DTMF as TEXT
`websocket:dtmf` {digit, duration}. Vonage buffers the audio it receives and plays it in real time; TEXT
commands from the app: `{"action": "notify", "payload": {...}}` (answered `websocket:notify` with that
payload once the audio before it played) and `{"action": "clear"}` (the buffer dropped, answered
`websocket:cleared`; the notifies it dropped are never answered). It ends the stream by closing the socket.

Caller pacing and playback are the Twilio fake's (`tests.fakes.twilio.FakeCall`), on μ-law: what the caller
heard (`played`) is kept as 8 kHz μ-law so the scenario verbs count bytes the same way for every carrier.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
import warnings
from collections.abc import Sequence
from typing import Any

import aiohttp
import jwt
from vonage_voice.models.connect_endpoints import WebsocketEndpoint  # type: ignore[import-untyped]
from vonage_voice.models.ncco import Connect  # type: ignore[import-untyped]

from tests.fakes.carrier_net import CarrierNet
from tests.fakes.twilio import FakeCall
from tests.fakes.vonage_rest import FakeVonageRest, VonageCallResource, new_uuid

with warnings.catch_warnings():  # stdlib on 3.11/3.12 (deprecated), audioop-lts on 3.13+
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

L16_FRAME = 640  # 20 ms of 16-bit samples at 16 kHz

__all__: Sequence[str] = (
    "FakeVonage",
    "FakeVonageCall",
    "FakeVonageRest",
    "VonageCallResource",
    "parse_ncco",
)


def parse_ncco(body: str) -> list[dict[str, Any]]:
    """An answer NCCO; AssertionError (or the SDK's ValidationError) for what Vonage would refuse."""
    ncco = json.loads(body)
    assert isinstance(ncco, list), f"an NCCO is a JSON array, got {type(ncco).__name__}"
    for action in ncco:
        assert isinstance(action, dict) and "action" in action, action
        if action["action"] != "connect":
            continue
        endpoints = action.get("endpoint")
        assert isinstance(endpoints, list) and len(endpoints) == 1, endpoints
        endpoint = dict(endpoints[0])
        if endpoint.get("type") == "websocket":  # the SDK's model names content-type `contentType`
            endpoint["contentType"] = endpoint.pop("content-type", None)
            assert endpoint["contentType"], "a websocket endpoint needs its content-type"
            WebsocketEndpoint.model_validate(endpoint)
        else:
            fields = {k: v for k, v in action.items() if k != "from"}
            Connect.model_validate({**fields, "from_": action.get("from")})
    return ncco


def websocket_endpoint(ncco: list[dict[str, Any]]) -> dict[str, Any] | None:
    for action in ncco:
        if action.get("action") == "connect":
            for endpoint in action.get("endpoint", []):
                if endpoint.get("type") == "websocket":
                    return dict(endpoint)
    return None


class FakeVonage(CarrierNet["FakeVonageCall"]):
    """Vonage's side of calls with a patterd daemon: signed JSON webhooks, NCCO, websocket callers."""

    def __init__(self, daemon_url: str, public_host: str, *, rest: FakeVonageRest) -> None:
        super().__init__(daemon_url, public_host)
        self.rest = rest
        self.account_sid = rest.application_id  # the name FakeCall reads
        rest.on_hangup = self._on_hangup
        rest.on_transfer = self._on_transfer

    def sign(self, body: bytes, *, secret: str | None = None, **claims: Any) -> str:
        """The signed-webhook JWT Vonage puts in Authorization: Bearer (HS256, signature secret)."""
        payload = {
            "iat": int(time.time()),
            "jti": new_uuid(),
            "iss": "Vonage",
            "payload_hash": hashlib.sha256(body).hexdigest(),
            "api_key": self.rest.api_key,
            "application_id": self.rest.application_id,
            **claims,
        }
        return jwt.encode(payload, secret or self.rest.signature_secret, algorithm="HS256")

    async def post_webhook(
        self, public_url: str, fields: dict[str, Any], *, token: str | None = "auto"
    ) -> tuple[int, str]:
        """POST a JSON webhook to the daemon as Vonage does; `token=None` sends it unsigned."""
        body = json.dumps(fields).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "Vonage"}
        if token == "auto":
            token = self.sign(body)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.session.post(self.local_url(public_url), data=body, headers=headers) as resp:
            return resp.status, await resp.text()

    def event(self, call: FakeVonageCall, status: str, **extra: Any) -> dict[str, Any]:
        return {
            "uuid": call.call_sid,
            "conversation_uuid": call.conversation_uuid,
            "status": status,
            "direction": call.direction,
            "from": call.from_.lstrip("+"),
            "to": call.to.lstrip("+"),
            "timestamp": "2026-11-29T22:00:00.000Z",
            **extra,
        }

    async def _answer(self, call: FakeVonageCall, answer_url: str, connect: bool) -> FakeVonageCall:
        fields = {
            "uuid": call.call_sid,
            "conversation_uuid": call.conversation_uuid,
            "from": call.from_.lstrip("+"),
            "to": call.to.lstrip("+"),
            "region_url": "https://api-us-3.vonage.com",
        }
        call.webhook_status, body = await self.post_webhook(answer_url, fields)
        if call.webhook_status == 200:
            call.ncco = parse_ncco(body)
        self.calls[call.call_sid] = call
        if connect and call.endpoint is not None:
            await call.connect_media()
        return call

    async def inbound_call(
        self, from_: str = "+15551230001", to: str = "+15550001234", *, connect: bool = True
    ) -> FakeVonageCall:
        """Ring the daemon: POST the answer webhook; if the NCCO connects a websocket, open it."""
        call = FakeVonageCall(self, new_uuid(), from_, to, "inbound")
        call.event_url = self.public_url("/webhooks/vonage/event")  # the application's event URL
        self.rest.calls[call.call_sid] = VonageCallResource(call.call_sid, to, from_, "inbound", "answered")
        return await self._answer(call, self.public_url("/webhooks/vonage/voice"), connect)

    async def answer_outbound(self, resource: VonageCallResource, *, connect: bool = True) -> FakeVonageCall:
        """The callee picks up a call the daemon created: ringing, answered, then the answer webhook."""
        assert resource.answer_url
        call = FakeVonageCall(self, resource.uuid, resource.from_, resource.to, "outbound")
        call.event_url = resource.event_url
        if call.event_url:
            await self.post_webhook(call.event_url, self.event(call, "ringing"))
            await self.post_webhook(call.event_url, self.event(call, "answered"))
        resource.status = "answered"
        return await self._answer(call, resource.answer_url, connect)

    def _on_hangup(self, resource: VonageCallResource) -> None:
        call = self.calls.get(resource.uuid)
        if call is not None:
            call.background(call.remote_end("completed"))

    def _on_transfer(self, resource: VonageCallResource, ncco: list[dict[str, Any]]) -> None:
        call = self.calls.get(resource.uuid)
        if call is not None:
            endpoint = ncco[0].get("endpoint", [{}])[0]
            call.transferred_to = endpoint.get("number")
            call.background(call.close())


class FakeVonageCall(FakeCall):
    """One call's websocket as Vonage runs it (pacing and playback inherited from the Twilio fake)."""

    def __init__(self, net: FakeVonage, call_uuid: str, from_: str, to: str, direction: str) -> None:
        super().__init__(net, call_uuid, from_, to, direction)  # type: ignore[arg-type]
        self.vonage = net
        self.conversation_uuid = "CON-" + new_uuid()
        self.event_url: str | None = None
        self.ncco: list[dict[str, Any]] | None = None
        self.binary_sizes: list[int] = []
        self.cleared_notifies: list[dict[str, Any]] = []  # dropped by a clear: never answered
        self._notify_payloads: dict[str, dict[str, Any]] = {}  # pending key → the payload to echo
        self._down_state: Any = None
        self._up_state: Any = None

    @property
    def endpoint(self) -> dict[str, Any] | None:
        return websocket_endpoint(self.ncco) if self.ncco is not None else None

    @property
    def headers(self) -> dict[str, str]:
        endpoint = self.endpoint
        return dict(endpoint.get("headers") or {}) if endpoint else {}

    async def connect_media(self, *, url: str | None = None, headers: dict[str, str] | None = None) -> None:  # type: ignore[override]
        """Open the websocket and send `websocket:connected` with the endpoint's headers."""
        endpoint = self.endpoint
        assert endpoint is not None
        try:
            self._ws = await self.vonage.session.ws_connect(self.vonage.local_url(url or endpoint["uri"]))
        except aiohttp.WSServerHandshakeError as exc:
            self.handshake_status = exc.status
            self.closed = True
            return
        first = {"event": "websocket:connected", "content-type": endpoint.get("content-type")}
        first.update(self.headers if headers is None else headers)
        await self._send(first)
        self._t0 = self._loop.time()
        self.background(self._reader())
        self._timers = [asyncio.ensure_future(self._player()), asyncio.ensure_future(self._pump())]

    async def _send(self, message: dict[str, Any], *, sequenced: bool = True) -> None:
        if self._ws is None or self._ws.closed:
            return
        async with self._send_lock:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self._ws.send_str(json.dumps(message))

    async def send_bytes(self, data: bytes) -> None:
        assert self._ws is not None
        async with self._send_lock:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self._ws.send_bytes(data)

    async def send_dtmf(self, digit: str) -> None:
        await self._send({"event": "websocket:dtmf", "digit": digit, "duration": 260})

    async def _end_stream(self) -> None:
        """Vonage ends a stream by closing its socket (no message)."""

    async def remote_end(self, status: str | None) -> None:
        """The call ended over REST (or at the far end): socket closed, then the event webhook."""
        await self.close()
        if status is not None and self.event_url:
            with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                await self.vonage.post_webhook(self.event_url, self.vonage.event(self, status, duration="3"))

    def _to_l16(self, ulaw: bytes) -> bytes:
        pcm, self._up_state = audioop.ratecv(audioop.ulaw2lin(ulaw, 2), 2, 1, 8000, 16000, self._up_state)
        return pcm.ljust(L16_FRAME, b"\0")[:L16_FRAME]  # ratecv's first frame can be a sample short

    async def _send_frame(self, tick: int, frame: bytes) -> None:
        """Caller audio out: a 640-byte BINARY frame of 16 kHz L16."""
        await self.send_bytes(self._to_l16(frame))

    async def _reader(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            now = self._loop.time()
            if msg.type == aiohttp.WSMsgType.TEXT:
                await self._command(now, msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                self._audio(now, msg.data)
            else:
                self.violations.append(f"unexpected frame from the daemon ({msg.type})")
            await self._notify()
        self.close_code = self._ws.close_code
        self.closed = True
        self._audio_ready.set()
        await self._notify()

    def _audio(self, now: float, data: bytes) -> None:
        self.binary_sizes.append(len(data))
        if len(data) != L16_FRAME:
            self.violations.append(f"audio frame of {len(data)} bytes, expected {L16_FRAME}")
        pcm, self._down_state = audioop.ratecv(data, 2, 1, 16000, 8000, self._down_state)
        ulaw = audioop.lin2ulaw(pcm, 2)
        self.received.append((now, {"event": "media", "bytes": len(data)}))
        self.media_frame_sizes.append(len(ulaw))
        self.media_times.append(now)
        if self.first_audio_at is None:
            self.first_audio_at = now
        self._buffer += ulaw
        self._queued_total += len(ulaw)
        self._audio_ready.set()

    async def _command(self, now: float, text: str) -> None:
        """`notify` and `clear`, the two commands Vonage takes on the socket; anything else is a violation."""
        try:
            data = json.loads(text)
            action = data["action"]
        except (ValueError, KeyError, TypeError) as exc:
            self.violations.append(f"malformed command from the daemon ({exc}): {text[:200]}")
            return
        self.received.append((now, data))
        if action == "notify":
            payload = data.get("payload")
            if not isinstance(payload, dict):
                self.violations.append(f"notify without an object payload: {text[:200]}")
                return
            key = json.dumps(payload, sort_keys=True)
            self._notify_payloads[key] = payload
            if self._played_total >= self._queued_total:
                await self._echo_mark(key)
            else:
                self._pending_marks.append((self._queued_total, key))
        elif action == "clear":
            self.clears.append(now)
            self._buffer.clear()
            self._queued_total = self._played_total
            self.cleared_notifies += [self._notify_payloads.pop(key) for _, key in self._pending_marks]
            self._pending_marks.clear()  # Vonage never answers them
            await self._send({"event": "websocket:cleared"})
        else:
            self.violations.append(f"unknown command from the daemon: {text[:200]}")

    async def _echo_mark(self, name: str) -> None:
        """Playback passed a notify: answer it with its payload."""
        payload = self._notify_payloads.pop(name, {})
        self.marks_echoed.append((self._loop.time(), str(payload.get("patterd_mark", name))))
        await self._send({"event": "websocket:notify", "payload": payload})
