"""Twilio wire formats, sans-I/O: TwiML answers, Media Streams messages both ways, webhook signatures.

Followed: twilio.com/docs/voice/media-streams/websocket-messages (connected, start, media, dtmf,
mark, stop from Twilio; media, mark, clear to Twilio), /docs/voice/twiml/stream and
/docs/voice/twiml/connect (<Connect><Stream> is the bidirectional form, <Parameter> children come
back in start.customParameters), /docs/voice/twiml/reject, /docs/voice/twiml/dial, and
/docs/usage/webhooks/webhooks-security plus twilio-python `twilio/request_validator.py`
(HMAC-SHA1 over URL + sorted params, URL tried with and without its default port, JSON bodies
signed through a `bodySHA256` query parameter).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit
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

SIGNATURE_HEADER = "X-Twilio-Signature"
XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
TWIML_CONTENT_TYPE = "text/xml"
DTMF_DIGITS = frozenset("0123456789*#ABCDabcdw")


class TwilioProtocolError(frames.BadFrame):
    """A Media Streams frame that does not follow Twilio's documented shape (`reason` says how)."""


# ------------------------------------------------------------------ TwiML


def _twiml(body: str) -> str:
    return f"{XML_DECLARATION}<Response>{body}</Response>"


def connect_stream(url: str, parameters: Mapping[str, str] | None = None) -> str:
    """`<Connect><Stream url=...>` with one `<Parameter>` per item: a bidirectional media stream."""
    params = "".join(
        f"<Parameter name={quoteattr(str(name))} value={quoteattr(str(value))}/>"
        for name, value in (parameters or {}).items()
    )
    stream = (
        f"<Stream url={quoteattr(url)}>{params}</Stream>" if params else f"<Stream url={quoteattr(url)}/>"
    )
    return _twiml(f"<Connect>{stream}</Connect>")


def reject(reason: str | None = None) -> str:
    """`<Reject/>`: refuse the call without answering (reason `rejected` or `busy`)."""
    if reason is None:
        return _twiml("<Reject/>")
    if reason not in ("rejected", "busy"):
        raise ValueError(f"Reject reason {reason!r}: expected 'rejected' or 'busy'")
    return _twiml(f"<Reject reason={quoteattr(reason)}/>")


def dial(number: str) -> str:
    """`<Dial>number</Dial>`: connect the caller to another number (transfer)."""
    return _twiml(f"<Dial>{escape(number)}</Dial>")


def empty_response() -> str:
    """An empty `<Response/>` (for callbacks that need no instructions)."""
    return f"{XML_DECLARATION}<Response/>"


# ------------------------------------------------------------------ Media Streams: from Twilio


def _field(obj: Mapping[str, Any], key: str, event: str) -> Any:
    try:
        return obj[key]
    except KeyError:
        raise TwilioProtocolError(f"Twilio {event!r} message without {key!r}") from None
    except TypeError:
        raise TwilioProtocolError(f"Twilio {event!r} message: expected an object, got {obj!r:.80}") from None


def _object(obj: Mapping[str, Any], key: str, event: str) -> Mapping[str, Any]:
    value = _field(obj, key, event)
    if not isinstance(value, dict):
        raise TwilioProtocolError(f"Twilio {event!r} message: {key!r} is {value!r:.80}, expected an object")
    return value


def _string(obj: Mapping[str, Any], key: str, event: str) -> str:
    value = _field(obj, key, event)
    if not isinstance(value, str):
        raise TwilioProtocolError(f"Twilio {event!r} message: {key!r} is {value!r:.80}, expected a string")
    return value


def decode_frame(text: str | bytes) -> dict[str, Any]:
    """Parse one websocket text frame into a JSON object with an `event` string."""
    try:
        msg = frames.load_object(text, "Twilio")
    except frames.BadFrame as exc:
        raise TwilioProtocolError(str(exc), exc.reason) from None
    if not isinstance(msg.get("event"), str):
        raise TwilioProtocolError(f"Twilio frame without an 'event' string: {text!r:.80}")
    return msg


# Twilio's `media` frame in its documented member order (event, sequenceNumber, media{track, chunk,
# timestamp, payload}, streamSid; streamSid also accepted right after event), optional whitespace. Everything this matches is a valid JSON
# object that json.loads would read the same way (no escapes, no duplicate keys), so the hot path
# can take the payload without building dicts; any other shape goes through the full parser.
_WS = r"[ \t\r\n]*"
_STR = r'"[^"\\\x00-\x1f]*"'
_MEDIA_FRAME = re.compile(
    rf'{_WS}\{{{_WS}"event"{_WS}:{_WS}"media"{_WS}'
    rf'(?:,{_WS}"streamSid"{_WS}:{_WS}{_STR}{_WS})?'
    rf'(?:,{_WS}"sequenceNumber"{_WS}:{_WS}{_STR}{_WS})?'
    rf',{_WS}"media"{_WS}:{_WS}\{{{_WS}'
    rf'(?:"track"{_WS}:{_WS}"(?P<track>[^"\\\x00-\x1f]*)"{_WS},{_WS})?'
    rf'(?:"chunk"{_WS}:{_WS}{_STR}{_WS},{_WS})?'
    rf'(?:"timestamp"{_WS}:{_WS}{_STR}{_WS},{_WS})?'
    rf'"payload"{_WS}:{_WS}"(?P<payload>[A-Za-z0-9+/=]*)"{_WS}\}}{_WS}'
    rf'(?:,{_WS}"streamSid"{_WS}:{_WS}{_STR}{_WS})?'
    rf"\}}{_WS}"
)
_INBOUND_TRACKS = (None, "inbound", "inbound_track")


