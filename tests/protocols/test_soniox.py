"""Soniox wire format: config (no key in it), URLs, control messages, responses and malformed input."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patterd.protocols import soniox as sx


def test_config_message_has_the_telephony_format_and_never_a_key() -> None:
    body = json.loads(sx.Config(language_hints=("en",), max_endpoint_delay_ms=800).message())
    assert body == {
        "model": "stt-rt-v4",
        "audio_format": "mulaw",
        "sample_rate": 8000,
        "num_channels": 1,
        "enable_endpoint_detection": True,
        "language_hints": ["en"],
        "max_endpoint_delay_ms": 800,
    }
    assert "api_key" not in body


def test_urls_headers_and_controls() -> None:
    assert sx.websocket_url(sx.DEFAULT_BASE_URL) == "wss://stt-rt.soniox.com/transcribe-websocket"
    assert sx.websocket_url("http://127.0.0.1:5/") == "ws://127.0.0.1:5/transcribe-websocket"
    assert (
        sx.websocket_url("wss://eu.example/transcribe-websocket") == "wss://eu.example/transcribe-websocket"
    )
    assert sx.api_url(sx.DEFAULT_BASE_URL, None, sx.MODELS_PATH) == "https://api.soniox.com/v1/models"
    assert sx.api_url("ws://127.0.0.1:5", None, sx.MODELS_PATH) == "http://127.0.0.1:5/v1/models"
    assert (
        sx.api_url("wss://x", "https://api.eu.example/", sx.MODELS_PATH) == "https://api.eu.example/v1/models"
    )
    assert sx.auth_headers("k") == {"Authorization": "Bearer k"}
    assert json.loads(sx.KEEPALIVE) == {"type": "keepalive"} and sx.END_OF_AUDIO == ""
    assert json.loads(sx.finalize()) == {"type": "finalize"}
    assert json.loads(sx.finalize(300)) == {"type": "finalize", "trailing_silence_ms": 300}


def test_responses_and_errors_parsed() -> None:
    raw = {
        "tokens": [
            {"text": "Hi", "start_ms": 0, "end_ms": 200, "confidence": 0.9, "is_final": True},
            {"text": "<end>", "is_final": True},
            {"text": " th", "is_final": False},
        ],
        "final_audio_proc_ms": 400,
        "total_audio_proc_ms": 900,
    }
    message = sx.parse(json.dumps(raw))
    assert isinstance(message, sx.Response)
    assert message.tokens[0] == sx.Token("Hi", True, 0.0, 200.0, 0.9)
    assert message.tokens[1].marker and not message.tokens[2].is_final and not message.finished
    assert message.final_audio_proc_ms == 400.0
    done = sx.parse('{"tokens": [], "finished": true}')
    assert isinstance(done, sx.Response) and done.finished
    assert sx.parse('{"error_code": 401, "error_message": "Invalid API key."}') == sx.ErrorResponse(
        401, "Invalid API key."
    )
    assert sx.parse('{"error_code": "503", "error_message": "x", "error_type": "t"}') == sx.ErrorResponse(
        503, "x", "t"
    )
    assert sx.parse('{"error_code": "oops"}') == sx.ErrorResponse(0, "error")


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1]",
        '{"tokens": 5}',
        '{"tokens": [5]}',
        '{"tokens": [{"text": 1}]}',
        '{"tokens": [{"text": "a", "end_ms": "x"}]}',
        '{"tokens": [], "total_audio_proc_ms": true}',
        b"\xff\xfe",
        "[" * 100000,
    ],
)
def test_malformed_messages_raise_protocol_errors(raw: str | bytes) -> None:
    with pytest.raises(sx.SonioxProtocolError):
        sx.parse(raw)


@given(st.text(max_size=200) | st.binary(max_size=200))
def test_parse_never_raises_anything_else(raw: str | bytes) -> None:
    with contextlib.suppress(sx.SonioxProtocolError):
        sx.parse(raw)
