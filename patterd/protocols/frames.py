"""Why a carrier's media frame is dropped: the error every media decoder raises, and its closed set of reasons.

A bad frame never ends a call: the leg drops it, counts it by carrier and reason
(`patterd_media_frames_dropped_total{carrier,reason}`) and goes on. The reasons are a small fixed set so
the metric's cardinality stays bounded whatever a peer sends.
"""

from __future__ import annotations

import binascii
from typing import Final, Literal

from patterd.protocols import jsontext

# Reasons, in the order a decoder checks them.
Reason = Literal[
    "too_large",  # longer than MAX_FRAME_CHARS (the websocket server closes at MAX_WEBSOCKET_MESSAGE_BYTES)
    "not_json",  # not UTF-8, not JSON, nested too deeply, or not a JSON object
    "bad_shape",  # a field missing or of the wrong type
    "bad_audio",  # the audio payload is not ASCII base64
    "bad_dtmf",  # a dtmf digit that is not one key of a phone
    "unknown_event",  # an `event` this protocol does not have
    "duplicate_start",  # a second `start` on a stream that already started
    "before_start",  # media before the stream's `start` (Twilio: no streamSid to answer on yet)
    "bad_report",  # a caller's receiver report that is not a number in range (softphone `heard`)
    "unexpected_report",  # a receiver report for a turn never announced, or reported already
    "decoder_error",  # the decoder itself failed (a bug): still dropped, never fatal
]
REASONS: Final[tuple[Reason, ...]] = (
    "too_large",
    "not_json",
    "bad_shape",
    "bad_audio",
    "bad_dtmf",
    "unknown_event",
    "duplicate_start",
    "before_start",
    "bad_report",
    "unexpected_report",
    "decoder_error",
)

# Carriers send 20-160 ms of audio per frame (~0.3-1.5 KB of JSON) and a `start` of a few KB; anything
# near this size is not a media frame, and parsing it would only cost time.
MAX_FRAME_CHARS: Final = 64 * 1024
# The websocket server refuses messages above this (close 1009): it bounds the memory one frame can take.
# Between the two limits a frame is received, dropped and counted; the call goes on.
MAX_WEBSOCKET_MESSAGE_BYTES: Final = 1024 * 1024
DTMF_KEYS: Final = frozenset("0123456789*#ABCD")


class BadFrame(ValueError):
    """A media frame a decoder refuses; `reason` is one of REASONS."""

    def __init__(self, message: str, reason: Reason = "bad_shape") -> None:
        super().__init__(message)
        self.reason: Reason = reason


def check_size(frame: str | bytes, carrier: str) -> None:
    """Refuse a frame longer than MAX_FRAME_CHARS before anything parses it."""
    if len(frame) > MAX_FRAME_CHARS:
        raise BadFrame(
            f"{carrier} media frame of {len(frame)} characters (limit {MAX_FRAME_CHARS})", "too_large"
        )


def load_object(frame: str | bytes, carrier: str) -> dict[str, object]:
    """The JSON object in a frame (size-checked); BadFrame `not_json` for anything else."""
    check_size(frame, carrier)
    try:
        msg = jsontext.loads(frame)
    except jsontext.JSONError as exc:
        raise BadFrame(f"{carrier} media frame is not JSON ({exc}): {frame!r:.80}", "not_json") from None
    if not isinstance(msg, dict):
        raise BadFrame(
            f"{carrier} media frame is a {type(msg).__name__}, expected a JSON object: {frame!r:.80}",
            "not_json",
        )
    return msg


def b64_audio(payload: object, carrier: str) -> bytes:
    """Decode a base64 audio payload strictly; BadFrame `bad_audio` for a non-string, non-ASCII or bad base64."""
    if not isinstance(payload, str):
        raise BadFrame(f"{carrier} media payload is {payload!r:.40}, expected a base64 string", "bad_audio")
    try:
        return binascii.a2b_base64(payload, strict_mode=True)
    except (binascii.Error, ValueError) as exc:  # ValueError: a str with non-ASCII characters
        raise BadFrame(
            f"{carrier} media payload is not base64 ({exc}): {payload!r:.40}", "bad_audio"
        ) from None


def dtmf_digit(value: object, carrier: str, keys: frozenset[str] = DTMF_KEYS) -> str:
    """One key of a phone keypad; BadFrame `bad_dtmf` for anything else."""
    if not isinstance(value, str) or len(value) != 1 or value not in keys:
        raise BadFrame(f"{carrier} dtmf digit {value!r:.40}: expected one of 0-9, *, #, A-D", "bad_dtmf")
    return value
