"""Media decoders under fuzzing: any frame is an event or a BadFrame with a known reason, never another exception.

Covers patterd/protocols/frames.py and the three decoders built on it (Twilio, Telnyx, the softphone),
including the Twilio media fast path, which must read exactly what the full parser reads.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patterd.protocols import frames
from patterd.protocols import local as local_proto
from patterd.protocols import telnyx as telnyx_proto
from patterd.protocols import twilio as twilio_proto
from patterd.protocols.events import CallerAudio, MediaEvent, StreamStarted

KEYS = ("event", "media", "payload", "track", "chunk", "start", "streamSid", "dtmf", "digit", "mark", "name")
EVENTS = ("media", "start", "stop", "dtmf", "mark", "connected", "error", "clear", "bogus", "")
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.sampled_from(EVENTS),
    st.text(max_size=12),
    st.sampled_from(("AAAA", "AAA", "////", "=AAA", "AAA\u00e9", "\ud800", "12", "1", "#", "PCMA", "OPUS")),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=5),
    max_leaves=20,
)
FRAME_OBJECTS = st.fixed_dictionaries(
    {"event": st.sampled_from(EVENTS)}, optional={k: JSON_VALUES for k in KEYS if k != "event"}
)


def _decoders() -> list[tuple[str, Callable[[str | bytes], object], type[frames.BadFrame]]]:
    twilio_state = twilio_proto.StreamState()
    twilio_state.receive(json.dumps({"event": "start", "start": {"streamSid": "MZ1"}}))
    telnyx = telnyx_proto.MediaDecoder()
    return [
        ("twilio", twilio_state.receive, twilio_proto.TwilioProtocolError),
        ("twilio-fresh", twilio_proto.parse_message, twilio_proto.TwilioProtocolError),
        ("telnyx", telnyx.feed, telnyx_proto.TelnyxProtocolError),
        ("local", local_proto.parse_message, local_proto.LocalProtocolError),
    ]


def _check_all(frame: str | bytes) -> None:
    for name, decode, error in _decoders():
        try:
            decode(frame)
        except error as exc:
            assert exc.reason in frames.REASONS, (name, exc.reason)
        # anything else propagates and fails the test


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(FRAME_OBJECTS)
def test_any_json_frame_is_an_event_or_a_bad_frame(obj: dict[str, Any]) -> None:
    _check_all(json.dumps(obj))


@FUZZ
@given(st.text(max_size=200))
def test_any_text_is_an_event_or_a_bad_frame(text: str) -> None:
    _check_all(text)


@FUZZ
@given(st.binary(max_size=200))
def test_any_bytes_are_an_event_or_a_bad_frame(data: bytes) -> None:
    _check_all(data)


@pytest.mark.parametrize("depth", [10, 999, 1000, 5_000, 200_000])
def test_deep_nesting_is_a_bad_frame_not_a_recursion_error(depth: int) -> None:
    nested = "[" * depth + "]" * depth
    for frame in (
        nested,
        '{"event": "media", "media": ' + nested + "}",
        '{"event": "start", "start": ' + nested + "}",
    ):
        _check_all(frame)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ('{"event": "media", "media": {"payload": "AAA\u00e9"}}', "bad_audio"),  # non-ASCII, raw
        ('{"event": "media", "media": {"payload": "\\u00e9AAA"}}', "bad_audio"),  # non-ASCII, escaped
        ('{"event": "media", "media": {"payload": "AAA"}}', "bad_audio"),  # bad padding
        ('{"event": "media", "media": 5}', "bad_shape"),
        ('{"event": "dtmf", "dtmf": {"digit": "12"}}', "bad_dtmf"),
        ('{"event": "teleport"}', "unknown_event"),
        ("[1]", "not_json"),
        (b"\xff\xfe{}", "not_json"),
        ('{"event": "media", "media": {"payload": "' + "A" * frames.MAX_FRAME_CHARS + '"}}', "too_large"),
    ],
)
def test_reasons(frame: str | bytes, reason: str) -> None:
    for name, decode, error in _decoders():
        with pytest.raises(error) as info:
            decode(frame)
        assert info.value.reason == reason, name


def test_odd_length_audio_is_audio() -> None:
    for size in (0, 1, 3, 161):
        frame = json.dumps(
            {"event": "media", "media": {"payload": base64.b64encode(b"\x7f" * size).decode()}}
        )
        for name, decode, _ in _decoders():
            out = decode(frame)
            audio = out[0] if isinstance(out, list) else out
            assert audio == CallerAudio(b"\x7f" * size), name


# ------------------------------------------------------------------ Twilio: the fast path reads like the parser

PAYLOADS = st.one_of(
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", max_size=12),
    st.text(max_size=8),
)


@FUZZ
@given(
    payload=PAYLOADS,
    track=st.sampled_from((None, "inbound", "inbound_track", "outbound", "")),
    sid_first=st.booleans(),
    spaces=st.sampled_from(("", " ", "\n ")),
)
def test_twilio_fast_path_agrees_with_the_full_parser(
    payload: str, track: str | None, sid_first: bool, spaces: str
) -> None:
    media: dict[str, str] = {"track": track} if track is not None else {}
    media["payload"] = payload
    body = (
        {"event": "media", "streamSid": "MZ1", "media": media}
        if sid_first
        else {"event": "media", "media": media}
    )
    frame = json.dumps(body, ensure_ascii=False, separators=(f",{spaces}", f":{spaces}"))

    def outcome(decode: Callable[[str], MediaEvent | None]) -> object:
        try:
            return decode(frame)
        except twilio_proto.TwilioProtocolError as exc:
            return exc.reason

    assert outcome(twilio_proto.parse_message) == outcome(twilio_proto.parse_full)


def test_twilio_refuses_a_second_start() -> None:
    state = twilio_proto.StreamState()
    start = {"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1"}}
    assert isinstance(state.receive(json.dumps(start)), StreamStarted)
    with pytest.raises(twilio_proto.TwilioProtocolError) as info:
        state.receive(json.dumps({"event": "start", "start": {"streamSid": "MZ2", "callSid": "CA2"}}))
    assert info.value.reason == "duplicate_start"
    assert state.stream_sid == "MZ1"  # our audio still goes to the stream that started first


def test_twilio_custom_parameters_must_be_scalars() -> None:
    start = {"event": "start", "start": {"streamSid": "MZ1", "customParameters": {"a": [[1]]}}}
    with pytest.raises(twilio_proto.TwilioProtocolError):
        twilio_proto.parse_message(json.dumps(start))


# ------------------------------------------------------------------ Telnyx: a second start, forged chunk numbers


def _telnyx_media(chunk: int | str, byte: int) -> str:
    payload = base64.b64encode(bytes([byte]) * 160).decode()
    return json.dumps({"event": "media", "media": {"track": "inbound", "chunk": chunk, "payload": payload}})


def test_telnyx_refuses_a_second_start() -> None:
    dec = telnyx_proto.MediaDecoder()
    dec.feed(
        json.dumps({"event": "start", "stream_id": "s1", "start": {"media_format": {"encoding": "PCMU"}}})
    )
    with pytest.raises(telnyx_proto.TelnyxProtocolError) as info:
        dec.feed(
            json.dumps({"event": "start", "stream_id": "s2", "start": {"media_format": {"encoding": "PCMA"}}})
        )
    assert info.value.reason == "duplicate_start"
    assert (dec.stream_id, dec.encoding) == ("s1", "PCMU")


def test_telnyx_a_forged_chunk_number_does_not_stall_the_stream() -> None:
    dec = telnyx_proto.MediaDecoder()
    heard = [e for c in (1, 2, 3) for e in dec.feed(_telnyx_media(c, c))]
    assert dec.feed(_telnyx_media(10**15, 99)) == []  # far ahead: set aside, not waited for
    assert dec.feed(_telnyx_media("9" * 5000, 98))  # too many digits to be a chunk: plain audio
    heard += [e for c in (4, 5) for e in dec.feed(_telnyx_media(c, c))]
    assert [e.payload[0] for e in heard if isinstance(e, CallerAudio)] == [1, 2, 3, 4, 5]
    assert dec.stray == 1


def test_telnyx_a_renumbered_stream_is_followed() -> None:
    dec = telnyx_proto.MediaDecoder()
    for c in (1, 2, 3):
        dec.feed(_telnyx_media(c, 1))
    out = [e for c in (5000, 5001, 5002, 5003) for e in dec.feed(_telnyx_media(c, 2))]
    assert len(out) == 2 and dec.stray == 2  # two set aside, then the new numbering is taken
