"""Vonage Voice wire formats, sans-I/O: the NCCOs we answer with and the websocket media codec.

Checked against the official SDK (vonage-voice 1.5.1): `models/ncco.py` (`Connect` with `endpoint`),
`models/connect_endpoints.py` (`WebsocketEndpoint`: `type: websocket`, `uri`, `content-type` — the
model's alias — one of `audio/l16;rate=8000|16000|24000`, `headers`; `PhoneEndpoint`: `type: phone`,
`number`) and `voice.py` (transfer body `{"action": "transfer", "destination": {"type": "ncco", "ncco":
[...]}}`); and Vonage's WebSockets guide: the first message is TEXT JSON `{"event":
"websocket:connected", "content-type": "audio/l16;rate=16000", ...the endpoint's headers at the top
level}`, then BINARY frames of 16-bit little-endian linear PCM both ways, 20 ms each (640 bytes at
16 kHz); a key press arrives as TEXT `{"event": "websocket:dtmf", "digit": "5", "duration": 260}`.
Vonage buffers the audio we send and plays it in real time. Two TEXT commands manage that buffer:
`{"action": "notify", "payload": {...}}`, answered `{"event": "websocket:notify", "payload": {...}}`
once the audio sent before it has played (our marks), and `{"action": "clear"}`, which drops the
buffer and is answered `{"event": "websocket:cleared"}` (the notifies it dropped are never answered).
Vonage ends the stream by closing the socket.

Audio inside patterd is 8 kHz μ-law: the codec transcodes with the zero-hold FIR of
`protocols.resample` (2 ms of filter delay, no audio held back), so every 160-byte μ-law frame
becomes exactly one 640-byte L16 frame and every 640-byte L16 frame one 160-byte μ-law frame.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from patterd.lazy import lazy_import
from patterd.protocols import frames
from patterd.protocols.audio import pcm16_to_ulaw, ulaw_to_pcm16
from patterd.protocols.events import CallerAudio, CallerDtmf, MarkPlayed, MediaEvent, StreamStarted
from patterd.protocols.media_codec import Notice

if TYPE_CHECKING:
    from patterd.protocols import resample
else:  # numpy: imported by the first call's codec, not when the carrier's routes are mounted (start-up, issue 14)
    resample = lazy_import("patterd.protocols.resample")

CARRIER = "Vonage"
SAMPLE_RATE = 16000
CONTENT_TYPE = f"audio/l16;rate={SAMPLE_RATE}"
FRAME_BYTES = SAMPLE_RATE * 2 * 20 // 1000  # 640: one 20 ms frame of 16-bit samples
ULAW_RATE = 8000
# The header carrying the carrier's call uuid back to us in `websocket:connected` (the uuid of the leg
# the answer webhook named; Vonage's own first message carries no call id).
UUID_HEADER = "vonage_uuid"
MARK_KEY = "patterd_mark"  # our key in a notify payload (Vonage echoes the payload as it got it)
CLEAR_MESSAGE = '{"action":"clear"}'


class VonageProtocolError(frames.BadFrame):
    """A websocket frame that breaks Vonage's documented shape (`reason` says how)."""


# ------------------------------------------------------------------ NCCO


def connect_websocket(uri: str, headers: Mapping[str, str]) -> list[dict[str, Any]]:
    """The answer NCCO: connect the call to our websocket, L16 at 16 kHz, `headers` echoed back to us."""
    endpoint = {"type": "websocket", "uri": uri, "content-type": CONTENT_TYPE, "headers": dict(headers)}
    return [{"action": "connect", "endpoint": [endpoint]}]


def connect_phone(number: str, from_: str | None = None) -> list[dict[str, Any]]:
    """A transfer NCCO: connect the caller to a phone number (E.164 digits, no `+`)."""
    action: dict[str, Any] = {
        "action": "connect",
        "endpoint": [{"type": "phone", "number": number.lstrip("+")}],
    }
    if from_:
        action["from"] = from_.lstrip("+")
    return [action]


def refuse() -> list[dict[str, Any]]:
    """An NCCO that ends the call at once (an empty NCCO: Vonage hangs up when it runs out of actions)."""
    return []


# ------------------------------------------------------------------ websocket: from Vonage


def _connected(msg: Mapping[str, Any]) -> StreamStarted:
    content_type = msg.get("content-type")
    if content_type != CONTENT_TYPE:
        raise VonageProtocolError(
            f"Vonage websocket content-type {content_type!r:.60}: expected {CONTENT_TYPE}"
        )
    # Every other top-level string is one of the NCCO endpoint's headers.
    headers = {k: v for k, v in msg.items() if k not in ("event", "content-type") and isinstance(v, str)}
    uuid = headers.get(UUID_HEADER, "")
    return StreamStarted(stream_id=uuid, carrier_call_id=uuid, parameters=headers)


