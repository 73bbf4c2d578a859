"""Plivo wire formats against the official SDK: answer XML, V3 signatures both ways, the stream codec."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st
from plivo.utils.signature_v3 import validate_v3_signature  # type: ignore[import-untyped]
from plivo.xml import DialElement, HangupElement, NumberElement, ResponseElement, StreamElement  # type: ignore[import-untyped]

from patterd.protocols import plivo as proto
from patterd.protocols import plivo_signature as sig
from patterd.protocols.events import CallerAudio, CallerDtmf, MarkPlayed, StreamStarted, StreamStopped
from patterd.protocols.frames import BadFrame
from tests.fakes.plivo import FakePlivo, FakePlivoRest

TOKEN = "MjQ1ZTg4YzRhZmM0NjYxYmQ0ZmI2ZTBkNTcwYmE5"
URL = "wss://gw.example.com/ws/plivo/stream/call_1?token=abc"


def _tree(xml: str) -> ET.Element:
    return ET.fromstring(xml.encode())


def _same(ours: str, sdk: str) -> None:
    a, b = _tree(ours), _tree(sdk)
    assert ET.tostring(a) == ET.tostring(b), (ours, sdk)


# ------------------------------------------------------------------ XML


def test_stream_xml_is_what_the_sdk_builds() -> None:
    headers = proto.encode_extra_headers({"call_id": "call_1"})
    ours = proto.stream(
        URL, {"call_id": "call_1"}, "https://gw.example.com/webhooks/plivo/stream?call_id=call_1"
    )
    element = StreamElement(
        URL,
        bidirectional=True,
        keepCallAlive=True,
        contentType="audio/x-mulaw;rate=8000",
        extraHeaders=headers,
        statusCallbackUrl="https://gw.example.com/webhooks/plivo/stream?call_id=call_1",
        statusCallbackMethod="POST",
    )
    sdk = ResponseElement().add(element).to_string(pretty=False)
    a, b = _tree(ours).find("Stream"), _tree(sdk).find("Stream")
    assert a is not None and b is not None
    assert a.attrib == b.attrib and a.text == b.text == URL
    assert ours.startswith('<?xml version="1.0" encoding="utf-8"?><Response><Stream ')


def test_hangup_and_dial_xml_are_what_the_sdk_builds() -> None:
    _same(proto.hangup("rejected"), ResponseElement().add(HangupElement(reason="rejected")).to_string(False))
    dial = DialElement().add(NumberElement("+15557654321"))
    _same(proto.dial("+15557654321"), ResponseElement().add(dial).to_string(False))
    with pytest.raises(ValueError):
        proto.hangup("bored")


@given(st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=40), max_size=4))
def test_extra_headers_round_trip_in_plivos_alphabet(values: dict[str, str]) -> None:
    encoded = proto.encode_extra_headers(values)
    assert all(c.isascii() and (c.isalnum() or c in ",=") for c in encoded)
    assert proto.decode_extra_headers(encoded) == values


def test_extra_headers_keep_plain_pairs_and_cap_the_size() -> None:
    assert proto.decode_extra_headers("userId=12345;sessionId=abc") == {"userId": "12345", "sessionId": "abc"}
    assert proto.decode_extra_headers("xzz=1,junk") == {"xzz": "1"}
    with pytest.raises(ValueError, match="512"):
        proto.encode_extra_headers({"k": "v" * 300})


# ------------------------------------------------------------------ signatures


@pytest.mark.parametrize(
    ("url", "params"),
    [
        (
            "https://gw.example.com/webhooks/plivo/voice",
            {"CallUUID": "u-1", "From": "15551230001", "To": "1555"},
        ),
        ("https://gw.example.com/webhooks/plivo/hangup?call_id=call_1&z=2", {"CallStatus": "completed"}),
        ("https://gw.example.com/webhooks/plivo/voice?call_id=call_1", {}),
        ("https://gw.example.com/webhooks/plivo/voice", {}),
        ("https://gw.example.com:8443/a/b", {"Ünïcode": "välue ✓", "empty": ""}),
    ],
)
def test_our_signatures_pass_the_sdk_validator_and_its_pass_ours(url: str, params: dict[str, str]) -> None:
    nonce = "05429567804466091622"
    ours = sig.compute_signature(TOKEN, "POST", url, nonce, params)
    assert validate_v3_signature("POST", url, nonce, TOKEN, ours, dict(params))
    # The fake Plivo signs with the SDK's own functions.
    net = FakePlivo("http://127.0.0.1:1", "gw.example.com", rest=FakePlivoRest(auth_token=TOKEN))
    theirs = net.sign(url, params, nonce)
    assert theirs == ours
    assert sig.validate_signature(TOKEN, "POST", url, params, nonce, theirs)
    assert sig.validate_signature(TOKEN, "POST", url, params, nonce, f"bm9wZQ==,{theirs}")  # several
    assert not sig.validate_signature(TOKEN, "POST", url, params, "1", theirs)  # another nonce
    assert not sig.validate_signature("other", "POST", url, params, nonce, theirs)
    assert not sig.validate_signature(TOKEN, "POST", url, {**params, "x": "1"}, nonce, theirs)
    assert not sig.validate_signature(TOKEN, "POST", url, params, nonce, None)
    assert not sig.validate_signature(TOKEN, "POST", url, params, None, theirs)


def test_get_signatures_match_the_sdk() -> None:
    url = "https://gw.example.com/ws/plivo/stream/call_1?token=abc&b=2"
    ours = sig.compute_signature(TOKEN, "GET", url, "42", {"a": "1"})
    assert validate_v3_signature("GET", url, "42", TOKEN, ours, {"a": "1"})


# ------------------------------------------------------------------ the stream codec


def _start(**extra: object) -> str:
    msg = {
        "event": "start",
        "sequenceNumber": 1,
        "start": {
            "callId": "c-uuid",
            "streamId": "s-uuid",
            "accountId": "MA1",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
        },
        "extra_headers": proto.encode_extra_headers({"call_id": "call_1"}),
    }
    msg.update(extra)
    return json.dumps(msg)


def _media(payload: bytes, track: str = "inbound") -> str:
    media = {
        "track": track,
        "timestamp": "1705312200000",
        "chunk": 1,
        "payload": base64.b64encode(payload).decode(),
    }
    return json.dumps({"event": "media", "sequenceNumber": 2, "streamId": "s-uuid", "media": media})


def test_codec_round_trip() -> None:
    state = proto.StreamState()
    with pytest.raises(BadFrame) as before:
        state.mark("m0")
    assert before.value.reason == "before_start"
    assert state.receive(_start()) == (StreamStarted("s-uuid", "c-uuid", {"call_id": "call_1"}),)
    assert state.receive(_media(b"\x01" * 160)) == (CallerAudio(b"\x01" * 160),)
    assert state.receive(_media(b"\x01" * 160, track="outbound")) == ()
    dtmf = {"event": "dtmf", "streamId": "s-uuid", "dtmf": {"digit": "#", "track": "inbound"}}
    assert state.receive(json.dumps(dtmf)) == (CallerDtmf("#"),)

    play = json.loads(state.media(b"\xff" * 160))
    assert play == {
        "event": "playAudio",
        "streamId": "s-uuid",
        "media": {
            "contentType": "audio/x-mulaw",
            "sampleRate": 8000,
            "payload": base64.b64encode(b"\xff" * 160).decode(),
        },
    }
    assert json.loads(state.mark("m1")) == {"event": "checkpoint", "streamId": "s-uuid", "name": "m1"}
    assert json.loads(state.mark("m2")) == {"event": "checkpoint", "streamId": "s-uuid", "name": "m2"}
    assert json.loads(state.clear()) == {"event": "clearAudio", "streamId": "s-uuid"}
    played = json.dumps({"event": "playedStream", "streamId": "s-uuid", "name": "m1"})
    assert state.receive(played) == (MarkPlayed("m1"),)
    # clearedAudio: Plivo never answers the dropped checkpoints; the codec answers them for it.
    assert state.receive(json.dumps({"event": "clearedAudio", "streamId": "s-uuid"})) == (MarkPlayed("m2"),)
    assert state.checkpoints_outstanding == []
    late = json.dumps({"event": "playedStream", "streamId": "s-uuid", "name": "m2"})
    assert state.receive(late) == ()  # answered once only
    assert state.receive(json.dumps({"event": "stop"})) == (StreamStopped("stop"),)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("not json", "not_json"),
        ("[1, 2]", "not_json"),
        ('{"no": "event"}', "bad_shape"),
        ('{"event": "media"}', "bad_shape"),
        ('{"event": "media", "media": {"payload": "@@@"}}', "bad_audio"),
        ('{"event": "media", "media": {"payload": 7}}', "bad_audio"),
        ('{"event": "dtmf", "dtmf": {"digit": "55"}}', "bad_dtmf"),
        ('{"event": "dtmf"}', "bad_shape"),
        ('{"event": "playedStream"}', "bad_shape"),
        ('{"event": "start", "start": {"callId": "c"}}', "bad_shape"),
        ('{"event": "teleport"}', "unknown_event"),
        ("x" * 70_000, "too_large"),
    ],
)
def test_bad_frames_raise_bad_frame_with_a_reason(frame: str, reason: str) -> None:
    with pytest.raises(BadFrame) as raised:
        proto.StreamState().receive(frame)
    assert raised.value.reason == reason


def test_play_audio_before_start_and_with_odd_stream_ids() -> None:
    assert json.loads(proto.StreamState().media(b"\x01"))["media"]["payload"] == "AQ=="
    odd = json.loads(proto.play_audio_message(b"", 'a"b\\c'))
    assert odd["streamId"] == 'a"b\\c' and odd["media"]["payload"] == ""


def test_start_refuses_other_formats_and_a_second_start() -> None:
    state = proto.StreamState()
    l16 = {
        "event": "start",
        "start": {
            "streamId": "s",
            "callId": "c",
            "mediaFormat": {"encoding": "audio/x-l16", "sampleRate": 16000},
        },
    }
    with pytest.raises(BadFrame):
        state.receive(json.dumps(l16))
    state.receive(_start())
    with pytest.raises(BadFrame) as second:
        state.receive(_start())
    assert second.value.reason == "duplicate_start"


@given(st.binary(max_size=400))
def test_any_bytes_are_events_or_bad_frames(data: bytes) -> None:
    try:
        events = proto.StreamState().receive(data)
    except BadFrame as exc:
        assert exc.reason in ("not_json", "bad_shape", "unknown_event", "bad_audio", "bad_dtmf")
    else:
        assert isinstance(events, tuple)
