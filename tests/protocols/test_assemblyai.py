"""The AssemblyAI v3 wire format: URL and query, auth header, chunking, server messages, close codes."""

from __future__ import annotations

import contextlib
import json
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patterd.protocols import assemblyai as wire


def test_stream_url_has_the_required_model_and_the_carrier_format() -> None:
    url = wire.stream_url(wire.DEFAULT_BASE_URL, wire.StreamParams(keyterms=("Patter", "Twilio")))
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("wss", "streaming.assemblyai.com", "/v3/ws")
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert q == {
        "speech_model": "universal-streaming-english",
        "sample_rate": "8000",
        "encoding": "pcm_mulaw",
        "format_turns": "true",
        "keyterms_prompt": '["Patter", "Twilio"]',  # a JSON list, as the SDK sends it
    }


def test_optional_turn_parameters_and_http_bases() -> None:
    params = wire.StreamParams(
        format_turns=False,
        end_of_turn_confidence_threshold=0.5,
        min_turn_silence_ms=300,
        max_turn_silence_ms=900,
    )
    q = parse_qs(urlsplit(wire.stream_url("http://127.0.0.1:9/", params)).query)
    assert q["format_turns"] == ["false"] and q["min_turn_silence"] == ["300"]
    assert q["max_turn_silence"] == ["900"] and q["end_of_turn_confidence_threshold"] == ["0.5"]
    assert wire.stream_url("http://127.0.0.1:9/", params).startswith("ws://127.0.0.1:9/v3/ws?")
    assert wire.token_url("wss://streaming.eu.assemblyai.com") == (
        "https://streaming.eu.assemblyai.com/v3/token?expires_in_seconds=60"
    )


def test_the_key_goes_in_authorization_without_a_scheme() -> None:
    assert wire.auth_headers("abc") == {"Authorization": "abc"}


def test_control_messages() -> None:
    assert json.loads(wire.FORCE_ENDPOINT) == {"type": "ForceEndpoint"}
    assert json.loads(wire.TERMINATE) == {"type": "Terminate"}
    assert json.loads(wire.KEEPALIVE) == {"type": "KeepAlive"}


@given(st.lists(st.integers(min_value=0, max_value=900), max_size=40), st.sampled_from([50, 100, 250, 1000]))
def test_chunker_keeps_every_byte_in_order_and_every_chunk_in_bounds(sizes: list[int], chunk_ms: int) -> None:
    chunker = wire.Chunker(chunk_ms)
    audio = bytes(i % 251 for i in range(sum(sizes)))
    out: list[bytes] = []
    at = 0
    for n in sizes:
        out += chunker.push(audio[at : at + n])
        at += n
    assert all(len(c) == chunk_ms * 8 for c in out)
    tail = chunker.drain()
    assert chunker.pending == 0
    sent = b"".join(out) + tail
    assert sent[: len(audio)] == audio and set(sent[len(audio) :]) <= {0xFF}
    if tail:
        assert 400 <= len(tail) <= chunk_ms * 8  # 50 ms at least: AssemblyAI closes 3007 below
    assert chunker.drain() == b""


def test_chunk_ms_outside_the_vendor_bounds_is_refused() -> None:
    for bad in (20, 49, 1001):
        with pytest.raises(ValueError):
            wire.Chunker(bad)


def test_turns_partial_and_ended() -> None:
    partial = wire.parse(
        json.dumps(
            {
                "type": "Turn",
                "turn_order": 0,
                "turn_is_formatted": False,
                "end_of_turn": False,
                "transcript": "hi",
                "end_of_turn_confidence": 0.01,
                "words": [
                    {"start": 1920, "end": 2000, "text": "hi", "confidence": 0.87, "word_is_final": True},
                    {"start": 2800, "end": 2880, "text": "my", "confidence": 0.81, "word_is_final": False},
                ],
                "utterance": "",
            }
        )
    )
    assert isinstance(partial, wire.Turn)
    assert partial.text == "hi my" and partial.transcript == "hi" and not partial.end_of_turn
    assert partial.words[1] == wire.Word("my", False, 2800.0, 2880.0)
    ended = wire.parse(
        '{"type":"Turn","turn_order":3,"turn_is_formatted":true,"end_of_turn":true,'
        '"transcript":"Hi, my name is Sonny.","words":[{"text":"Hi,","word_is_final":true}]}'
    )
    assert isinstance(ended, wire.Turn)
    assert ended.turn_order == 3 and ended.turn_is_formatted and ended.text == "Hi, my name is Sonny."


def test_other_messages() -> None:
    assert wire.parse('{"type":"Begin","id":"s1","expires_at":1759796682}') == wire.Begin("s1", 1759796682.0)
    assert wire.parse('{"type":"Termination","audio_duration_seconds":12,"session_duration_seconds":13}') == (
        wire.Termination(12.0, 13.0)
    )
    assert wire.parse('{"type":"Error","error_code":3007,"error":"chunk"}') == wire.ErrorMessage(
        "chunk", 3007
    )
    assert wire.parse('{"error":"Invalid API key"}') == wire.ErrorMessage("Invalid API key", None)
    assert wire.parse('{"type":"SpeechStarted","timestamp":1200}') == wire.SpeechStarted(1200.0)
    assert wire.parse('{"type":"Heartbeat","total_audio_received_ms":1}') == wire.Unknown("Heartbeat")


@pytest.mark.parametrize(
    "bad",
    [
        "not json",
        "[1]",
        '{"no":"type"}',
        '{"type":"Turn"}',
        '{"type":"Turn","turn_order":1,"transcript":"x","end_of_turn":"yes"}',
        '{"type":"Turn","turn_order":1,"transcript":"x","end_of_turn":true,"words":[1]}',
        '{"type":"Begin"}',
        b"\xff\xfe",
    ],
)
def test_malformed_messages_raise_the_protocol_error(bad: str | bytes) -> None:
    with pytest.raises(wire.AssemblyAIProtocolError):
        wire.parse(bad)


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_parse_never_raises_anything_else(data: str | bytes) -> None:
    with contextlib.suppress(wire.AssemblyAIProtocolError):
        wire.parse(data)


def test_close_codes() -> None:
    assert wire.close_kind(1000) is None
    assert wire.close_kind(1008) == "auth"
    assert wire.close_kind(3009) == "rate_limit"
    assert wire.close_kind(3006) == wire.close_kind(3007) == "protocol"
    assert wire.close_kind(3005) == wire.close_kind(3008) == wire.close_kind(None) == "retry"
    assert wire.handshake_error(401, '{"error":"Invalid API key"}') == "HTTP 401: Invalid API key"
    assert wire.handshake_error(503, "<html>") == "HTTP 503"
