"""The Telnyx codec against documented example payloads: webhooks, commands, media frames, signatures."""

from __future__ import annotations

import base64
import json
import time

import pytest
from nacl.signing import SigningKey

from patterd.protocols import telnyx as proto
from patterd.protocols.audio import ulaw_to_alaw
from patterd.protocols.events import CallerAudio, CallerDtmf, MarkPlayed, StreamStarted, StreamStopped

# call.initiated as delivered for an inbound call (shape of the Telnyx Call Control webhook docs).
CALL_INITIATED = {
    "data": {
        "event_type": "call.initiated",
        "id": "b97d4d5e-6fe7-4432-911f-79637bf6ebb7",
        "occurred_at": "2025-11-23T03:30:00.076316Z",
        "payload": {
            "call_control_id": "v3:2EC-70CTEjlUq3tDM0CxKXIt5-5N4iP4wo7_-PfH-qub97Sk4EqO5w",
            "call_leg_id": "b0e6224c-c81c-11f0-afbb-02420aef93a0",
            "call_session_id": "b0e6141e-c81c-11f0-abac-02420aef93a0",
            "caller_id_name": "+18124040851",
            "calling_party_type": "pstn",
            "client_state": None,
            "connection_id": "2811212257810187875",
            "direction": "incoming",
            "from": "+18124040851",
            "offered_codecs": "PCMU,G729",
            "start_time": "2025-11-23T03:30:00.076316Z",
            "state": "parked",
            "to": "+13057864498",
        },
        "record_type": "event",
    },
    "meta": {"attempt": 1, "delivered_to": "https://example.com/webhooks/telnyx/voice"},
}

# The `start` frame example of the "Stream call media over WebSocket" AsyncAPI page.
START_FRAME = {
    "event": "start",
    "sequence_number": "1",
    "stream_id": "32DE0DEA-53CB-4B21-89A4-9E1819C043BC",
    "start": {
        "user_id": "3E6F995F-85F7-4705-9741-53B116D28237",
        "call_control_id": "v2:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ",
        "call_session_id": "ff55a038-6f5d-11ef-9692-02420aeffb1f",
        "from": "+13122010094",
        "to": "+13122123456",
        "tags": ["TAG1", "TAG2"],
        "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d",
        "custom_parameters": {"customer_id": "customer_123"},
        "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
    },
}


def envelope(event_type: str, **payload: object) -> bytes:
    return json.dumps({"data": {"event_type": event_type, "id": "ev-1", "payload": payload}}).encode()


def media(chunk: int, payload: bytes, track: str = "inbound") -> str:
    frame = {
        "event": "media",
        "sequence_number": str(chunk + 1),
        "media": {
            "track": track,
            "chunk": str(chunk),
            "timestamp": str(chunk * 20),
            "payload": base64.b64encode(payload).decode(),
        },
        "stream_id": "s",
    }
    return json.dumps(frame)


# ---------------------------------------------------------------- webhooks


def test_parse_documented_call_initiated() -> None:
    event = proto.parse_webhook(json.dumps(CALL_INITIATED))
    assert isinstance(event, proto.CallInitiated)
    assert event.event_id == "b97d4d5e-6fe7-4432-911f-79637bf6ebb7"
    assert event.call_control_id.startswith("v3:2EC-")
    assert (event.from_, event.to, event.direction, event.state) == (
        "+18124040851",
        "+13057864498",
        "incoming",
        "parked",
    )
    assert event.client_state is None and event.call_id is None


