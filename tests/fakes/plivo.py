"""A protocol-faithful fake Plivo on loopback: callers that dial patterd (its REST API: `plivo_rest.py`).

Followed: plivo-python 4.63 (`rest/client.py`: /v1/Account/{auth_id}/..., JSON bodies, basic auth;
`resources/calls.py`: Call create/delete/update(transfer)/record, Request cancel; `utils/signature_v3.py`:
webhooks signed with the official `get_signature_v3`/`construct_post_url`; `xml/streamElement.py`:
the <Stream> attributes), plivo-stream-sdk-java (`event/*`, `message/*`) and Plivo's Audio Streaming
reference: `start` {sequenceNumber, start: {callId, streamId, accountId, tracks, mediaFormat},
extra_headers}, `media`, `dtmf`; from the app `playAudio`, `checkpoint`, `clearAudio`; Plivo answers a
checkpoint with `playedStream` once the audio before it played and a clearAudio with `clearedAudio`
(the dropped checkpoints are never answered). The stream ends by closing the socket.

Caller pacing and playback are the Twilio fake's (`tests.fakes.twilio.FakeCall`): only the messages differ.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from plivo.utils.signature_v3 import construct_post_url, get_signature_v3  # type: ignore[import-untyped]

from tests.fakes.carrier_net import CarrierNet
from tests.fakes.plivo_rest import FakePlivoRest, PlivoCallResource, new_uuid
from tests.fakes.twilio import FakeCall, basic_auth

STREAM_CONTENT_TYPE = "audio/x-mulaw;rate=8000"

__all__: Sequence[str] = (
    "FakePlivo",
    "FakePlivoCall",
    "FakePlivoRest",
    "PlivoCallResource",
    "PlivoXml",
    "basic_auth",
    "new_uuid",
)


# ====================================================================== XML and the phone network


@dataclass(frozen=True)
class PlivoXml:
    """What a Plivo XML answer asked for (the parts patterd uses)."""

    raw: str
    elements: tuple[str, ...]
    stream_url: str | None = None
    stream_attributes: dict[str, str] = field(default_factory=dict)
    dial: str | None = None
    hangup_reason: str | None = None


def parse_xml(text: str) -> PlivoXml:
    """Parse a `<Response>`; AssertionError for what Plivo would refuse."""
    root = ET.fromstring(text)
    assert root.tag == "Response", f"Plivo XML root is <{root.tag}>, expected <Response>"
    stream = root.find("Stream")
    url, attributes = None, {}
    if stream is not None:
        url = (stream.text or "").strip()
        attributes = dict(stream.attrib)
        assert url.startswith(("wss://", "ws://")), f"<Stream>{url!r}: expected a wss:// URL as its text"
        headers = attributes.get("extraHeaders", "")
        assert len(headers) <= 512 and all(c.isalnum() or c in ",=" for c in headers), headers
    dial = root.find("Dial/Number")
    hangup = root.find("Hangup")
    return PlivoXml(
        text,
        tuple(child.tag for child in root),
        url,
        attributes,
        (dial.text or "").strip() if dial is not None else None,
        hangup.get("reason") if hangup is not None else None,
    )


class FakePlivo(CarrierNet["FakePlivoCall"]):
    """Plivo's side of calls with a patterd daemon: V3-signed webhooks, XML, Audio Streaming callers."""

    def __init__(self, daemon_url: str, public_host: str, *, rest: FakePlivoRest) -> None:
        super().__init__(daemon_url, public_host)
        self.rest = rest
        self.account_sid = rest.auth_id  # the name FakeCall reads
        self.auth_token = rest.auth_token
        rest.on_hangup = self._on_hangup
        rest.on_transfer = self._on_transfer

    def sign(self, public_url: str, params: dict[str, str], nonce: str) -> str:
        """X-Plivo-Signature-V3 as Plivo computes it (the official SDK's functions)."""
        signed = construct_post_url(public_url, dict(params)).decode("utf-8")
        raw = get_signature_v3(self.auth_token.encode(), signed, nonce.encode())
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    async def post_webhook(
        self, public_url: str, params: dict[str, str], *, signature: str | None = "auto"
    ) -> tuple[int, str]:
        """POST form params to the daemon as Plivo does; `signature=None` omits the headers."""
        nonce = str(secrets.randbelow(10**20))
        headers = {"User-Agent": "PlivoHTTP/1.0", "Content-Type": "application/x-www-form-urlencoded"}
        if signature == "auto":
            signature = self.sign(public_url, params, nonce)
        if signature is not None:
            headers["X-Plivo-Signature-V3"] = signature
            headers["X-Plivo-Signature-V3-Nonce"] = nonce
        async with self.session.post(self.local_url(public_url), data=params, headers=headers) as resp:
            return resp.status, await resp.text()

    def call_params(self, call: FakePlivoCall, status: str, event: str = "StartApp") -> dict[str, str]:
        params = {
            "CallUUID": call.call_sid,
            "From": call.from_.lstrip("+"),
            "To": call.to.lstrip("+"),
            "Direction": call.direction,
            "CallStatus": status,
            "Event": event,
            "CallerName": "",
        }
        if call.request_uuid:
            params["RequestUUID"] = call.request_uuid
        return params

    async def _answer(self, call: FakePlivoCall, answer_url: str, connect: bool) -> FakePlivoCall:
        call.webhook_status, body = await self.post_webhook(answer_url, self.call_params(call, "in-progress"))
        if call.webhook_status == 200:
            call.xml = parse_xml(body)
        self.calls[call.call_sid] = call
        if connect and call.xml is not None and call.xml.stream_url:
            await call.connect_media()
        return call

    async def inbound_call(
        self, from_: str = "+15551230001", to: str = "+15550001234", *, connect: bool = True
    ) -> FakePlivoCall:
        """Ring the daemon: POST the answer_url; if it answers <Stream>, open the audio stream."""
        call = FakePlivoCall(self, new_uuid(), from_, to, "inbound")
        resource = PlivoCallResource("", to, from_, "inbound", call_uuid=call.call_sid, status="in-progress")
        self.rest.calls[call.call_sid] = resource
        return await self._answer(call, self.public_url("/webhooks/plivo/voice"), connect)

    async def answer_outbound(self, resource: PlivoCallResource, *, connect: bool = True) -> FakePlivoCall:
        """The callee picks up a call the daemon created: ring_url, then answer_url, then the stream."""
        assert resource.answer_url
        call = FakePlivoCall(self, new_uuid(), resource.from_, resource.to, "outbound")
        call.request_uuid = resource.request_uuid
        call.hangup_url = resource.hangup_url
        call.machine_detection_url = resource.machine_detection_url
        if resource.ring_url:
            await self.post_webhook(resource.ring_url, self.call_params(call, "ringing", "Ring"))
        resource.call_uuid, resource.status = call.call_sid, "in-progress"
        self.rest.calls[call.call_sid] = resource
        return await self._answer(call, resource.answer_url, connect)

    def _on_hangup(self, resource: PlivoCallResource) -> None:
        call = self.calls.get(resource.call_uuid)
        if call is not None:
            call.background(call.remote_end(resource.status))

    def _on_transfer(self, resource: PlivoCallResource, aleg_url: str) -> None:
        call = self.calls.get(resource.call_uuid)
        if call is not None:
            call.background(call.transfer(aleg_url))


