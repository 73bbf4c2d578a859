"""Speechmatics real-time wire format: URLs, StartRecognition, control messages, server messages, malformed input."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patterd.protocols import speechmatics as sm


def test_start_recognition_is_raw_mulaw_8k_with_turn_detection() -> None:
    body = json.loads(sm.StartRecognition(max_delay=0.9, end_of_utterance_silence_trigger=0.4).message())
    assert body == {
        "message": "StartRecognition",
        "audio_format": {"type": "raw", "encoding": "mulaw", "sample_rate": 8000},
        "transcription_config": {
            "language": "en",
            "enable_partials": True,
            "max_delay": 0.9,
            "operating_point": "enhanced",
            "conversation_config": {"end_of_utterance_silence_trigger": 0.4},
        },
    }
    bare = json.loads(
        sm.StartRecognition(operating_point=None, end_of_utterance_silence_trigger=None).message()
    )
    assert "conversation_config" not in bare["transcription_config"]
    assert "operating_point" not in bare["transcription_config"]


def test_urls_headers_and_controls() -> None:
    assert sm.websocket_url(sm.REGION_URLS["eu"]) == "wss://eu.rt.speechmatics.com/v2"
    assert sm.websocket_url("https://rt.example:9000") == "wss://rt.example:9000/v2"
    assert sm.websocket_url("ws://127.0.0.1:5/v2/") == "ws://127.0.0.1:5/v2"
    assert (
        sm.api_url("wss://eu.rt.speechmatics.com/v2", None, sm.JOBS_PATH)
        == "https://eu1.asr.api.speechmatics.com/v2/jobs"
    )
    assert sm.api_url("ws://127.0.0.1:5/v2", None, sm.JOBS_PATH) == "http://127.0.0.1:5/v2/jobs"
    assert sm.api_url("wss://x/v2", "https://asr.example/", sm.JOBS_PATH) == "https://asr.example/v2/jobs"
    assert sm.auth_headers("k") == {"Authorization": "Bearer k"}
    assert json.loads(sm.force_end_of_utterance(1.23456)) == {
        "message": "ForceEndOfUtterance",
        "timestamp": 1.235,
    }
    assert json.loads(sm.force_end_of_utterance()) == {"message": "ForceEndOfUtterance"}
    assert json.loads(sm.end_of_stream(42)) == {"message": "EndOfStream", "last_seq_no": 42}


ADD = {
    "message": "AddTranscript",
    "format": "2.9",
    "metadata": {"transcript": "Hello world. ", "start_time": 0.5, "end_time": 1.25},
    "results": [
        {"type": "word", "alternatives": [{"content": "Hello", "confidence": 0.8}]},
        {"type": "word", "alternatives": [{"content": "world", "confidence": 1.0}]},
        {"type": "punctuation", "alternatives": [{"content": "."}]},
    ],
}


def test_server_messages_parsed() -> None:
    final = sm.parse(json.dumps(ADD))
    assert final == sm.TranscriptMessage(True, "Hello world. ", 0.5, 1.25, pytest.approx(0.9))  # type: ignore[arg-type]
    assert isinstance(final, sm.TranscriptMessage) and final.end_ms == 1250.0
    partial = sm.parse(json.dumps(ADD | {"message": "AddPartialTranscript", "results": []}))
    assert isinstance(partial, sm.TranscriptMessage) and not partial.final and partial.confidence is None
    assert sm.parse(
        '{"message": "EndOfUtterance", "metadata": {"start_time": 2, "end_time": 2}}'
    ) == sm.EndOfUtterance(2.0)
    assert sm.parse('{"message": "AudioAdded", "seq_no": 7}') == sm.AudioAdded(7)
    assert sm.parse('{"message": "RecognitionStarted", "id": "abc"}') == sm.RecognitionStarted("abc")
    assert sm.parse('{"message": "EndOfTranscript"}') == sm.EndOfTranscript()
    assert sm.parse('{"message": "Error", "type": "quota_exceeded", "reason": "r"}') == sm.ErrorMessage(
        "quota_exceeded", "r"
    )
    assert sm.parse('{"message": "Error"}') == sm.ErrorMessage("unknown_error", "")
    assert sm.parse(
        '{"message": "Warning", "type": "duration_limit_exceeded", "reason": "r"}'
    ) == sm.WarningMessage("duration_limit_exceeded", "r")
    assert sm.parse('{"message": "Info", "type": "recognition_quality"}') == sm.Unknown("Info")


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1]",
        "{}",
        '{"message": 5}',
        '{"message": "AddTranscript"}',
        '{"message": "AddTranscript", "metadata": {"transcript": 1, "start_time": 0, "end_time": 1}}',
        '{"message": "AddTranscript", "metadata": {"transcript": "a", "start_time": "0", "end_time": 1}}',
        '{"message": "EndOfUtterance"}',
        '{"message": "AudioAdded", "seq_no": true}',
        b"\xff\xfe",
        "[" * 100000,
    ],
)
def test_malformed_messages_raise_protocol_errors(raw: str | bytes) -> None:
    with pytest.raises(sm.SpeechmaticsProtocolError):
        sm.parse(raw)


JUNK = st.recursive(
    st.none() | st.booleans() | st.floats() | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)


@settings(max_examples=60)
@given(JUNK)
def test_shaped_junk_never_raises_anything_else(junk: object) -> None:
    for key in ("metadata", "results", "seq_no", "type"):
        for kind in ("AddTranscript", "EndOfUtterance", "AudioAdded", "Error"):
            with contextlib.suppress(sm.SpeechmaticsProtocolError):
                sm.parse(json.dumps({"message": kind, key: junk}))


@given(st.text(max_size=200) | st.binary(max_size=200))
def test_parse_never_raises_anything_else(raw: str | bytes) -> None:
    with contextlib.suppress(sm.SpeechmaticsProtocolError):
        sm.parse(raw)