@pytest.mark.parametrize(
    ("event_type", "payload", "cls", "check"),
    [
        ("call.answered", {}, proto.CallAnswered, {}),
        (
            "call.hangup",
            {"hangup_cause": "user_busy", "hangup_source": "callee"},
            proto.CallHangup,
            {"hangup_cause": "user_busy"},
        ),
        (
            "call.machine.detection.ended",
            {"result": "machine"},
            proto.MachineDetectionEnded,
            {"premium": False},
        ),
        (
            "call.machine.premium.detection.ended",
            {"result": "human_business"},
            proto.MachineDetectionEnded,
            {"premium": True},
        ),
        ("call.machine.greeting.ended", {"result": "beep_detected"}, proto.MachineGreetingEnded, {}),
        ("call.dtmf.received", {"digit": "#"}, proto.DtmfReceived, {"digit": "#"}),
        ("streaming.started", {"stream_url": "wss://x"}, proto.StreamingStarted, {"stream_url": "wss://x"}),
        ("streaming.stopped", {}, proto.StreamingStopped, {}),
        (
            "streaming.failed",
            {"failure_reason": "connection_failed"},
            proto.StreamingFailed,
            {"failure_reason": "connection_failed"},
        ),
        ("call.bridged", {}, proto.UnknownEvent, {}),
    ],
)
def test_parse_event_types(
    event_type: str, payload: dict[str, object], cls: type, check: dict[str, object]
) -> None:
    event = proto.parse_webhook(envelope(event_type, call_control_id="v3:a", **payload))
    assert type(event) is cls
    assert event.event_type == event_type and event.call_control_id == "v3:a"
    for name, value in check.items():
        assert getattr(event, name) == value


def test_parse_recording_saved_and_client_state() -> None:
    body = envelope(
        "call.recording.saved",
        client_state=proto.encode_client_state("c-42"),
        channels="dual",
        recording_urls={"mp3": "https://rec/1.mp3", "wav": None},
        recording_started_at="2026-01-01T00:00:00Z",
        recording_ended_at="2026-01-01T00:00:03Z",
    )
    event = proto.parse_webhook(body)
    assert isinstance(event, proto.RecordingSaved)
    assert (event.url, event.channels, event.call_id) == ("https://rec/1.mp3", "dual", "c-42")


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b"{}", b'{"data": {"id": "x"}}', b'{"data": {"event_type": "a", "payload": 3}}'],
)
def test_malformed_webhooks_raise(body: bytes) -> None:
    with pytest.raises(proto.TelnyxProtocolError):
        proto.parse_webhook(body)


def test_client_state_round_trip_and_foreign_state() -> None:
    assert proto.decode_client_state(proto.encode_client_state("abc-123")) == "abc-123"
    assert proto.decode_client_state("aGF2ZSBhIG5pY2UgZGF5ID1d") is None  # someone else's state
    assert proto.decode_client_state("!!!") is None
    assert proto.decode_client_state(None) is None


# ---------------------------------------------------------------- commands and vocabularies


def test_command_bodies_and_paths() -> None:
    cid = proto.command_id_for("ev-1", "answer")
    assert cid == proto.command_id_for("ev-1", "answer") != proto.command_id_for("ev-2", "answer")
    body = proto.answer_command("wss://h/ws/telnyx/stream/c1", client_state="cs", command_id=cid)
    assert body["stream_bidirectional_mode"] == "rtp" and body["stream_bidirectional_codec"] == "PCMU"
    assert body["stream_track"] == "inbound_track"
    assert proto.answer_command(None, client_state="cs", command_id=cid) == {
        "client_state": "cs",
        "command_id": cid,
    }
    assert proto.command_path("v3:a/b", "answer") == "/v2/calls/v3:a%2Fb/actions/answer"
    assert proto.reject_command(command_id="x") == {"cause": "CALL_REJECTED", "command_id": "x"}
    assert proto.transfer_command("+1", command_id="x") == {"to": "+1", "command_id": "x"}
    assert proto.record_start_command(command_id="x") == {
        "format": "mp3",
        "channels": "dual",
        "command_id": "x",
    }
    assert proto.send_dtmf_command("1w2", command_id="x", duration_millis=250)["duration_millis"] == 250
    dial = proto.dial_command(
        connection_id="c", to="+2", from_="+1", webhook_url="https://h/w", client_state="s", command_id="d",
        answering_machine_detection="premium",
    )  # fmt: skip
    assert (
        dial["from"] == "+1" and dial["answering_machine_detection"] == "premium" and "stream_url" not in dial
    )


