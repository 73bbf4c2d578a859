"""Vonage's NCCOs (checked with the official SDK's models) and the websocket codec, frame by frame."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vonage_voice.models.connect_endpoints import WebsocketEndpoint  # type: ignore[import-untyped]
from vonage_voice.models.ncco import Connect  # type: ignore[import-untyped]

from patterd.protocols import vonage as proto
from patterd.protocols.audio import pcm16_to_ulaw, ulaw_to_pcm16
from patterd.protocols.events import CallerAudio, CallerDtmf, MarkPlayed, StreamStarted
from patterd.protocols.frames import BadFrame
from patterd.protocols.media_codec import MediaCodec, Notice

CONNECTED = json.dumps(
    {
        "event": "websocket:connected",
        "content-type": "audio/l16;rate=16000",
        "call_id": "c-1",
        "vonage_uuid": "u-1",
    }
)


def tone_l16(freq: float, ms: int, rate: int = 16000, amplitude: int = 8000) -> bytes:
    n = rate * ms // 1000
    return struct.pack(
        f"<{n}h", *(round(amplitude * math.sin(2 * math.pi * freq * i / rate)) for i in range(n))
    )


def dominant_hz(pcm: bytes, rate: int) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


def started_codec() -> proto.VonageCodec:
    codec = proto.VonageCodec()
    codec.receive(CONNECTED)
    return codec


def test_answer_ncco_is_what_the_sdk_builds() -> None:
    ncco = proto.connect_websocket("wss://gw.example.com/ws/vonage/stream/c-1?token=t", {"call_id": "c-1"})
    sdk = Connect(
        endpoint=[
            WebsocketEndpoint(
                uri="wss://gw.example.com/ws/vonage/stream/c-1?token=t",
                contentType="audio/l16;rate=16000",
                headers={"call_id": "c-1"},
            )
        ],
        randomFromNumber=True,  # the SDK's Connect insists on a from; Vonage ignores it for websockets
    ).model_dump(by_alias=True, exclude_none=True)
    del sdk["randomFromNumber"]
    assert ncco == [sdk]


def test_transfer_ncco_is_what_the_sdk_builds() -> None:
    ncco = proto.connect_phone("+15559990000", "+15550001234")
    sdk = Connect(endpoint=[{"type": "phone", "number": "15559990000"}], from_="15550001234")
    assert ncco == [sdk.model_dump(by_alias=True, exclude_none=True)]
    assert proto.refuse() == []


def test_connected_gives_the_headers_and_the_call_uuid() -> None:
    codec = proto.VonageCodec()
    conforms: MediaCodec = codec
    assert conforms is codec
    (event,) = codec.receive(CONNECTED)
    assert event == StreamStarted("u-1", "u-1", {"call_id": "c-1", "vonage_uuid": "u-1"})
    with pytest.raises(BadFrame) as twice:
        codec.receive(CONNECTED)
    assert twice.value.reason == "duplicate_start"


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("not json", "not_json"),
        ("[1, 2]", "not_json"),
        ('{"digit": "1"}', "bad_shape"),
        ('{"event": "websocket:connected", "content-type": "audio/l16;rate=8000"}', "bad_shape"),
        ('{"event": "websocket:dtmf", "digit": "12"}', "bad_dtmf"),
        ('{"event": "websocket:dtmf"}', "bad_dtmf"),
        ('{"event": "media"}', "unknown_event"),
    ],
)
def test_bad_text_frames_are_refused_with_their_reason(frame: str, reason: str) -> None:
    with pytest.raises(BadFrame) as refused:
        started_codec().receive(frame)
    assert refused.value.reason == reason


def test_dtmf_and_other_websocket_events() -> None:
    codec = started_codec()
    assert codec.receive('{"event": "websocket:dtmf", "digit": "#", "duration": 260}') == (CallerDtmf("#"),)
    (notice,) = codec.receive('{"event": "websocket:hangup"}')
    assert notice == Notice("vonage_websocket_event", {"event": "websocket:hangup"})


def test_binary_audio_before_connected_and_broken_samples_are_refused() -> None:
    with pytest.raises(BadFrame) as early:
        proto.VonageCodec().receive(bytes(640))
    assert early.value.reason == "before_start"
    for frame in (b"", b"\x00\x01\x02"):
        with pytest.raises(BadFrame) as broken:
            started_codec().receive(frame)
        assert broken.value.reason == "bad_audio"
    with pytest.raises(BadFrame) as huge:
        started_codec().receive(bytes(70_000))
    assert huge.value.reason == "too_large"


def test_caller_audio_640_bytes_of_l16_become_one_ulaw_frame_keeping_the_tone() -> None:
    codec = started_codec()
    tone = tone_l16(1000, 400)
    ulaw = b""
    for i in range(0, len(tone), proto.FRAME_BYTES):
        (event,) = codec.receive(tone[i : i + proto.FRAME_BYTES])
        assert isinstance(event, CallerAudio) and len(event.payload) == 160
        ulaw += event.payload
    pcm8 = ulaw_to_pcm16(ulaw)
    assert abs(dominant_hz(pcm8, 8000) - 1000) < 10
    rms = math.sqrt(np.mean(np.frombuffer(pcm8[1600:], dtype="<i2").astype(np.float64) ** 2))
    assert 0.6 * 8000 / math.sqrt(2) < rms < 1.2 * 8000 / math.sqrt(2)


def test_agent_audio_one_ulaw_frame_becomes_640_bytes_of_l16_keeping_the_tone() -> None:
    codec = started_codec()
    ulaw = pcm16_to_ulaw(tone_l16(440, 400, rate=8000))
    out = b"".join(codec.media(ulaw[i : i + 160]) for i in range(0, len(ulaw), 160))
    assert len(out) == 4 * len(ulaw) and all(len(codec.media(ulaw[:160])) == 640 for _ in range(3))
    assert abs(dominant_hz(out, 16000) - 440) < 10
    # Nothing above the 8 kHz side's band: the upsampler's images are filtered out.
    spectrum = np.abs(np.fft.rfft(np.frombuffer(out, dtype="<i2").astype(np.float64)))
    freqs = np.fft.rfftfreq(len(out) // 2, 1 / 16000)
    assert spectrum[freqs > 4500].max() < spectrum.max() / 300


def test_marks_are_notifies_and_a_clear_echoes_the_notifies_it_dropped() -> None:
    codec: MediaCodec = started_codec()
    assert json.loads(str(codec.mark("m1"))) == {"action": "notify", "payload": {"patterd_mark": "m1"}}
    assert json.loads(str(codec.mark("m2"))) == {"action": "notify", "payload": {"patterd_mark": "m2"}}
    played = '{"event": "websocket:notify", "payload": {"patterd_mark": "m1"}}'
    assert codec.receive(played) == (MarkPlayed("m1"),)
    assert codec.receive(played) == ()  # answered already
    assert json.loads(str(codec.clear())) == {"action": "clear"}
    assert codec.receive('{"event": "websocket:cleared"}') == (MarkPlayed("m2"),)  # Vonage never answers m2
    assert codec.receive('{"event": "websocket:cleared"}') == ()
    with pytest.raises(BadFrame) as foreign:
        codec.receive('{"event": "websocket:notify", "payload": {"reply": 1}}')
    assert foreign.value.reason == "bad_shape"


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=2000), st.text(max_size=300)))
def test_any_frame_is_an_event_or_a_bad_frame(frame: str | bytes) -> None:
    codec = started_codec()
    try:
        events = codec.receive(frame)
    except BadFrame:
        return
    assert all(isinstance(e, CallerAudio | CallerDtmf | MarkPlayed | Notice | StreamStarted) for e in events)