def parse_message(text: str | bytes) -> MediaEvent | None:
    """One frame from Twilio → a media event; None for frames with no event for us (`connected`, outbound track).

    Raises TwilioProtocolError (with its `reason`) for malformed frames and unknown events, and nothing
    else whatever the frame holds. The fast path accepts exactly what `parse_full` would read the same way.
    """
    if type(text) is str and len(text) <= frames.MAX_FRAME_CHARS:
        fast = _MEDIA_FRAME.fullmatch(text)
        if fast is not None:  # the hot path: 50 per second per call
            if fast["track"] not in _INBOUND_TRACKS:
                return None
            return CallerAudio(_audio(fast["payload"]))
    return parse_full(text)


def _audio(payload: str) -> bytes:
    try:
        return binascii.a2b_base64(payload, strict_mode=True)
    except (binascii.Error, ValueError) as exc:  # ValueError: a str with non-ASCII characters
        raise TwilioProtocolError(
            f"Twilio 'media' payload is not base64 ({exc}): {payload!r:.40}", "bad_audio"
        ) from None


def parse_full(text: str | bytes) -> MediaEvent | None:
    """`parse_message` without the fast path: every frame through the JSON parser."""
    msg = decode_frame(text)
    event = msg["event"]
    if event == "media":  # media in any other shape or member order
        media = _object(msg, "media", event)
        track = media.get("track", "inbound")
        if not isinstance(track, str):
            raise TwilioProtocolError(f"Twilio 'media' message: 'track' is {track!r:.40}, expected a string")
        if track not in ("inbound", "inbound_track"):
            return None  # only a unidirectional <Start><Stream> sends the outbound track
        return CallerAudio(_audio(_string(media, "payload", event)))
    if event == "mark":
        return MarkPlayed(_string(_object(msg, "mark", event), "name", event))
    if event == "dtmf":
        digit = _string(_object(msg, "dtmf", event), "digit", event)
        if len(digit) != 1 or digit not in DTMF_DIGITS:
            raise TwilioProtocolError(
                f"Twilio 'dtmf' digit {digit!r:.40}: expected one of 0-9, *, #, A-D", "bad_dtmf"
            )
        return CallerDtmf(digit)
    if event == "start":
        return _start(msg)
    if event == "stop":
        return StreamStopped("stop")
    if event == "connected":
        return None
    raise TwilioProtocolError(f"unknown Twilio Media Streams event {event!r:.60}", "unknown_event")


def _start(msg: Mapping[str, Any]) -> StreamStarted:
    start = _object(msg, "start", "start")
    stream_sid = start.get("streamSid", msg.get("streamSid"))
    if not isinstance(stream_sid, str) or not stream_sid:
        raise TwilioProtocolError("Twilio 'start' message without a streamSid")
    call_sid = start.get("callSid", "")
    custom = start.get("customParameters") or {}
    if not isinstance(custom, dict) or not isinstance(call_sid, str):
        raise TwilioProtocolError(
            f"Twilio 'start' message: malformed callSid/customParameters: {start!r:.120}"
        )
    if not all(isinstance(v, str | int | float | bool) for v in custom.values()):
        raise TwilioProtocolError("Twilio 'start' message: customParameters values must be strings")
    fmt = start.get("mediaFormat")
    if isinstance(fmt, dict) and fmt.get("encoding", "audio/x-mulaw") != "audio/x-mulaw":
        raise TwilioProtocolError(
            f"Twilio stream encoding {fmt.get('encoding')!r:.40}: expected 'audio/x-mulaw'"
        )
    return StreamStarted(
        stream_id=stream_sid,
        carrier_call_id=call_sid,
        parameters={str(k): str(v) for k, v in custom.items()},
    )


# ------------------------------------------------------------------ Media Streams: to Twilio


def media_message(stream_sid: str, ulaw: bytes) -> str:
    """A `media` message carrying μ-law audio (normally one 160-byte frame) to play to the caller."""
    return _media_message(json.dumps(stream_sid), ulaw)


def _media_message(sid_json: str, ulaw: bytes) -> str:
    # Built by hand: base64 needs no JSON escaping and this runs 50 times a second per call.
    payload = binascii.b2a_base64(ulaw, newline=False).decode("ascii")
    return f'{{"event":"media","streamSid":{sid_json},"media":{{"payload":"{payload}"}}}}'


def mark_message(stream_sid: str, name: str) -> str:
    """A `mark` message: Twilio echoes it once everything sent before it has played (or was cleared)."""
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def clear_message(stream_sid: str) -> str:
    """A `clear` message: Twilio drops the audio it buffered and echoes the marks still pending."""
    return json.dumps({"event": "clear", "streamSid": stream_sid})