def test_error_detail() -> None:
    body = {
        "errors": [
            {"code": "90018", "title": "Call has already ended", "detail": "This call is no longer active"}
        ]
    }
    assert proto.error_detail(body) == "This call is no longer active (code 90018)"
    assert proto.error_codes(body) == ["90018"]
    assert proto.error_detail({"nope": 1}) == "" and proto.error_codes("x") == []


@pytest.mark.parametrize(
    ("cause", "status"),
    [
        ("normal_clearing", "completed"),
        ("time_limit", "completed"),
        ("user_busy", "busy"),
        ("call_rejected", "busy"),
        ("timeout", "no-answer"),
        ("no_answer", "no-answer"),
        ("originator_cancel", "canceled"),
        ("not_found", "failed"),
        ("unspecified", "failed"),
    ],
)
def test_status_for_hangup(cause: str, status: str) -> None:
    assert proto.status_for_hangup(cause) == status


@pytest.mark.parametrize(
    ("event_type", "result", "answered_by"),
    [
        ("call.machine.detection.ended", "human", "human"),
        ("call.machine.detection.ended", "machine", "machine_start"),
        ("call.machine.detection.ended", "not_sure", "unknown"),
        ("call.machine.premium.detection.ended", "human_residence", "human"),
        ("call.machine.premium.detection.ended", "fax_detected", "fax"),
        ("call.machine.premium.detection.ended", "silence", "unknown"),
        ("call.machine.greeting.ended", "beep_detected", "machine_end_beep"),
        ("call.machine.greeting.ended", "ended", "machine_end_silence"),
        ("call.machine.premium.greeting.ended", "no_beep_detected", "machine_end_other"),
    ],
)
def test_answered_by_uses_twilio_vocabulary(event_type: str, result: str, answered_by: str) -> None:
    event = proto.parse_webhook(envelope(event_type, result=result))
    assert isinstance(event, proto.MachineDetectionEnded | proto.MachineGreetingEnded)
    assert proto.answered_by(event) == answered_by


# ---------------------------------------------------------------- signatures


def signed(key: SigningKey, ts: int, body: bytes) -> str:
    return base64.b64encode(key.sign(str(ts).encode() + b"|" + body).signature).decode()


def test_verify_signature() -> None:
    key = SigningKey.generate()
    public = base64.b64encode(bytes(key.verify_key)).decode()
    body = json.dumps(CALL_INITIATED).encode()
    now = time.time()
    ts = int(now)
    assert proto.verify_signature(public, signed(key, ts, body), str(ts), body, now) is None
    assert proto.verify_signature(public, signed(key, ts, body), str(ts), body + b" ", now) == "bad_signature"
    other = SigningKey.generate()
    assert proto.verify_signature(public, signed(other, ts, body), str(ts), body, now) == "bad_signature"
    assert proto.verify_signature(public, None, str(ts), body, now) == "missing_headers"
    assert proto.verify_signature(public, signed(key, ts, body), None, body, now) == "missing_headers"
    assert proto.verify_signature(public, signed(key, ts, body), "soon", body, now) == "bad_timestamp"
    assert proto.verify_signature(public, "AAAA", str(ts), body, now) == "bad_signature"
    old, future = ts - 301, ts + 301
    assert proto.verify_signature(public, signed(key, old, body), str(old), body, now) == "stale_timestamp"
    assert (
        proto.verify_signature(public, signed(key, future, body), str(future), body, now) == "stale_timestamp"
    )
    edge = ts - 299
    assert proto.verify_signature(public, signed(key, edge, body), str(edge), body, now) is None
    assert proto.verify_signature("bm9wZQ==", signed(key, ts, body), str(ts), body, now) == "bad_public_key"


# ---------------------------------------------------------------- media websocket


