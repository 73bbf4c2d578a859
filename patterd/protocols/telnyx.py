"""Telnyx Call Control v2 and media streaming, sans-I/O: webhooks, commands, media frames, signatures.

Followed (stored copies, 2026):
- developers.telnyx.com "Stream call media over WebSocket" (AsyncAPI `media-streaming.yml`): frames
  `connected`, `start` {stream_id, start: {call_control_id, client_state, media_format}}, `media`
  {sequence_number, media: {track, chunk, timestamp, payload}}, `dtmf`, `mark`, `error`, `stop`; to
  Telnyx `media` {media: {payload}}, `mark` {mark: {name}}, `clear`. "Media frame order is not
  guaranteed": `MediaDecoder` reorders by `media.chunk` in a small window.
- Call Control commands (`/v2/calls/{id}/actions/{answer|reject|hangup|transfer|streaming_start|
  record_start|record_stop|send_dtmf}`, dial `POST /v2/calls`) as typed by telnyx-python
  `types/calls/action_*_params.py` and `types/call_dial_params.py`; webhook payloads as typed by
  `types/call_hangup_webhook_event.py`, `call_machine_detection_ended.py`,
  `call_machine_premium_detection_ended_webhook_event.py`, `call_recording_saved_webhook_event.py`.
- Pitfall (protocols.md, deepgram/deepclaw#8): `stream_url` alone is one-way; bidirectional audio
  needs `stream_bidirectional_mode: "rtp"` and `stream_bidirectional_codec: "PCMU"`.
- Webhook signatures: telnyx-python `lib/webhook_verification.py` — Ed25519 (PyNaCl) over
  `f"{telnyx-timestamp}|{raw body}"`, timestamps more than 300 s away from now (either way) refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from patterd.protocols import frames, jsontext
from patterd.protocols.audio import alaw_to_ulaw
from patterd.protocols.events import (
    CallerAudio,
    CallerDtmf,
    MarkPlayed,
    MediaEvent,
    StreamStarted,
    StreamStopped,
)

SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"
SIGNATURE_TOLERANCE_SECS = 300
STREAM_CODEC = "PCMU"

# Our command ids are UUIDv5 in this namespace, so the same webhook event always yields the same id.
_COMMAND_NAMESPACE = uuid.UUID("6f1c2a8e-3d55-4f4e-9b7a-2f0c1e5d7a10")


class TelnyxProtocolError(frames.BadFrame):
    """A webhook body or media frame does not follow the Telnyx protocol (`reason`: see protocols.frames)."""


# ---------------------------------------------------------------- webhooks (Telnyx → us)


@dataclass(frozen=True, kw_only=True, slots=True)
class CallControlEvent:
    """Fields every Call Control webhook carries; `call_id` is our id decoded from client_state."""

    event_id: str
    event_type: str
    occurred_at: str = ""
    call_control_id: str = ""
    call_leg_id: str = ""
    call_session_id: str = ""
    connection_id: str = ""
    client_state: str | None = None  # raw base64, as Telnyx sent it
    call_id: str | None = None  # decoded client_state when it carries one of our call ids
    from_: str = ""
    to: str = ""
    direction: str = ""  # "incoming" | "outgoing" (call.initiated)
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class CallInitiated(CallControlEvent):
    """A call leg exists: an inbound call ringing (`incoming`) or a leg we dialed (`outgoing`)."""

    state: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class CallAnswered(CallControlEvent):
    """The call was answered (by us, or by the far end of a dialed call)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class CallHangup(CallControlEvent):
    """The call ended; `hangup_cause` says why (normal_clearing, user_busy, timeout, ...)."""

    hangup_cause: str = "unspecified"
    hangup_source: str = ""
    sip_hangup_cause: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class MachineDetectionEnded(CallControlEvent):
    """Answering-machine detection finished (standard: human/machine/not_sure; premium: more)."""

    result: str = "not_sure"
    premium: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class MachineGreetingEnded(CallControlEvent):
    """The answering machine's greeting ended (beep_detected, ended, not_sure, no_beep_detected)."""

    result: str = "not_sure"
    premium: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class DtmfReceived(CallControlEvent):
    """The caller pressed a key (webhook copy; the media stream also carries it)."""

    digit: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamingStarted(CallControlEvent):
    """Telnyx started the media stream."""

    stream_url: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamingStopped(CallControlEvent):
    """Telnyx stopped the media stream."""

    stream_url: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamingFailed(CallControlEvent):
    """Telnyx could not establish or keep the media stream."""

    failure_reason: str = ""
    stream_url: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class RecordingSaved(CallControlEvent):
    """A recording of the call is stored; `url` is the first of the download URLs."""

    url: str = ""
    channels: str = ""
    recording_started_at: str = ""
    recording_ended_at: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class UnknownEvent(CallControlEvent):
    """An event type we do not act on (kept whole in `raw`)."""


