"""Tests of the Twilio codec: TwiML, Media Streams messages (documented examples), signatures vs twilio-python."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import string
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]
from twilio.twiml.voice_response import Connect, VoiceResponse  # type: ignore[import-untyped]

from patterd.protocols import twilio as tw
from patterd.protocols.events import CallerAudio, CallerDtmf, MarkPlayed, StreamStarted, StreamStopped

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"

# Example payloads as printed on twilio.com/docs/voice/media-streams/websocket-messages.
CONNECTED = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
START = {
    "event": "start",
    "sequenceNumber": "1",
    "start": {
        "accountSid": "AC7d0d49e2e1a0b2c3d4e5f60718293a4b",
        "streamSid": SID,
        "callSid": "CA7d0d49e2e1a0b2c3d4e5f60718293a4b",
        "tracks": ["inbound", "outbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"},
    },
    "streamSid": SID,
}
MEDIA: dict[str, Any] = {
    "event": "media",
    "sequenceNumber": "3",
    "media": {
        "track": "inbound",
        "chunk": "1",
        "timestamp": "5",
        "payload": base64.b64encode(b"\xff" * 160).decode(),
    },
    "streamSid": SID,
}
DTMF = {
    "event": "dtmf",
    "streamSid": SID,
    "sequenceNumber": "5",
    "dtmf": {"track": "inbound_track", "digit": "1"},
}
MARK = {"event": "mark", "sequenceNumber": "4", "streamSid": SID, "mark": {"name": "my label"}}
STOP = {
    "event": "stop",
    "sequenceNumber": "5",
    "stop": {
        "accountSid": "AC7d0d49e2e1a0b2c3d4e5f60718293a4b",
        "callSid": "CA7d0d49e2e1a0b2c3d4e5f60718293a4b",
    },
    "streamSid": SID,
}


def _media(payload: str, track: str = "inbound") -> str:
    return json.dumps({**MEDIA, "media": {**MEDIA["media"], "payload": payload, "track": track}})


# ------------------------------------------------------------------ TwiML


def test_connect_stream_matches_the_sdk_output() -> None:
    ours = ET.fromstring(
        tw.connect_stream("wss://h.example/ws/stream/c1", {"call_id": "c1", "odd": 'a&<>"b'})
    )
    sdk = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url="wss://h.example/ws/stream/c1")
    stream.parameter(name="call_id", value="c1")
    stream.parameter(name="odd", value='a&<>"b')
    sdk.append(connect)
    theirs = ET.fromstring(str(sdk))
    assert ET.tostring(ours) == ET.tostring(theirs)


def test_connect_stream_without_parameters() -> None:
    root = ET.fromstring(tw.connect_stream("wss://h/ws"))
    stream = root.find("Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://h/ws" and list(stream) == []


def test_reject_dial_empty() -> None:
    assert ET.fromstring(tw.reject()).find("Reject") is not None
    reject = ET.fromstring(tw.reject("busy")).find("Reject")
    assert reject is not None and reject.get("reason") == "busy"
    with pytest.raises(ValueError, match="'nope'"):
        tw.reject("nope")
    dial = ET.fromstring(tw.dial("+15550009999")).find("Dial")
    assert dial is not None and dial.text == "+15550009999"
    assert ET.fromstring(tw.empty_response()).tag == "Response"


# ------------------------------------------------------------------ messages from Twilio


def test_documented_messages_parse() -> None:
    assert tw.parse_message(json.dumps(CONNECTED)) is None
    started = tw.parse_message(json.dumps(START))
    assert started == StreamStarted(
        stream_id=SID,
        carrier_call_id="CA7d0d49e2e1a0b2c3d4e5f60718293a4b",
        parameters={"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"},
    )
    payload = bytes(range(160))
    assert tw.parse_message(_media(base64.b64encode(payload).decode())) == CallerAudio(payload)
    assert tw.parse_message(json.dumps(DTMF)) == CallerDtmf("1")
    assert tw.parse_message(json.dumps(MARK)) == MarkPlayed("my label")
    assert tw.parse_message(json.dumps(STOP)) == StreamStopped("stop")
    assert tw.parse_message(json.dumps(STOP).encode()) == StreamStopped("stop")


def test_outbound_track_is_ignored() -> None:
    assert tw.parse_message(_media("AAAA", track="outbound")) is None


@pytest.mark.parametrize(
    ("frame", "needle"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"foo": 1}', "'event'"),
        ('{"event": "media"}', "without 'media'"),
        ('{"event": "media", "media": "x"}', "expected an object"),
        ('{"event": "media", "media": {}}', "'payload'"),
        ('{"event": "media", "media": {"payload": 5}}', "expected a string"),
        ('{"event": "media", "media": {"payload": "@@@"}}', "not base64"),
        ('{"event": "mark", "mark": {}}', "'name'"),
        ('{"event": "dtmf", "dtmf": {"digit": "12"}}', "'12'"),
        ('{"event": "start", "start": {}}', "streamSid"),
        (
            '{"event": "start", "start": {"streamSid": "MZ1", "mediaFormat": {"encoding": "audio/x-alaw"}}}',
            "audio/x-alaw",
        ),
        ('{"event": "start", "start": {"streamSid": "MZ1", "customParameters": [1]}}', "customParameters"),
        ('{"event": "bogus"}', "unknown Twilio Media Streams event 'bogus'"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_malformed_frames_raise_clear_errors(frame: str | bytes, needle: str) -> None:
    with pytest.raises(tw.TwilioProtocolError, match=None) as info:
        tw.parse_message(frame)
    assert needle in str(info.value)
    assert isinstance(info.value, ValueError)


# ------------------------------------------------------------------ messages to Twilio


def test_outbound_messages_have_the_documented_shape() -> None:
    frame = bytes([0x7F, 0xFF]) * 80
    media = json.loads(tw.media_message(SID, frame))
    assert media == {
        "event": "media",
        "streamSid": SID,
        "media": {"payload": base64.b64encode(frame).decode()},
    }
    assert json.loads(tw.mark_message(SID, "m1")) == {
        "event": "mark",
        "streamSid": SID,
        "mark": {"name": "m1"},
    }
    assert json.loads(tw.clear_message(SID)) == {"event": "clear", "streamSid": SID}
    odd = 'M"Z\\1'
    assert json.loads(tw.media_message(odd, b"\x00"))["streamSid"] == odd


def test_stream_state_tracks_sid_and_marks() -> None:
    state = tw.StreamState()
    with pytest.raises(tw.TwilioProtocolError, match="streamSid"):
        state.media(b"\xff" * 160)
    assert state.receive(json.dumps(CONNECTED)) is None
    state.receive(json.dumps(START))
    assert state.stream_sid == SID and state.parameters["FirstName"] == "Jane"
    assert json.loads(state.media(b"\xff"))["streamSid"] == SID
    state.mark("a")
    state.mark("b")
    assert json.loads(state.clear()) == {"event": "clear", "streamSid": SID}
    assert state.marks_outstanding == ["a", "b"]
    assert state.receive(json.dumps({**MARK, "mark": {"name": "a"}})) == MarkPlayed("a")
    assert state.marks_outstanding == ["b"]
    state.receive(json.dumps({**MARK, "mark": {"name": "zzz"}}))  # unknown marks are passed on, not an error
    assert state.marks_outstanding == ["b"]


# ------------------------------------------------------------------ signatures


def _random_params(rng: random.Random) -> dict[str, str]:
    alphabet = string.ascii_letters + string.digits + " +&=?/é漢"
    return {
        "".join(rng.choices(string.ascii_letters, k=rng.randint(1, 12))): "".join(
            rng.choices(alphabet, k=rng.randint(0, 20))
        )
        for _ in range(rng.randint(0, 8))
    }


def test_compute_signature_matches_the_official_validator_on_many_inputs() -> None:
    rng = random.Random(4)
    urls = [
        "https://mycompany.com/myapp.php?foo=1&bar=2",
        "https://abc.example.com/webhooks/twilio/voice?call_id=c-1",
        "https://abc.example.com:8443/webhooks/twilio/status",
        "wss://abc.example.com/ws/stream/123",
        "http://127.0.0.1:8000/x?y=%20z",
    ]
    for i in range(300):
        token = "".join(rng.choices(string.hexdigits, k=32))
        url = urls[i % len(urls)]
        params = _random_params(rng)
        official = RequestValidator(token)
        assert tw.compute_signature(token, url, params) == official.compute_signature(url, params)
        signature = official.compute_signature(url, params)
        assert tw.validate_signature(token, url, params, signature)
        assert official.validate(url, params, signature)


def test_documented_signature_example() -> None:
    # The worked example of twilio.com/docs/usage/webhooks/webhooks-security (and twilio-python's tests).
    token = "12345"
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    assert tw.compute_signature(token, url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert tw.validate_signature(token, url, params, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")


def test_repeated_params_are_signed_like_the_official_validator() -> None:
    pairs = [("StatusCallbackEvent", "ringing"), ("StatusCallbackEvent", "answered"), ("A", "1"), ("A", "1")]
    grouped = {"StatusCallbackEvent": ["ringing", "answered"], "A": ["1", "1"]}

    class Multi(dict[str, list[str]]):
        def getall(self, name: str) -> list[str]:
            return self[name]

    expected = RequestValidator("tok").compute_signature("https://h/p", Multi(grouped))
    assert tw.compute_signature("tok", "https://h/p", pairs) == expected
    assert tw.compute_signature("tok", "https://h/p", grouped) == expected


@pytest.mark.parametrize(
    ("signed_url", "checked_url"),
    [
        ("https://h.example/p?x=1", "https://h.example:443/p?x=1"),
        ("https://h.example:443/p?x=1", "https://h.example/p?x=1"),
        ("http://h.example:80/p", "http://h.example/p"),
        ("wss://h.example:443/ws/stream/1", "wss://h.example/ws/stream/1"),
        ("https://h.example:8443/p", "https://h.example:8443/p"),
    ],
)
def test_url_with_or_without_default_port(signed_url: str, checked_url: str) -> None:
    params = {"CallSid": "CA1", "From": "+15550001111"}
    signature = tw.compute_signature("tok", signed_url, params)
    assert tw.validate_signature("tok", checked_url, params, signature)
    if not signed_url.startswith("wss"):  # the official validator adds :80 to wss URLs; we add :443
        assert RequestValidator("tok").validate(checked_url, params, signature)


def test_invalid_signatures_are_refused() -> None:
    params = {"CallSid": "CA1"}
    good = tw.compute_signature("tok", "https://h/p", params)
    assert not tw.validate_signature("tok", "https://h/p", params, None)
    assert not tw.validate_signature("tok", "https://h/p", params, "")
    assert not tw.validate_signature("other", "https://h/p", params, good)
    assert not tw.validate_signature("tok", "https://h/p", {"CallSid": "CA2"}, good)
    assert not tw.validate_signature("tok", "https://h/q", params, good)
    assert not tw.validate_signature("tok", "https://evil/p", params, good)
    assert not tw.validate_signature("tok", "https://h/p", params, good + "é")


def test_json_body_signed_with_body_sha256() -> None:
    body = json.dumps({"CallSid": "CA1", "event": "x"})
    digest = hashlib.sha256(body.encode()).hexdigest()
    url = f"https://h.example/hook?bodySHA256={digest}"
    official = RequestValidator("tok")
    signature = official.compute_signature(url, {})
    assert official.validate(url, body, signature)
    assert tw.validate_signature("tok", url, body, signature)
    assert not tw.validate_signature("tok", url, body + " ", signature)  # body tampered
    tampered_url = f"https://h.example/hook?bodySHA256={'0' * 64}"
    assert not tw.validate_signature("tok", tampered_url, body, official.compute_signature(tampered_url, {}))


def test_url_variants() -> None:
    assert tw.url_variants("https://h/p?q=1") == ("https://h/p?q=1", "https://h:443/p?q=1")
    assert tw.url_variants("https://h:443/p") == ("https://h/p", "https://h:443/p")
    assert tw.url_variants("ws://h/p") == ("ws://h/p", "ws://h:80/p")
    assert tw.url_variants("https://[::1]:8443/p") == ("https://[::1]/p", "https://[::1]:8443/p")


MEDIA_SHAPES = [
    # Twilio's own member order, compact and pretty-printed
    '{"event":"media","sequenceNumber":"3","media":{"track":"inbound","chunk":"1","timestamp":"5",'
    '"payload":"%s"},"streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0"}',
    '{\n "event": "media",\n "sequenceNumber": "3",\n "media": {\n  "track": "inbound",\n'
    '  "chunk": "1",\n  "timestamp": "5",\n  "payload": "%s"\n },\n "streamSid": "MZ1"\n}',
    # optional members missing
    '{"event":"media","media":{"payload":"%s"}}',
    # other orders and extra members: the full parser
    '{"event": "media", "streamSid": "MZ1", "media": {"track": "inbound", "payload": "%s"}, "sequenceNumber": "2"}',
    '{"media":{"payload":"%s","track":"inbound_track"},"event":"media","extra":[1,2]}',
]


@pytest.mark.parametrize("shape", MEDIA_SHAPES)
def test_media_fast_path_reads_like_json(shape: str) -> None:
    audio = bytes(range(160))
    frame = shape % base64.b64encode(audio).decode()
    assert json.loads(frame)["event"] == "media"
    assert tw.parse_message(frame) == CallerAudio(audio)


@pytest.mark.parametrize(
    "frame",
    [
        '{"event":"media","media":{"track":"inbound","payload":"@@@@"}}',  # not base64
        '{"event":"media","media":{"track":"inbound","payload":"AAA"}}',  # bad padding
        '{"event":"media","media":{"track":"inbound","payload":"AAAA"}',  # truncated JSON
        '{"event":"media","media":{"track":"inbound","payload":"AAAA"}}}',  # trailing garbage
        '{"event":"media","media":{"track":"inbound"}}',  # no payload
    ],
)
def test_media_fast_path_still_rejects_malformed_frames(frame: str) -> None:
    with pytest.raises(tw.TwilioProtocolError):
        tw.parse_message(frame)


def test_media_fast_path_ignores_the_outbound_track_and_defers_escapes() -> None:
    payload = base64.b64encode(b"\x01\x02\x03").decode()
    outbound = '{"event":"media","media":{"track":"outbound","payload":"' + payload + '"}}'
    assert tw.parse_message(outbound) is None
    escaped_payload = payload[:2] + "\\u00" + format(ord(payload[2]), "02x") + payload[3:]
    escaped = '{"event":"media","media":{"track":"inbound","payload":"' + escaped_payload + '"}}'
    assert tw.parse_message(escaped) == CallerAudio(b"\x01\x02\x03")


def test_fast_path_accepts_stream_sid_right_after_event() -> None:
    """Some senders put streamSid before sequenceNumber; the hot path must not fall back to json for them."""
    from patterd.protocols.twilio import _MEDIA_FRAME

    frame = (
        '{"event":"media","streamSid":"MZ1","sequenceNumber":"2",'
        '"media":{"track":"inbound","chunk":"1","timestamp":"20","payload":"AAAA"}}'
    )
    assert _MEDIA_FRAME.fullmatch(frame) is not None