class FakePlivoCall(FakeCall):
    """One call's audio stream as Plivo runs it (pacing and playback inherited from the Twilio fake)."""

    def __init__(self, net: FakePlivo, call_uuid: str, from_: str, to: str, direction: str) -> None:
        super().__init__(net, call_uuid, from_, to, direction)  # type: ignore[arg-type]
        self.plivo = net
        self.stream_sid = new_uuid()
        self.request_uuid = ""
        self.hangup_url: str | None = None
        self.machine_detection_url: str | None = None
        self.xml: PlivoXml | None = None
        self.cleared_checkpoints: list[str] = []  # dropped by a clearAudio: never answered

    @property
    def extra_headers(self) -> str:
        return self.xml.stream_attributes.get("extraHeaders", "") if self.xml else ""

    async def connect_media(self, *, url: str | None = None, extra_headers: str | None = None) -> None:  # type: ignore[override]
        """Open the <Stream> websocket and send `start` (Plivo's media begins at once)."""
        assert self.xml is not None and self.xml.stream_url
        try:
            self._ws = await self.plivo.session.ws_connect(
                self.plivo.local_url(url or self.xml.stream_url), headers={"User-Agent": "Plivo-Stream"}
            )
        except aiohttp.WSServerHandshakeError as exc:
            self.handshake_status = exc.status
            self.closed = True
            return
        headers = self.extra_headers if extra_headers is None else extra_headers
        await self._send(
            {
                "event": "start",
                "start": {
                    "callId": self.call_sid,
                    "streamId": self.stream_sid,
                    "accountId": self.plivo.account_sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
                },
                "extra_headers": headers,
            }
        )
        self._t0 = self._loop.time()
        self.background(self._reader())
        self._timers = [asyncio.ensure_future(self._player()), asyncio.ensure_future(self._pump())]

    async def _send(self, message: dict[str, Any], *, sequenced: bool = True) -> None:
        if self._ws is None or self._ws.closed:
            return
        if sequenced:
            self._sequence += 1
            message = {**message, "sequenceNumber": self._sequence}  # a number on Plivo's wire
        async with self._send_lock:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self._ws.send_str(json.dumps(message))

    async def send_dtmf(self, digit: str) -> None:
        await self._send(
            {
                "event": "dtmf",
                "streamId": self.stream_sid,
                "dtmf": {"digit": digit, "track": "inbound"},
                "extra_headers": self.extra_headers,
            }
        )

    async def _end_stream(self) -> None:
        """Plivo ends a stream by closing its socket (no `stop` message)."""

    async def remote_end(self, status: str | None) -> None:
        """The call ended over REST (or at the far end): socket closed, then the hangup_url callback."""
        await self.close()
        if status is not None and self.hangup_url:
            with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                await self.post_hangup(status)

    async def post_hangup(self, status: str = "completed", *, duration_secs: int = 1) -> int:
        assert self.hangup_url, "this call has no hangup_url"
        params = self.plivo.call_params(self, status, "Hangup")
        params.update(
            {
                "Duration": str(duration_secs),
                "BillDuration": str(duration_secs),
                "HangupCause": "NORMAL_CLEARING",
            }
        )
        code, _ = await self.plivo.post_webhook(self.hangup_url, params)
        return code

    async def post_machine_detection(self, machine: bool) -> int:
        """Asynchronous machine detection's callback (Event=MachineDetection, Machine=true|false)."""
        assert self.machine_detection_url, "this call asked for no machine detection"
        params = self.plivo.call_params(self, "in-progress", "MachineDetection")
        params.update({"Machine": "true" if machine else "false", "IfMachine": "continue"})
        params.update({"ALegRequestUUID": self.request_uuid, "ALegUUID": self.call_sid})
        code, _ = await self.plivo.post_webhook(self.machine_detection_url, params)
        return code

    async def transfer(self, aleg_url: str) -> None:
        """POST Call/ with aleg_url: Plivo fetches that XML, which ends the stream and dials."""
        status, body = await self.plivo.post_webhook(aleg_url, self.plivo.call_params(self, "in-progress"))
        if status == 200:
            self.transferred_to = parse_xml(body).dial
        await self.close()

    async def _send_frame(self, tick: int, frame: bytes) -> None:
        """Caller audio out: a Plivo `media` message (with the call's extra_headers)."""
        await self._send(
            {
                "event": "media",
                "streamId": self.stream_sid,
                "media": {
                    "track": "inbound",
                    "timestamp": str(int(self._t0 * 1000) + tick * 20),
                    "chunk": tick,
                    "payload": base64.b64encode(frame).decode(),
                },
                "extra_headers": self.extra_headers,
            }
        )

    async def _reader(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                self.violations.append(f"binary frame from the daemon ({msg.type})")
                continue
            now = self._loop.time()
            try:
                data = json.loads(msg.data)
                event = data["event"]
                if event == "playAudio":
                    media = data["media"]
                    payload = base64.b64decode(media["payload"], validate=True)
                    if (media.get("contentType"), media.get("sampleRate")) != ("audio/x-mulaw", 8000):
                        self.violations.append(
                            f"playAudio format {media.get('contentType')}@{media.get('sampleRate')}"
                        )
            except (ValueError, KeyError, TypeError) as exc:
                self.violations.append(f"malformed message from the daemon ({exc}): {msg.data[:200]}")
                continue
            self.received.append((now, data))
            if data.get("streamId", self.stream_sid if event == "playAudio" else None) != self.stream_sid:
                self.violations.append(
                    f"{event} for stream {data.get('streamId')!r}, expected {self.stream_sid!r}"
                )
            if event == "playAudio":
                self.media_frame_sizes.append(len(payload))
                self.media_times.append(now)
                if self.first_audio_at is None:
                    self.first_audio_at = now
                self._buffer += payload
                self._queued_total += len(payload)
                self._audio_ready.set()
            elif event == "checkpoint":
                name = str(data.get("name", ""))
                if self._played_total >= self._queued_total:
                    await self._echo_mark(name)
                else:
                    self._pending_marks.append((self._queued_total, name))
            elif event == "clearAudio":
                self.clears.append(now)
                self._buffer.clear()
                self._queued_total = self._played_total
                self.cleared_checkpoints += [name for _, name in self._pending_marks]
                self._pending_marks.clear()  # Plivo never answers them
                await self._send({"event": "clearedAudio", "streamId": self.stream_sid})
            else:
                self.violations.append(f"unexpected message from the daemon: {msg.data[:200]}")
            await self._notify()
        self.close_code = self._ws.close_code
        self.closed = True
        self._audio_ready.set()
        await self._notify()

    async def _echo_mark(self, name: str) -> None:
        self.marks_echoed.append((self._loop.time(), name))
        await self._send({"event": "playedStream", "streamId": self.stream_sid, "name": name})