@dataclass
class StreamState:
    """One Media Stream seen from our side: its streamSid and the marks Twilio has not echoed yet."""

    stream_sid: str = ""
    call_sid: str = ""
    parameters: dict[str, str] = field(default_factory=dict)
    marks_outstanding: list[str] = field(default_factory=list)
    _sid_json: str = ""

    def receive(self, text: str | bytes) -> MediaEvent | None:
        """Parse a frame from Twilio and update the state (streamSid on start, marks on echo).

        A second `start` is refused: taking its streamSid would send the caller's audio to another stream.
        """
        event = parse_message(text)
        if isinstance(event, StreamStarted):
            if self.stream_sid:
                raise TwilioProtocolError(
                    f"Twilio 'start' for stream {event.stream_id!r:.40} on stream {self.stream_sid!r:.40}, "
                    "which has started already",
                    "duplicate_start",
                )
            self.stream_sid = event.stream_id
            self.call_sid = event.carrier_call_id
            self.parameters = dict(event.parameters)
            self._sid_json = json.dumps(event.stream_id)
        elif isinstance(event, MarkPlayed) and event.name in self.marks_outstanding:
            self.marks_outstanding.remove(event.name)
        return event

    def _require_sid(self) -> str:
        if not self.stream_sid:
            raise TwilioProtocolError("no streamSid yet: Twilio has not sent the 'start' message")
        return self.stream_sid

    def media(self, ulaw: bytes) -> str:
        """Encode a `media` message for this stream."""
        if not self._sid_json:
            self._sid_json = json.dumps(self._require_sid())
        return _media_message(self._sid_json, ulaw)

    def mark(self, name: str) -> str:
        """Encode a `mark` message and remember it as outstanding."""
        message = mark_message(self._require_sid(), name)
        self.marks_outstanding.append(name)
        return message

    def clear(self) -> str:
        """Encode a `clear` message (outstanding marks stay until Twilio echoes them)."""
        return clear_message(self._require_sid())


class TwilioCodec:
    """Media Streams as a `media_codec.MediaCodec` over one StreamState (the leg's codec for Twilio)."""

    def __init__(self, state: StreamState | None = None) -> None:
        self.state = state if state is not None else StreamState()
        self._receive = self.state.receive
        self.media = self.state.media  # bound once: the hot path pays no extra call
        self.mark = self.state.mark
        self.clear = self.state.clear

    def receive(self, frame: str | bytes) -> tuple[MediaEvent, ...]:
        event = self._receive(frame)
        return () if event is None else (event,)


# ------------------------------------------------------------------ webhook signatures

Params = Mapping[str, str] | Mapping[str, Sequence[str]] | Iterable[tuple[str, str]]
_DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}


def _grouped(params: Params | None) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    if params is None:
        return grouped
    items: Iterable[tuple[str, Any]] = params.items() if isinstance(params, Mapping) else params
    for name, value in items:
        values = [value] if isinstance(value, str) else list(value)
        grouped.setdefault(name, []).extend(values)
    return grouped


def compute_signature(auth_token: str, url: str, params: Params | None = None) -> str:
    """base64(HMAC-SHA1(auth_token, url + name + value for each param sorted by name, then value)).

    Like twilio-python's RequestValidator, a repeated name contributes each distinct value once.
    """
    parts = [url]
    grouped = _grouped(params)
    for name in sorted(grouped):
        for value in sorted(set(grouped[name])):
            parts.append(name)
            parts.append(value)
    mac = hmac.new(auth_token.encode("utf-8"), "".join(parts).encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def url_variants(url: str) -> tuple[str, str]:
    """The URL without and with its port; Twilio signs either form depending on the backend."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    userinfo = parts.netloc[: len(parts.netloc) - len(host)]
    hostname, sep, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
    if sep and port.isdigit():
        without = urlunsplit(parts._replace(netloc=userinfo + hostname))
        return without, url
    default = _DEFAULT_PORTS.get(parts.scheme.lower(), 80)
    return url, urlunsplit(parts._replace(netloc=f"{parts.netloc}:{default}"))


def validate_signature(auth_token: str, url: str, params: Params | str | None, signature: str | None) -> bool:
    """Check an `X-Twilio-Signature` in constant time.

    `params` are the form fields of a POST (or None); a str is a JSON body, which Twilio signs by
    putting its SHA-256 in the URL's `bodySHA256` query parameter instead of signing the fields.
    """
    if not signature:
        return False
    expected = signature.encode("utf-8", "replace")
    fields: Params | None
    body_ok = True
    if isinstance(params, str):
        fields = None
        query = parse_qs(urlsplit(url).query)
        if "bodySHA256" in query:
            digest = hashlib.sha256(params.encode("utf-8")).hexdigest()
            body_ok = hmac.compare_digest(digest.encode(), query["bodySHA256"][0].encode("utf-8", "replace"))
    else:
        fields = params
    results = [
        hmac.compare_digest(compute_signature(auth_token, candidate, fields).encode("ascii"), expected)
        for candidate in url_variants(url)
    ]
    return body_ok and any(results)