@dataclass(frozen=True, slots=True)
class Cleared:
    """Vonage's `websocket:cleared`: the buffer is empty, and its notifies will never be answered."""


def parse_text(frame: str | bytes) -> MediaEvent | Cleared | Notice:
    """One TEXT frame from Vonage → an event, Cleared or a Notice; raises VonageProtocolError."""
    try:
        msg = frames.load_object(frame, CARRIER)
    except frames.BadFrame as exc:
        raise VonageProtocolError(str(exc), exc.reason) from None
    event = msg.get("event")
    if not isinstance(event, str):
        raise VonageProtocolError(f"Vonage text frame without an 'event' string: {frame!r:.80}")
    if event == "websocket:connected":
        return _connected(msg)
    if event == "websocket:dtmf":
        try:
            return CallerDtmf(frames.dtmf_digit(msg.get("digit"), CARRIER))
        except frames.BadFrame as exc:
            raise VonageProtocolError(str(exc), exc.reason) from None
    if event == "websocket:notify":
        payload = msg.get("payload")
        name = payload.get(MARK_KEY) if isinstance(payload, dict) else None
        if not isinstance(name, str):
            raise VonageProtocolError(f"Vonage notify without our mark in its payload: {payload!r:.80}")
        return MarkPlayed(name)
    if event == "websocket:cleared":
        return Cleared()
    if event.startswith("websocket:"):  # the documented family grows: say so (rate-limited), drop nothing
        return Notice("vonage_websocket_event", {"event": event[:60]})
    raise VonageProtocolError(f"unknown Vonage websocket event {event!r:.60}", "unknown_event")


def notify_message(name: str) -> str:
    """A `notify` command: Vonage answers `websocket:notify` with this payload once what came before played."""
    return json.dumps({"action": "notify", "payload": {MARK_KEY: name}})


@dataclass
class VonageCodec:
    """One call's Vonage websocket seen from our side (a MediaCodec): transcoding state, headers, notifies."""

    started: bool = False
    parameters: dict[str, str] = field(default_factory=dict)
    marks_outstanding: list[str] = field(default_factory=list)
    _down: resample.FirResampler = field(
        default_factory=lambda: resample.FirResampler(SAMPLE_RATE, ULAW_RATE)
    )
    _up: resample.FirResampler = field(default_factory=lambda: resample.FirResampler(ULAW_RATE, SAMPLE_RATE))

    def receive(self, frame: str | bytes) -> Sequence[MediaEvent | Notice]:
        """A TEXT frame is an event; a BINARY frame is caller audio (L16 16 kHz → μ-law 8 kHz)."""
        if isinstance(frame, bytes):
            return (CallerAudio(self._caller_audio(frame)),)
        event = parse_text(frame)
        if isinstance(event, Cleared):
            # Vonage never answers the notifies a clear dropped; Twilio echoes its marks. Echo them here,
            # so the leg sees one behaviour: every mark comes back, played or cleared.
            cleared = tuple(MarkPlayed(name) for name in self.marks_outstanding)
            self.marks_outstanding.clear()
            return cleared
        if isinstance(event, MarkPlayed):
            if event.name not in self.marks_outstanding:
                return ()  # already answered by a clear's echo
            self.marks_outstanding.remove(event.name)
        if isinstance(event, StreamStarted):
            if self.started:
                raise VonageProtocolError(
                    "a second Vonage 'websocket:connected' on a stream that has started", "duplicate_start"
                )
            self.started = True
            self.parameters = dict(event.parameters)
        return (event,)

    def _caller_audio(self, pcm: bytes) -> bytes:
        if not self.started:
            raise VonageProtocolError("Vonage audio before 'websocket:connected'", "before_start")
        frames.check_size(pcm, CARRIER)
        if not pcm or len(pcm) % 2:
            raise VonageProtocolError(
                f"Vonage audio frame of {len(pcm)} bytes: expected whole 16-bit samples", "bad_audio"
            )
        return pcm16_to_ulaw(self._down.process(pcm))

    def media(self, ulaw: bytes) -> bytes:
        """One BINARY frame of agent audio: μ-law 8 kHz → L16 16 kHz (160 bytes → 640)."""
        return self._up.process(ulaw_to_pcm16(ulaw))

    def mark(self, name: str) -> str:
        """A `notify` command, remembered until Vonage answers `websocket:notify`."""
        self.marks_outstanding.append(name)
        return notify_message(name)

    def clear(self) -> str:
        """A `clear` command (Vonage drops its buffer and answers `websocket:cleared`)."""
        self._up.reset()  # the cleared audio's filter history must not ring into the next reply
        return CLEAR_MESSAGE
