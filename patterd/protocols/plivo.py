"""Plivo wire formats, sans-I/O: answer XML and the Audio Streaming websocket messages both ways.

Checked against the official SDKs: plivo-python 4.63 `plivo/xml/streamElement.py` (StreamElement
attribute names: bidirectional, audioTrack, streamTimeout, statusCallbackUrl, statusCallbackMethod,
contentType, extraHeaders, keepCallAlive; booleans written `true`/`false` by `xmlUtils.map_type`; the
websocket URL is the element's text), `hangupElement.py` (`<Hangup reason=...>`), `DialElement.py` +
`numberElement.py` (`<Dial><Number>`), and plivo-stream-sdk-java `PlivoStreamingHandler.java` with its
`event/*.java` + `message/*.java` (from Plivo: `start` {start: {streamId, callId, accountId, tracks,
mediaFormat}}, `media` {streamId, media: {track, timestamp, chunk, payload}}, `dtmf` {dtmf: {digit,
track}}, `playedStream` {streamId, name}, `clearedAudio` {streamId}, `stop`; to Plivo: `playAudio`
{media: {contentType, sampleRate, payload}}, `checkpoint` {streamId, name}, `clearAudio` {streamId}),
and Plivo's Audio Streaming protocol reference (`extra_headers`: the Stream's extraHeaders string,
at the top level of `start`).
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from patterd.protocols import frames
from patterd.protocols.events import (
    CallerAudio,
    CallerDtmf,
    MarkPlayed,
    MediaEvent,
    StreamStarted,
    StreamStopped,
)

XML_DECLARATION = '<?xml version="1.0" encoding="utf-8"?>'
XML_CONTENT_TYPE = "application/xml"
CONTENT_TYPE = "audio/x-mulaw"
SAMPLE_RATE = 8000
STREAM_CONTENT_TYPE = f"{CONTENT_TYPE};rate={SAMPLE_RATE}"
# extraHeaders allows only [A-Za-z0-9] in keys and values (max 512 bytes): ours are hex-encoded
# under an `x` + hex(key) name, so any call id or parameter survives the trip.
EXTRA_HEADERS_MAX = 512
CARRIER = "Plivo"


class PlivoProtocolError(frames.BadFrame):
    """An Audio Streaming frame that does not follow Plivo's documented shape (`reason` says how)."""


# ------------------------------------------------------------------ XML


def _xml(body: str) -> str:
    return f"{XML_DECLARATION}<Response>{body}</Response>"


def encode_extra_headers(values: Mapping[str, str]) -> str:
    """`x<hex key>=<hex value>,...`: the only alphabet extraHeaders carries is [A-Za-z0-9]."""
    text = ",".join(f"x{key.encode().hex()}={value.encode().hex()}" for key, value in values.items())
    if len(text) > EXTRA_HEADERS_MAX:
        raise ValueError(f"Plivo extraHeaders of {len(text)} bytes (limit {EXTRA_HEADERS_MAX})")
    return text


def decode_extra_headers(text: str) -> dict[str, str]:
    """The headers of `start.extra_headers` (`k=v` pairs split by `,` or `;`); ours hex-decoded."""
    out: dict[str, str] = {}
    for item in re.split(r"[,;]", text):
        name, sep, value = item.strip().partition("=")
        if not sep or not name:
            continue
        if name.startswith("x") and len(name) > 1:
            try:
                out[bytes.fromhex(name[1:]).decode()] = bytes.fromhex(value).decode()
                continue
            except ValueError:  # not one of ours: kept as Plivo delivered it
                pass
        out[name] = value
    return out


def stream(
    url: str,
    parameters: Mapping[str, str] | None = None,
    status_callback_url: str | None = None,
) -> str:
    """Answer XML: one bidirectional μ-law `<Stream>` that holds the call until the socket closes."""
    attributes = [
        ("bidirectional", "true"),
        ("keepCallAlive", "true"),
        ("contentType", STREAM_CONTENT_TYPE),
    ]
    if parameters:
        attributes.append(("extraHeaders", encode_extra_headers(parameters)))
    if status_callback_url:
        attributes += [("statusCallbackUrl", status_callback_url), ("statusCallbackMethod", "POST")]
    attrs = "".join(f" {name}={quoteattr(value)}" for name, value in attributes)
    return _xml(f"<Stream{attrs}>{escape(url)}</Stream>")


