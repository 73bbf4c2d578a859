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

from patterd.protocols import frames
from patterd.protocols.events import (
    CallerAudio,
    CallerDtmf,
    MarkPlayed,
    MediaEvent,
    StreamStarted,
    StreamStopped,
)


class LocalProtocolError(frames.BadFrame):
    """A softphone frame that does not follow the protocol (`reason`: see protocols.frames)."""


def parse_message(text: str | bytes) -> MediaEvent | None:
    """One frame from the browser as a media event (None for frames we ignore, such as `connected`).

    Raises LocalProtocolError (and nothing else) for a frame it cannot take.
    """
    try:
        msg = frames.load_object(text, "softphone")
        event = msg.get("event")
        if event == "media":
            return CallerAudio(frames.b64_audio(_member(msg, "media", "payload"), "softphone"))
        if event == "dtmf":
            return CallerDtmf(frames.dtmf_digit(_member(msg, "dtmf", "digit"), "softphone"))
        if event == "mark":
            name = _member(msg, "mark", "name")
            if not isinstance(name, str):
                raise frames.BadFrame(f"softphone mark name is {name!r:.40}, expected a string")
            return MarkPlayed(name)
        if event == "start":
            sid = msg.get("streamSid", "local")
            return StreamStarted(stream_id=sid if isinstance(sid, str) else "local")
        if event == "stop":
            return StreamStopped("caller hung up")
        if event == "connected":
            return None
    except frames.BadFrame as exc:
        raise LocalProtocolError(str(exc), exc.reason) from None
    raise LocalProtocolError(f"unknown softphone event {event!r:.60}", "unknown_event")


def _member(msg: dict[str, object], key: str, member: str) -> object:
    """msg[key][member]; BadFrame `bad_shape` when msg[key] is not an object or lacks it."""
    inner = msg.get(key)
    if not isinstance(inner, dict) or member not in inner:
        raise frames.BadFrame(f"softphone {key!r} frame without {key}.{member}: {inner!r:.60}")
    return inner[member]


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


class SoftphoneCodec:
    """The browser phone's dialect as a `media_codec.MediaCodec`: one `start` per stream, like a carrier's."""

    def __init__(self) -> None:
        self.started = False

    def receive(self, frame: str | bytes) -> tuple[MediaEvent, ...]:
        event = parse_message(frame)
        if event is None:
            return ()
        if isinstance(event, StreamStarted):
            if self.started:
                raise LocalProtocolError("softphone 'start' on a stream that has started", "duplicate_start")
            self.started = True
        return (event,)

    def media(self, ulaw: bytes) -> str:
        return media_message(ulaw)

    def mark(self, name: str) -> str:
        return mark_message(name)

    def clear(self) -> str:
        return clear_message()
