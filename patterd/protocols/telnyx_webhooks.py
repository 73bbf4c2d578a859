"""Telnyx Call Control v2 webhooks, sans-I/O: typed events, client_state, status vocabulary, signatures.

Webhook payloads as typed by telnyx-python `types/call_hangup_webhook_event.py`,
`call_machine_detection_ended.py`, `call_machine_premium_detection_ended_webhook_event.py`,
`call_recording_saved_webhook_event.py`. Signatures: telnyx-python `lib/webhook_verification.py` —
Ed25519 (PyNaCl) over `f"{telnyx-timestamp}|{raw body}"`, timestamps more than 300 s away from now
(either way) refused. (`protocols.telnyx` re-exports everything; see it for the sources followed.)
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from patterd.lazy import lazy_import
from patterd.protocols import frames, jsontext

if TYPE_CHECKING:
    from nacl import exceptions as nacl_exceptions
    from nacl import signing
else:  # PyNaCl: imported by the first signed webhook, not when the routes are mounted (start-up, issue 14)
    nacl_exceptions = lazy_import("nacl.exceptions")
    signing = lazy_import("nacl.signing")

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
        key = signing.VerifyKey(public_key_b64_to_bytes(public_key_b64))
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
    except nacl_exceptions.BadSignatureError:
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