WebhookEvent = (
    CallInitiated
    | CallAnswered
    | CallHangup
    | MachineDetectionEnded
    | MachineGreetingEnded
    | DtmfReceived
    | StreamingStarted
    | StreamingStopped
    | StreamingFailed
    | RecordingSaved
    | UnknownEvent
)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def parse_webhook(body: bytes | str) -> WebhookEvent:
    """Parse a Call Control webhook envelope `{data: {event_type, id, occurred_at, payload}}`."""
    try:
        doc = jsontext.loads(body)  # deep nesting and bad bytes are JSONErrors too (a 400, never a 500)
    except jsontext.JSONError as exc:
        raise TelnyxProtocolError(f"Telnyx webhook body is not JSON: {exc}") from exc
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict):
        raise TelnyxProtocolError(
            "Telnyx webhook has no `data` object; expected {data: {event_type, id, payload}}"
        )
    event_type = data.get("event_type")
    if not isinstance(event_type, str) or not event_type:
        raise TelnyxProtocolError(f"Telnyx webhook data.event_type is {event_type!r}; expected a string")
    payload = data.get("payload") or {}
    if not isinstance(payload, dict):
        raise TelnyxProtocolError(
            f"Telnyx webhook {event_type} payload is a {type(payload).__name__}, not an object"
        )
    client_state = payload.get("client_state") if isinstance(payload.get("client_state"), str) else None
    common: dict[str, Any] = {
        "event_id": _text(data.get("id")),
        "event_type": event_type,
        "occurred_at": _text(data.get("occurred_at")),
        "call_control_id": _text(payload.get("call_control_id")),
        "call_leg_id": _text(payload.get("call_leg_id")),
        "call_session_id": _text(payload.get("call_session_id")),
        "connection_id": _text(payload.get("connection_id")),
        "client_state": client_state,
        "call_id": decode_client_state(client_state),
        "from_": _text(payload.get("from")),
        "to": _text(payload.get("to")),
        "direction": _text(payload.get("direction")),
        "raw": doc,
    }
    match event_type:
        case "call.initiated":
            return CallInitiated(**common, state=_text(payload.get("state")))
        case "call.answered":
            return CallAnswered(**common)
        case "call.hangup":
            return CallHangup(
                **common,
                hangup_cause=_text(payload.get("hangup_cause")) or "unspecified",
                hangup_source=_text(payload.get("hangup_source")),
                sip_hangup_cause=_text(payload.get("sip_hangup_cause")),
            )
        case "call.machine.detection.ended" | "call.machine.premium.detection.ended":
            return MachineDetectionEnded(
                **common,
                result=_text(payload.get("result")) or "not_sure",
                premium="premium" in event_type,
            )
        case "call.machine.greeting.ended" | "call.machine.premium.greeting.ended":
            return MachineGreetingEnded(
                **common,
                result=_text(payload.get("result")) or "not_sure",
                premium="premium" in event_type,
            )
        case "call.dtmf.received":
            return DtmfReceived(**common, digit=_text(payload.get("digit")))
        case "streaming.started":
            return StreamingStarted(**common, stream_url=_text(payload.get("stream_url")))
        case "streaming.stopped":
            return StreamingStopped(**common, stream_url=_text(payload.get("stream_url")))
        case "streaming.failed":
            return StreamingFailed(
                **common,
                failure_reason=_text(payload.get("failure_reason")),
                stream_url=_text(payload.get("stream_url")),
            )
        case "call.recording.saved":
            urls = payload.get("recording_urls") or payload.get("public_recording_urls") or {}
            url = ""
            if isinstance(urls, dict):
                url = _text(urls.get("mp3")) or _text(urls.get("wav"))
            return RecordingSaved(
                **common,
                url=url,
                channels=_text(payload.get("channels")),
                recording_started_at=_text(payload.get("recording_started_at")),
                recording_ended_at=_text(payload.get("recording_ended_at")),
            )
        case _:
            return UnknownEvent(**common)


