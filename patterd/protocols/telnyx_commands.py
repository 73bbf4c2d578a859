"""Telnyx Call Control v2 commands, sans-I/O: REST paths and bodies (us → Telnyx), error bodies.

Commands (`/v2/calls/{id}/actions/{answer|reject|hangup|transfer|streaming_start|record_start|
record_stop|send_dtmf}`, dial `POST /v2/calls`) as typed by telnyx-python `types/calls/action_*_params.py`
and `types/call_dial_params.py`. Pitfall (protocols.md, deepgram/deepclaw#8): `stream_url` alone is
one-way; bidirectional audio needs `stream_bidirectional_mode: "rtp"` and `stream_bidirectional_codec: "PCMU"`.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

from patterd.protocols.telnyx_webhooks import STREAM_CODEC, _text

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
