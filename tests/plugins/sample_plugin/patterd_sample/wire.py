"""The sample carrier's wire, sans I/O: HMAC-signed JSON webhooks and a JSON media socket (base64 μ-law).

Webhooks: the carrier POSTs JSON to `/webhooks/sample/{hook}` with `X-Sample-Signature:
hex(HMAC-SHA256(secret, timestamp + "." + body))` and `X-Sample-Timestamp` (unix seconds; stale after
five minutes). `voice` {call, from, to, direction, call_id?} is answered with `{"action": "stream",
"url": wss-url}` or `{"action": "reject"}`; `status` {call, status} with 204.

Media (text frames, both ways): carrier → us `start` {call, call_id}, `audio` {ulaw}, `dtmf` {digit},
`played` {mark}, `stop`; us → carrier `audio` {ulaw}, `mark` {name}, `clear`.

REST (Bearer api key, JSON): POST /v1/calls {to, from, answer_url} → {id}; POST /v1/calls/{id}/hangup;
POST /v1/calls/{id}/transfer {to}.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Sequence

from patterd.protocols.events import (
    CallerAudio,
    CallerDtmf,
    MarkPlayed,
    MediaEvent,
    StreamStarted,
    StreamStopped,
)
from patterd.protocols.frames import BadFrame
from patterd.protocols.jsontext import JSONError, loads
from patterd.protocols.media_codec import Notice

SIGNATURE_HEADER = "X-Sample-Signature"
TIMESTAMP_HEADER = "X-Sample-Timestamp"
MAX_SKEW_SECS = 300
DTMF_DIGITS = frozenset("0123456789*#ABCD")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The webhook signature: hex HMAC-SHA256 over `timestamp.body`."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: str, timestamp: str | None, signature: str | None, body: bytes, now: float) -> bool:
    """A fresh timestamp and a matching signature (compared in constant time)."""
    if not timestamp or not signature or not timestamp.isdigit():
        return False
    if abs(now - int(timestamp)) > MAX_SKEW_SECS:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class SampleCodec:
    """The media socket as a `patterd.protocols.media_codec.MediaCodec`."""

    def __init__(self) -> None:
        self.started = False

    def receive(self, frame: str | bytes) -> Sequence[MediaEvent | Notice]:
        if isinstance(frame, bytes):
            raise BadFrame("the sample media socket carries text frames only", "bad_shape")
        try:
            message = loads(frame)
        except JSONError as exc:
            raise BadFrame(f"not JSON: {exc}", "not_json") from exc
        if not isinstance(message, dict):
            raise BadFrame("a media message is a JSON object", "not_json")
        kind = message.get("type")
        if kind == "audio":
            try:
                return (CallerAudio(base64.b64decode(str(message.get("ulaw", "")), validate=True)),)
            except (binascii.Error, ValueError) as exc:
                raise BadFrame(f"audio is not base64: {exc}", "bad_audio") from exc
        if kind == "start":
            if self.started:
                raise BadFrame("a second start", "bad_shape")
            self.started = True
            call_id = message.get("call_id")
            parameters = {"call_id": call_id} if isinstance(call_id, str) else {}
            return (StreamStarted(str(message.get("call", "")), str(message.get("call", "")), parameters),)
        if kind == "dtmf":
            digit = message.get("digit")
            if not isinstance(digit, str) or digit not in DTMF_DIGITS:
                raise BadFrame(f"bad DTMF digit {digit!r}", "bad_shape")
            return (CallerDtmf(digit),)
        if kind == "played":
            return (MarkPlayed(str(message.get("mark", ""))),)
        if kind == "stop":
            return (StreamStopped("stopped by the carrier"),)
        return (Notice("sample_unknown_message", {"type": str(kind)[:40]}),)

    def media(self, ulaw: bytes) -> str:
        return json.dumps({"type": "audio", "ulaw": base64.b64encode(ulaw).decode("ascii")})

    def mark(self, name: str) -> str:
        return json.dumps({"type": "mark", "name": name})

    def clear(self) -> str:
        return '{"type": "clear"}'