# ---------------------------------------------------------------- client_state and ids

_CLIENT_STATE_PREFIX = "patterd:"


def encode_client_state(call_id: str) -> str:
    """Our call id as Telnyx `client_state` (base64 of `patterd:<call_id>`)."""
    return base64.b64encode((_CLIENT_STATE_PREFIX + call_id).encode()).decode()


def decode_client_state(value: str | None) -> str | None:
    """Our call id from a `client_state`, or None when it is absent or not ours."""
    if not value:
        return None
    try:
        text = base64.b64decode(value, validate=True).decode()
    except (binascii.Error, ValueError):
        return None
    if not text.startswith(_CLIENT_STATE_PREFIX):
        return None
    return text[len(_CLIENT_STATE_PREFIX) :] or None


def command_id_for(key: str, action: str) -> str:
    """A deterministic `command_id`: the same webhook event and action always give the same id."""
    return str(uuid.uuid5(_COMMAND_NAMESPACE, f"{key}/{action}"))


# ---------------------------------------------------------------- commands (us → Telnyx REST)

Action = Literal[
    "answer",
    "reject",
    "hangup",
    "transfer",
    "streaming_start",
    "streaming_stop",
    "record_start",
    "record_stop",
    "send_dtmf",
]
RejectCause = Literal["CALL_REJECTED", "NOT_FOUND", "TEMPORARILY_UNAVAILABLE", "USER_BUSY"]
AmdMode = Literal["detect", "detect_beep", "detect_words", "greeting_end", "premium"]


def command_path(call_control_id: str, action: Action) -> str:
    """`/v2/calls/{call_control_id}/actions/{action}` with the id path-escaped (it contains `:`)."""
    return f"/v2/calls/{quote(call_control_id, safe=':')}/actions/{action}"


def stream_options(stream_url: str) -> dict[str, str]:
    """Bidirectional PCMU media-stream options shared by answer, dial and streaming_start."""
    return {
        "stream_url": stream_url,
        "stream_track": "inbound_track",  # the caller only; both_tracks would echo our audio back
        "stream_codec": STREAM_CODEC,  # Telnyx transcodes PCMA calls to PCMU for us
        "stream_bidirectional_mode": "rtp",  # without it the stream is one-way (caller hears nothing)
        "stream_bidirectional_codec": STREAM_CODEC,
    }


def answer_command(stream_url: str | None, *, client_state: str, command_id: str) -> dict[str, Any]:
    """Body of `actions/answer`, starting the bidirectional stream in the same command."""
    body: dict[str, Any] = {"client_state": client_state, "command_id": command_id}
    if stream_url:
        body.update(stream_options(stream_url))
    return body


def streaming_start_command(stream_url: str, *, client_state: str, command_id: str) -> dict[str, Any]:
    """Body of `actions/streaming_start`."""
    return {**stream_options(stream_url), "client_state": client_state, "command_id": command_id}


def reject_command(*, command_id: str, cause: RejectCause = "CALL_REJECTED") -> dict[str, Any]:
    """Body of `actions/reject` (a ringing inbound call we will not take; 603 Decline by default)."""
    return {"cause": cause, "command_id": command_id}


def hangup_command(*, command_id: str) -> dict[str, Any]:
    """Body of `actions/hangup`."""
    return {"command_id": command_id}


def transfer_command(to: str, *, command_id: str, from_: str | None = None) -> dict[str, Any]:
    """Body of `actions/transfer`."""
    body: dict[str, Any] = {"to": to, "command_id": command_id}
    if from_:
        body["from"] = from_
    return body


def record_start_command(
    *, command_id: str, format: Literal["mp3", "wav"] = "mp3", channels: Literal["single", "dual"] = "dual"
) -> dict[str, Any]:
    """Body of `actions/record_start`."""
    return {"format": format, "channels": channels, "command_id": command_id}