def test_media_stream_documented_frames() -> None:
    dec = proto.MediaDecoder()
    assert dec.feed(json.dumps({"event": "connected", "version": "1.0.0"})) == []
    (started,) = dec.feed(json.dumps(START_FRAME))
    assert started == StreamStarted(
        "32DE0DEA-53CB-4B21-89A4-9E1819C043BC",
        "v2:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ",
        {"customer_id": "customer_123"},
    )
    assert dec.feed(media(1, b"\x7f" * 160)) == [CallerAudio(b"\x7f" * 160)]
    assert dec.feed(media(2, b"\x00" * 160, track="outbound")) == []  # our own audio is never fed back
    assert dec.feed(json.dumps({"event": "dtmf", "stream_id": "s", "dtmf": {"digit": "7"}})) == [
        CallerDtmf("7")
    ]
    assert dec.feed(json.dumps({"event": "mark", "stream_id": "s", "mark": {"name": "m1"}})) == [
        MarkPlayed("m1")
    ]
    error = {"event": "error", "payload": {"code": 100002, "title": "unknown_error", "detail": "x"}}
    assert dec.feed(json.dumps(error)) == [proto.MediaStreamError("100002", "unknown_error", "x")]
    stop = {"event": "stop", "stop": {"call_control_id": "v2:x"}, "stream_id": "s"}
    assert dec.feed(json.dumps(stop)) == [StreamStopped("stop")]


def test_start_carries_our_call_id_from_client_state() -> None:
    frame = json.loads(json.dumps(START_FRAME))
    frame["start"]["client_state"] = proto.encode_client_state("call-9")
    (started,) = proto.MediaDecoder().feed(json.dumps(frame))
    assert isinstance(started, StreamStarted) and started.parameters["call_id"] == "call-9"


def test_pcma_is_transcoded_to_ulaw() -> None:
    dec = proto.MediaDecoder()
    frame = json.loads(json.dumps(START_FRAME))
    frame["start"]["media_format"]["encoding"] = "PCMA"
    dec.feed(json.dumps(frame))
    ulaw = bytes(range(0, 256, 2)) + bytes(range(1, 64, 2))
    (audio,) = dec.feed(media(1, ulaw_to_alaw(ulaw)))
    assert isinstance(audio, CallerAudio) and len(audio.payload) == len(ulaw)


def test_unsupported_encoding_is_refused() -> None:
    frame = json.loads(json.dumps(START_FRAME))
    frame["start"]["media_format"]["encoding"] = "OPUS"
    with pytest.raises(proto.TelnyxProtocolError, match="OPUS"):
        proto.MediaDecoder().feed(json.dumps(frame))


def test_out_of_order_frames_are_reordered_within_the_window() -> None:
    dec = proto.MediaDecoder(reorder_window=3)
    out: list[int] = []
    for chunk in [1, 2, 4, 3, 5, 7, 8, 9, 10, 11, 6, 11]:
        out += [
            e.payload[0] for e in dec.feed(media(chunk, bytes([chunk]) * 160)) if isinstance(e, CallerAudio)
        ]
    assert out == [1, 2, 3, 4, 5, 7, 8, 9, 10, 11]
    assert (dec.reordered, dec.lost, dec.late) == (5, 1, 2)  # 4 and 7-10 held; 6 lost, then late; 11 twice


def test_stop_flushes_held_frames() -> None:
    dec = proto.MediaDecoder()
    dec.feed(media(1, b"\x01" * 160))
    assert dec.feed(media(3, b"\x03" * 160)) == []
    assert dec.feed(json.dumps({"event": "stop", "stop": {}})) == [
        CallerAudio(b"\x03" * 160),
        StreamStopped("stop"),
    ]


@pytest.mark.parametrize(
    "frame",
    [
        "garbage",
        "[1]",
        '{"event": "media"}',
        '{"event": "media", "media": {"payload": "@@@"}}',
        '{"event": "dtmf", "dtmf": {}}',
        '{"event": "surprise"}',
    ],
)
def test_malformed_media_frames_raise(frame: str) -> None:
    with pytest.raises(proto.TelnyxProtocolError):
        proto.MediaDecoder().feed(frame)


def test_encoders() -> None:
    assert json.loads(proto.encode_media(b"\xff\x7f")) == {"event": "media", "media": {"payload": "/38="}}
    assert json.loads(proto.encode_mark("m")) == {"event": "mark", "mark": {"name": "m"}}
    assert json.loads(proto.encode_clear()) == {"event": "clear"}
