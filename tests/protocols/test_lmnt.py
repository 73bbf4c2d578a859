"""LMNT session wire format: frames as the SDK builds them, server messages parsed, WAV header stripped however split."""

from __future__ import annotations

import contextlib
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patterd.protocols import lmnt as wire


def test_urls_follow_the_base_url_like_the_sdk() -> None:
    assert wire.stream_url(wire.DEFAULT_BASE_URL) == "wss://api.lmnt.com/v1/ai/speech/stream"
    assert wire.stream_url("http://127.0.0.1:8080/") == "ws://127.0.0.1:8080/v1/ai/speech/stream"
    assert wire.account_url("https://proxy.example/lmnt") == "https://proxy.example/lmnt/v1/account"
    assert wire.headers("k") == {"X-API-Key": "k"}


def test_client_frames() -> None:
    assert json.loads(wire.init_message("k", "lily", language="en")) == {
        "X-API-Key": "k",
        "lmnt-version": "1.1",
        "voice": "lily",
        "format": "ulaw",
        "sample_rate": 8000,
        "language": "en",
    }
    assert json.loads(wire.init_message("k", "lily", model="blizzard", speed=1.5))["speed"] == 1.5
    assert json.loads(wire.text_message("Hi.")) == {"type": "text", "text": "Hi."}
    assert json.loads(wire.flush_message(3)) == {"type": "flush", "nonce": 3}
    assert json.loads(wire.reset_message(4)) == {"type": "reset", "nonce": 4}
    assert json.loads(wire.finish_message()) == {"type": "finish"}


def test_server_messages() -> None:
    assert wire.parse('{"type": "ready", "request_id": "r1"}') == wire.Ready("r1")
    assert wire.parse('{"type": "flush_complete", "nonce": 2}') == wire.FlushComplete(2)
    assert wire.parse(b'{"type": "reset_complete", "nonce": 5}') == wire.ResetComplete(5)
    assert wire.parse('{"type": "timestamps", "timestamps": []}') is None
    error = wire.parse(
        '{"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}, "request_id": "r"}'
    )
    assert error == wire.SessionError("rate_limit_error", "slow", "r") and error.status == 429
    auth = wire.parse('{"type": "error", "error": {"type": "authentication_error", "message": "x"}}')
    assert isinstance(auth, wire.SessionError) and auth.status == 401
    legacy = wire.parse('{"error": "Invalid API key"}')
    assert (
        isinstance(legacy, wire.SessionError) and legacy.message == "Invalid API key" and legacy.status == 500
    )
    for bad in (
        "{",
        "[]",
        '{"type": "what"}',
        '{"type": "flush_complete", "nonce": "1"}',
        '{"type": "reset_complete"}',
    ):
        with pytest.raises(wire.LMNTProtocolError):
            wire.parse(bad)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_parse_never_raises_anything_else(data: str | bytes) -> None:
    with contextlib.suppress(wire.LMNTProtocolError):
        wire.parse(data)


def test_error_detail() -> None:
    assert wire.error_detail(b'{"error": {"type": "authentication_error", "message": "bad key"}}', 401) == (
        "authentication_error bad key"
    )
    assert wire.error_detail(b'{"message": "nope"}', 400) == "nope"
    assert wire.error_detail(b"<html>gateway</html>", 502) == "<html>gateway</html>"
    assert wire.error_detail(b"", 503) == "HTTP 503"


AUDIO = bytes(range(256)) * 3


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=90), min_size=1, max_size=20), st.booleans())
def test_a_header_split_anywhere_is_stripped(cuts: list[int], extra_chunk: bool) -> None:
    header = wire.wav_header(8000)
    if extra_chunk:  # a LIST chunk before the data, as some encoders write
        fmt_end = 12 + 8 + 18
        header = header[:fmt_end] + b"LIST" + struct.pack("<I", 5) + b"INFOx\x00" + header[fmt_end:]
    stream, pieces, at = header + AUDIO, [], 0
    for size in cuts:
        pieces.append(stream[at : at + size])
        at += size
    pieces.append(stream[at:])
    stripper = wire.WavHeaderStripper()
    assert b"".join(stripper.feed(p) for p in pieces) + stripper.arm() == AUDIO


def test_audio_without_header_passes_and_each_segment_may_carry_one() -> None:
    stripper = wire.WavHeaderStripper()
    assert stripper.feed(b"\xff\x7f") == b"\xff\x7f"
    assert stripper.feed(b"RIFF") == b"RIFF", "past the start of a segment, RIFF is audio"
    stripper.arm()
    assert stripper.feed(wire.wav_header() + b"\x01\x02") == b"\x01\x02"
    stripper.arm()
    assert stripper.feed(b"RI") == b""
    assert stripper.arm() == b"RI", "a segment that ended on a partial prefix gives it back"


@pytest.mark.parametrize(
    "header",
    [
        wire.wav_header(16000),
        wire.wav_header()[:20] + struct.pack("<H", 1) + wire.wav_header()[22:],  # PCM, not μ-law
        b"RIFF\xff\xff\xff\xffAVI LIST",
        b"RIFF\xff\xff\xff\xffWAVE" + b"junk" + struct.pack("<I", 10_000),
    ],
)
def test_a_header_for_other_audio_is_refused(header: bytes) -> None:
    with pytest.raises(wire.LMNTProtocolError):
        wire.WavHeaderStripper().feed(header + bytes(20_000))
