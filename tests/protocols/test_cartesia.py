"""patterd.protocols.cartesia: URLs, headers, client messages and server-message parsing (incl. fuzzing)."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patterd.protocols import cartesia as wire


def test_urls_follow_the_base() -> None:
    params = wire.STTParams(max_silence_duration_secs=0.4)
    assert wire.stt_url("https://api.cartesia.ai", params) == (
        "wss://api.cartesia.ai/stt/websocket?model=ink-whisper&encoding=pcm_mulaw&sample_rate=8000"
        "&language=en&max_silence_duration_secs=0.4"
    )
    assert wire.tts_url("http://127.0.0.1:9/prefix/") == "ws://127.0.0.1:9/prefix/tts/websocket"
    assert wire.voice_url("wss://api.cartesia.ai", "a/b") == "https://api.cartesia.ai/voices/a%2Fb"
    assert wire.headers("k", "2026-03-01") == {"X-API-Key": "k", "Cartesia-Version": "2026-03-01"}


def test_close_command_and_delta_finals_depend_on_the_version() -> None:
    assert wire.close_command("2026-03-01") == "close" and wire.close_command("2025-04-16") == "done"
    assert wire.finals_are_deltas("2026-08-14") and not wire.finals_are_deltas("2025-04-16")


def test_generation_and_cancel_messages() -> None:
    body = json.loads(
        wire.generation(
            context_id="c1", transcript="Hi ", model_id="sonic-3", voice_id="v", language="en", more=True
        )
    )
    assert body == {
        "model_id": "sonic-3",
        "transcript": "Hi ",  # never stripped: continuations join verbatim
        "voice": {"mode": "id", "id": "v"},
        "output_format": {"container": "raw", "encoding": "pcm_mulaw", "sample_rate": 8000},
        "context_id": "c1",
        "continue": True,
        "language": "en",
    }
    assert json.loads(wire.cancel("c1")) == {"context_id": "c1", "cancel": True}


def test_parse_server_messages() -> None:
    text = {"type": "transcript", "text": " for two", "is_final": True, "duration": 1.5, "request_id": "r"}
    assert wire.parse(json.dumps(text)) == wire.Transcript(" for two", True, 1.5, "r")
    chunk = {
        "type": "chunk",
        "context_id": "c",
        "data": base64.b64encode(b"\xff\x7f").decode(),
        "done": False,
    }
    assert wire.parse(json.dumps(chunk)) == wire.Chunk("c", b"\xff\x7f")
    assert wire.parse('{"type": "done", "context_id": "c"}') == wire.Done("c")
    assert wire.parse('{"type": "flush_done", "request_id": "r"}') == wire.FlushDone("")
    assert wire.parse('{"type": "timestamps", "context_id": "c"}') == wire.Timestamps("c")
    error = {
        "type": "error",
        "status_code": 429,
        "error_code": "too_many",
        "message": "slow down",
        "context_id": "c",
    }
    assert wire.parse(json.dumps(error)) == wire.ErrorMessage("slow down", 429, "too_many", "c")
    assert wire.parse('{"type": "new_thing"}') == wire.Unknown("new_thing")


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[]",
        '{"no": "type"}',
        '{"type": "transcript", "text": 3, "is_final": true}',
        '{"type": "transcript", "text": "x"}',
        '{"type": "chunk", "context_id": "c", "data": "***"}',
        '{"type": "chunk", "data": "AA=="}',
        b"\xff\xfe",
    ],
)
def test_malformed_messages_raise_the_protocol_error(raw: str | bytes) -> None:
    with pytest.raises(wire.CartesiaProtocolError):
        wire.parse(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
message_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["transcript", "chunk", "done", "flush_done", "error", "timestamps", "x"])},
    optional={
        "text": json_values,
        "is_final": json_values,
        "context_id": json_values,
        "data": json_values,
        "status_code": json_values,
        "message": json_values,
        "duration": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(message_like.map(json.dumps), st.binary(max_size=64), st.text(max_size=64)))
def test_parse_never_raises_anything_else(raw: str | bytes) -> None:
    try:
        message = wire.parse(raw)
    except wire.CartesiaProtocolError:
        return
    assert isinstance(message, wire.ServerMessage)