def record_stop_command(*, command_id: str) -> dict[str, Any]:
    """Body of `actions/record_stop`."""
    return {"command_id": command_id}


def send_dtmf_command(digits: str, *, command_id: str, duration_millis: int | None = None) -> dict[str, Any]:
    """Body of `actions/send_dtmf` (digits 0-9 A-D * #, `w`/`W` pauses)."""
    body: dict[str, Any] = {"digits": digits, "command_id": command_id}
    if duration_millis is not None:
        body["duration_millis"] = duration_millis
    return body


def dial_command(
    *,
    connection_id: str,
    to: str,
    from_: str,
    webhook_url: str,
    client_state: str,
    command_id: str,
    stream_url: str | None = None,
    answering_machine_detection: AmdMode | None = None,
) -> dict[str, Any]:
    """Body of `POST /v2/calls`."""
    body: dict[str, Any] = {
        "connection_id": connection_id,
        "to": to,
        "from": from_,
        "webhook_url": webhook_url,
        "client_state": client_state,
        "command_id": command_id,
    }
    if answering_machine_detection:
        body["answering_machine_detection"] = answering_machine_detection
    if stream_url:
        body.update(stream_options(stream_url))
    return body


def error_detail(body: Any) -> str:
    """The human text of a Telnyx error body `{errors: [{code, title, detail}]}` ('' if none)."""
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            text = _text(first.get("detail")) or _text(first.get("title"))
            code = first.get("code")
            return f"{text} (code {code})" if code is not None and text else text
    return ""


def error_codes(body: Any) -> list[str]:
    """The `code`s of a Telnyx error body, as strings."""
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        return [
            str(e.get("code")) for e in body["errors"] if isinstance(e, dict) and e.get("code") is not None
        ]
    return []


# ---------------------------------------------------------------- status vocabulary


def status_for_hangup(hangup_cause: str) -> str:
    """Our call status for a Telnyx `hangup_cause`."""
    match hangup_cause:
        case "normal_clearing" | "time_limit":
            return "completed"
        case "user_busy" | "call_rejected":
            return "busy"
        case "no_answer" | "timeout":
            return "no-answer"
        case "originator_cancel":
            return "canceled"
        case _:
            return "failed"


def answered_by(event: MachineDetectionEnded | MachineGreetingEnded) -> str:
    """Twilio's AnsweredBy vocabulary for a Telnyx AMD result, so the session need not know the carrier."""
    result = event.result
    if isinstance(event, MachineGreetingEnded):
        # The greeting is over: the moment to leave a voicemail.
        return {"beep_detected": "machine_end_beep", "ended": "machine_end_silence"}.get(
            result, "machine_end_other"
        )
    match result:
        case "human" | "human_residence" | "human_business":
            return "human"
        case "machine":
            return "machine_start"  # detected while the greeting may still be playing
        case "fax_detected":
            return "fax"
        case _:  # not_sure, silence
            return "unknown"


# ---------------------------------------------------------------- signatures


def verify_signature(
    public_key_b64: str,
    signature_b64: str | None,
    timestamp: str | None,
    raw_body: bytes,
    now: float,
    tolerance_secs: int = SIGNATURE_TOLERANCE_SECS,
) -> str | None:
    """None when the webhook is authentic and fresh, else the reason to refuse it.

    Reasons: `missing_headers`, `bad_timestamp`, `stale_timestamp` (more than `tolerance_secs`
    in the past or the future), `bad_public_key`, `bad_signature`.
    """
    if not signature_b64 or not timestamp:
        return "missing_headers"
    try:
        sent_at = int(timestamp)
    except ValueError:
        return "bad_timestamp"
    if abs(now - sent_at) > tolerance_secs:
        return "stale_timestamp"
    try:
        key = VerifyKey(public_key_b64_to_bytes(public_key_b64))
    except ValueError:
        return "bad_public_key"
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return "bad_signature"
    if len(signature) != 64:
        return "bad_signature"
    try:
        key.verify(timestamp.encode() + b"|" + raw_body, signature)
    except BadSignatureError:
        return "bad_signature"
    return None