def hangup(reason: str = "rejected") -> str:
    """`<Hangup reason=...>`: refuse the call (`rejected` or `busy`) without answering it."""
    if reason not in ("rejected", "busy"):
        raise ValueError(f"Hangup reason {reason!r}: expected 'rejected' or 'busy'")
    return _xml(f"<Hangup reason={quoteattr(reason)}/>")


def dial(number: str) -> str:
    """`<Dial><Number>number</Number></Dial>`: connect the caller to another number (transfer)."""
    return _xml(f"<Dial><Number>{escape(number)}</Number></Dial>")


def empty_response() -> str:
    """An empty `<Response/>` for callbacks that need no instructions."""
    return f"{XML_DECLARATION}<Response/>"


# ------------------------------------------------------------------ Audio Streaming: from Plivo


def _object(msg: Mapping[str, Any], key: str, event: str) -> Mapping[str, Any]:
    value = msg.get(key)
    if not isinstance(value, dict):
        raise PlivoProtocolError(f"Plivo {event!r} message: {key!r} is {value!r:.80}, expected an object")
    return value


def _string(msg: Mapping[str, Any], key: str, event: str) -> str:
    value = msg.get(key)
    if not isinstance(value, str):
        raise PlivoProtocolError(f"Plivo {event!r} message: {key!r} is {value!r:.80}, expected a string")
    return value


@dataclass(frozen=True, slots=True)
class AudioCleared:
    """Plivo's `clearedAudio`: the queue is empty, and its checkpoints will never be `playedStream`."""

    stream_id: str = ""


def parse_message(frame: str | bytes) -> MediaEvent | AudioCleared | None:
    """One frame from Plivo → a media event (or AudioCleared); None for audio of another track.

    Raises PlivoProtocolError (a frames.BadFrame with its `reason`) for anything malformed.
    """
    try:
        msg = frames.load_object(frame, CARRIER)
    except frames.BadFrame as exc:
        raise PlivoProtocolError(str(exc), exc.reason) from None
    event = msg.get("event")
    if not isinstance(event, str):
        raise PlivoProtocolError(f"Plivo frame without an 'event' string: {frame!r:.80}")
    if event == "media":
        media = _object(msg, "media", event)
        track = media.get("track", "inbound")
        if track != "inbound":
            return None  # audioTrack=inbound is what we ask for; anything else is not the caller
        try:
            return CallerAudio(frames.b64_audio(media.get("payload"), CARRIER))
        except frames.BadFrame as exc:
            raise PlivoProtocolError(str(exc), exc.reason) from None
    if event == "playedStream":
        return MarkPlayed(_string(msg, "name", event))
    if event == "dtmf":
        try:
            return CallerDtmf(frames.dtmf_digit(_object(msg, "dtmf", event).get("digit"), CARRIER))
        except frames.BadFrame as exc:
            raise PlivoProtocolError(str(exc), exc.reason) from None
    if event == "start":
        return _start(msg)
    if event == "stop":
        return StreamStopped("stop")
    if event == "clearedAudio":
        stream_id = msg.get("streamId", "")
        return AudioCleared(stream_id if isinstance(stream_id, str) else "")
    raise PlivoProtocolError(f"unknown Plivo Audio Streaming event {event!r:.60}", "unknown_event")


def _start(msg: Mapping[str, Any]) -> StreamStarted:
    start = _object(msg, "start", "start")
    stream_id = start.get("streamId")
    call_id = start.get("callId", "")
    if not isinstance(stream_id, str) or not stream_id or not isinstance(call_id, str):
        raise PlivoProtocolError(f"Plivo 'start' message without streamId/callId strings: {start!r:.120}")
    fmt = start.get("mediaFormat")
    if isinstance(fmt, dict):
        encoding, rate = fmt.get("encoding", CONTENT_TYPE), fmt.get("sampleRate", SAMPLE_RATE)
        if encoding != CONTENT_TYPE or rate not in (SAMPLE_RATE, str(SAMPLE_RATE)):
            raise PlivoProtocolError(
                f"Plivo stream format {encoding!r:.40} at {rate!r:.10} Hz: expected {CONTENT_TYPE} at 8000"
            )
    headers = msg.get("extra_headers", "")
    if not isinstance(headers, str):
        raise PlivoProtocolError(f"Plivo 'start' extra_headers is {headers!r:.60}, expected a string")
    return StreamStarted(
        stream_id=stream_id, carrier_call_id=call_id, parameters=decode_extra_headers(headers)
    )


