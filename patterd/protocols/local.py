"""The local softphone's media protocol: Twilio Media Streams' JSON dialect, spoken by a browser.

Browser → daemon: `start` {start: {format: "mulaw/8000"}}, `media` {media: {payload: base64 μ-law}},
`dtmf` {dtmf: {digit}}, `mark` {mark: {name}} (echo of a mark we sent, once played), `stop`.
Daemon → browser: `media` {media: {payload}}, `mark` {mark: {name}}, `clear`, and `transcript`
{role, text} lines so the page can show the conversation beside the call (with `partial: true`: the
agent's words so far, as their audio starts playing; the final line of the reply replaces them).
"""

from __future__ import annotations

import binascii
import json
from typing import Any

from patterd.protocols.events import (
    CallerAudio,
    CallerDtmf,
    MarkPlayed,
    MediaEvent,
    StreamStarted,
    StreamStopped,
)


class LocalProtocolError(ValueError):
    """A softphone frame that does not follow the protocol."""


def parse_message(text: str | bytes) -> MediaEvent | None:
    """One frame from the browser as a media event (None for frames we ignore, such as `connected`)."""
    try:
        msg = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LocalProtocolError(f"not JSON: {exc}") from exc
    if not isinstance(msg, dict):
        raise LocalProtocolError(f"expected a JSON object, got {type(msg).__name__}")
    event = msg.get("event")
    try:
        if event == "media":
            return CallerAudio(binascii.a2b_base64(msg["media"]["payload"]))
        if event == "dtmf":
            return CallerDtmf(str(msg["dtmf"]["digit"]))
        if event == "mark":
            return MarkPlayed(str(msg["mark"]["name"]))
        if event == "start":
            return StreamStarted(stream_id=str(msg.get("streamSid", "local")))
        if event == "stop":
            return StreamStopped("caller hung up")
        if event == "connected":
            return None
    except (KeyError, TypeError, binascii.Error) as exc:
        raise LocalProtocolError(f"malformed {event!r} frame: {exc!r}") from exc
    raise LocalProtocolError(f"unknown event {event!r}")


def _dump(msg: dict[str, Any]) -> str:
    return json.dumps(msg, separators=(",", ":"))


def media_message(ulaw: bytes) -> str:
    """Agent audio for the browser."""
    return _dump({"event": "media", "media": {"payload": binascii.b2a_base64(ulaw, newline=False).decode()}})


def mark_message(name: str) -> str:
    """Ask the browser to echo `name` when the audio before it has played."""
    return _dump({"event": "mark", "mark": {"name": name}})


def clear_message() -> str:
    """Drop buffered agent audio (barge-in)."""
    return _dump({"event": "clear"})


def transcript_message(role: str, text: str, *, partial: bool = False) -> str:
    """A transcript line for the page; `partial`: the agent's words so far, replaced by the final line."""
    msg: dict[str, Any] = {"event": "transcript", "role": role, "text": text}
    if partial:
        msg["partial"] = True
    return _dump(msg)