def public_key_b64_to_bytes(public_key_b64: str) -> bytes:
    """Decode a Telnyx public key (base64 of 32 raw Ed25519 bytes); ValueError names what is wrong."""
    try:
        raw = base64.b64decode(public_key_b64.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"Telnyx public key is not base64: {exc}") from exc
    if len(raw) != 32:
        raise ValueError(f"Telnyx public key decodes to {len(raw)} bytes; expected 32 (an Ed25519 key)")
    return raw


# ---------------------------------------------------------------- media websocket (Telnyx → us)


@dataclass(frozen=True, slots=True)
class MediaStreamError:
    """An `error` frame from Telnyx; the provider logs it, the call goes on."""

    code: str
    title: str
    detail: str


# A chunk number this far from the expected one is not reordering: a corrupted or forged frame, or (seen
# RESYNC_AFTER times in a row, consecutively numbered) a stream that was renumbered.
CHUNK_JUMP_LIMIT = 250  # 5 s of 20 ms frames
RESYNC_AFTER = 3


class MediaDecoder:
    """Turns Telnyx media-stream text frames into MediaEvents for one stream.

    Stateful only in the ways the protocol asks: the codec announced by `start` (PCMA is
    transcoded to μ-law) and chunk order (frames are not guaranteed to arrive in order, so a
    frame that skips ahead waits for the missing ones up to `reorder_window` frames; in-order
    frames pass straight through, so the window adds no delay on a healthy stream). A frame whose
    chunk is wildly off is set aside rather than trusted: one forged number must not make every
    later (correct) frame look late.
    """

    def __init__(self, reorder_window: int = 3) -> None:
        self.reorder_window = reorder_window
        self.stream_id = ""
        self.call_control_id = ""
        self.encoding = STREAM_CODEC
        self.started = False
        self.reordered = 0  # frames that arrived ahead of a missing one and were held back
        self.late = 0  # frames dropped because their slot had already passed (or duplicates)
        self.lost = 0  # frames never received, skipped once the window was full
        self.stray = 0  # frames dropped because their chunk was far from the stream's
        self._next_chunk: int | None = None
        self._held: dict[int, bytes] = {}
        self._stray_last: int | None = None
        self._stray_run = 0

    def feed(self, text: str | bytes) -> list[MediaEvent | MediaStreamError]:
        """Decode one frame; raises TelnyxProtocolError (and nothing else) when it is malformed."""
        try:
            msg = frames.load_object(text, "Telnyx")
        except frames.BadFrame as exc:
            raise TelnyxProtocolError(str(exc), exc.reason) from None
        event = msg.get("event")
        match event:
            case "connected":
                return []
            case "start":
                return [self._start(msg)]
            case "media":
                return list(self._media(msg))
            case "dtmf":
                try:
                    digit = frames.dtmf_digit(_obj(msg, "dtmf").get("digit"), "Telnyx")
                except frames.BadFrame as exc:
                    raise TelnyxProtocolError(str(exc), exc.reason) from None
                return [CallerDtmf(digit)]
            case "mark":
                name = _text(_obj(msg, "mark").get("name"))
                return [MarkPlayed(name)]
            case "error":
                err = msg.get("payload") or msg.get("error") or {}
                if not isinstance(err, dict):
                    err = {"detail": err}
                code = err.get("code", "")
                return [
                    MediaStreamError(
                        str(code)[:40] if isinstance(code, str | int | float) else "",
                        _text(err.get("title"))[:200],
                        _text(err.get("detail"))[:500],
                    )
                ]
            case "stop":
                flushed: list[MediaEvent | MediaStreamError] = [
                    CallerAudio(p) for _, p in sorted(self._held.items())
                ]
                self._held.clear()
                return [*flushed, StreamStopped("stop")]
            case _:
                raise TelnyxProtocolError(f"unknown Telnyx media event {event!r:.60}", "unknown_event")

    def _start(self, msg: dict[str, Any]) -> StreamStarted:
        if self.started:  # a second start would switch the codec (and stream id) under a live call
            raise TelnyxProtocolError(
                f"Telnyx start on stream {self.stream_id!r:.40}, which has started already", "duplicate_start"
            )
        start = _obj(msg, "start")
        fmt = start.get("media_format") or {}
        encoding = _text(fmt.get("encoding")).upper() if isinstance(fmt, dict) else ""
        if encoding and encoding not in ("PCMU", "PCMA"):
            raise TelnyxProtocolError(
                f"Telnyx stream encoding {encoding!r:.40} is not supported; expected PCMU or PCMA"
            )
        self.started = True
        self.stream_id = _text(msg.get("stream_id"))
        self.call_control_id = _text(start.get("call_control_id"))
        self.encoding = encoding or STREAM_CODEC
        params = start.get("custom_parameters") or {}
        parameters = (
            {str(k): str(v) for k, v in params.items() if isinstance(v, str | int | float | bool)}
            if isinstance(params, dict)
            else {}
        )
        call_id = decode_client_state(_text(start.get("client_state")) or None)
        if call_id:
            parameters.setdefault("call_id", call_id)
        return StreamStarted(self.stream_id, self.call_control_id, parameters)

    def _media(self, msg: dict[str, Any]) -> list[MediaEvent | MediaStreamError]:
        media = _obj(msg, "media")
        track = media.get("track", "inbound")
        if not isinstance(track, str):
            raise TelnyxProtocolError(f"Telnyx media frame: track is {track!r:.40}, expected a string")
        if (track or "inbound") != "inbound":
            return []  # our own audio echoed back (both_tracks); never feed it to the agent
        try:
            payload = frames.b64_audio(media.get("payload"), "Telnyx")
        except frames.BadFrame as exc:
            raise TelnyxProtocolError(str(exc), exc.reason) from None
        if self.encoding == "PCMA":
            payload = alaw_to_ulaw(payload)
        chunk = _int(media.get("chunk"))
        if chunk is None:
            return [CallerAudio(payload)]
        return [CallerAudio(p) for p in self._order(chunk, payload)]

    def _order(self, chunk: int, payload: bytes) -> list[bytes]:
        if self._next_chunk is None:
            self._next_chunk = chunk
        out: list[bytes] = []
        if abs(chunk - self._next_chunk) > CHUNK_JUMP_LIMIT:
            consecutive = self._stray_last is not None and chunk == self._stray_last + 1
            self._stray_run = self._stray_run + 1 if consecutive else 1
            self._stray_last = chunk
            if self._stray_run < RESYNC_AFTER:
                self.stray += 1
                return []
            # The stream was renumbered: what is held plays first, then the stream goes on from here.
            out = [p for _, p in sorted(self._held.items())]
            self._held.clear()
            self._next_chunk = chunk
        self._stray_last = None
        self._stray_run = 0
        if chunk < self._next_chunk or chunk in self._held:
            self.late += 1
            return out
        if chunk > self._next_chunk:
            self.reordered += 1
        self._held[chunk] = payload
        while True:
            if self._next_chunk in self._held:
                out.append(self._held.pop(self._next_chunk))
                self._next_chunk += 1
            elif len(self._held) > self.reorder_window:
                lowest = min(self._held)
                self.lost += lowest - self._next_chunk  # give up on the gap: those frames are lost
                self._next_chunk = lowest
            else:
                return out


def _obj(msg: dict[str, Any], key: str) -> dict[str, Any]:
    value = msg.get(key)
    if not isinstance(value, dict):
        raise TelnyxProtocolError(f"Telnyx {_text(msg.get('event'))[:40]} frame has no `{key}` object")
    return value


def _int(value: Any) -> int | None:
    """A chunk number: an int, or a string of at most 18 ASCII digits (int() refuses > 4300 digits)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and 0 < len(value) <= 18 and value.isascii() and value.isdigit():
        return int(value)
    return None


# ---------------------------------------------------------------- media websocket (us → Telnyx)


def encode_media(ulaw: bytes) -> str:
    """A `media` frame carrying μ-law audio (RTP payload, no header) toward the caller."""
    return json.dumps({"event": "media", "media": {"payload": base64.b64encode(ulaw).decode()}})


def encode_mark(name: str) -> str:
    """A `mark` frame: Telnyx echoes it once the audio sent before it has played (or was cleared)."""
    return json.dumps({"event": "mark", "mark": {"name": name}})


def encode_clear() -> str:
    """A `clear` frame: drop queued audio now (barge-in); Telnyx returns the queued marks."""
    return json.dumps({"event": "clear"})