# ------------------------------------------------------------------ Audio Streaming: to Plivo


def play_audio_message(ulaw: bytes, stream_id: str = "") -> str:
    """A `playAudio` message: μ-law 8 kHz audio for Plivo to queue for the caller.

    With the streamId as the official stream SDKs send it (Plivo's reference example omits it).
    """
    return _play_audio(_stream_prefix(stream_id), ulaw)


def _stream_prefix(stream_id: str) -> str:
    return '{"event":"playAudio",' + (f'"streamId":{json.dumps(stream_id)},' if stream_id else "")


def _play_audio(prefix: str, ulaw: bytes) -> str:
    # Built by hand: base64 needs no JSON escaping and this runs 50 times a second per call.
    payload = binascii.b2a_base64(ulaw, newline=False).decode("ascii")
    return f'{prefix}"media":{{"contentType":"audio/x-mulaw","sampleRate":8000,"payload":"{payload}"}}}}'


def checkpoint_message(stream_id: str, name: str) -> str:
    """A `checkpoint`: Plivo answers `playedStream` with the same name once the audio before it played."""
    return json.dumps({"event": "checkpoint", "streamId": stream_id, "name": name})


def clear_audio_message(stream_id: str) -> str:
    """A `clearAudio`: Plivo drops the audio it queued and answers `clearedAudio`."""
    return json.dumps({"event": "clearAudio", "streamId": stream_id})


@dataclass
class StreamState:
    """One Plivo audio stream seen from our side (a MediaCodec): its ids, headers and open checkpoints."""

    stream_id: str = ""
    call_uuid: str = ""
    parameters: dict[str, str] = field(default_factory=dict)
    checkpoints_outstanding: list[str] = field(default_factory=list)
    _prefix: str = '{"event":"playAudio",'  # the message's start, with the streamId once known

    def receive(self, frame: str | bytes) -> Sequence[MediaEvent]:
        """Parse a frame and update the state; a second `start` is refused (`duplicate_start`)."""
        event = parse_message(frame)
        if event is None:
            return ()
        if isinstance(event, AudioCleared):
            # Plivo never answers the checkpoints a clear dropped; Twilio echoes its marks. Echo them
            # here, so the leg sees one behaviour: every mark comes back, played or cleared.
            cleared = tuple(MarkPlayed(name) for name in self.checkpoints_outstanding)
            self.checkpoints_outstanding.clear()
            return cleared
        if isinstance(event, StreamStarted):
            if self.stream_id:
                raise PlivoProtocolError(
                    f"Plivo 'start' for stream {event.stream_id!r:.40} on stream {self.stream_id!r:.40}, "
                    "which has started already",
                    "duplicate_start",
                )
            self.stream_id = event.stream_id
            self.call_uuid = event.carrier_call_id
            self.parameters = dict(event.parameters)
            self._prefix = _stream_prefix(event.stream_id)
        elif isinstance(event, MarkPlayed):
            if event.name not in self.checkpoints_outstanding:
                return ()  # already answered by a clear's echo
            self.checkpoints_outstanding.remove(event.name)
        return (event,)

    def _require_stream(self) -> str:
        if not self.stream_id:
            raise PlivoProtocolError(
                "no streamId yet: Plivo has not sent the 'start' message", "before_start"
            )
        return self.stream_id

    def media(self, ulaw: bytes) -> str:
        """A `playAudio` message for this stream."""
        return _play_audio(self._prefix, ulaw)

    def mark(self, name: str) -> str:
        """A `checkpoint` message, remembered until Plivo answers `playedStream`."""
        message = checkpoint_message(self._require_stream(), name)
        self.checkpoints_outstanding.append(name)
        return message

    def clear(self) -> str:
        """A `clearAudio` message."""
        return clear_audio_message(self._require_stream())
