"""OpenAI audio wire format: speech bodies, input splitting, transcription forms, the SSE/JSON answers, errors."""

from __future__ import annotations

import io
import json
import wave

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patterd.protocols import openai_audio as wire
from patterd.protocols.sse import MAX_EVENT_BYTES, SSEDecoder, SSEEvent


def sse(*events: dict[str, object]) -> bytes:
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events)


def test_speech_request_asks_for_pcm_and_drops_what_the_model_refuses() -> None:
    body = wire.speech_request("gpt-4o-mini-tts", "Hello.", "coral", speed=1.25, instructions="Calm.")
    assert body == {
        "model": "gpt-4o-mini-tts",
        "input": "Hello.",
        "voice": "coral",
        "response_format": "pcm",
        "speed": 1.25,
        "instructions": "Calm.",
    }
    # tts-1 refuses instructions (API reference); speed 1.0 is the default and is not sent.
    assert wire.speech_request("tts-1", "Hi", "alloy", speed=1.0, instructions="Calm.") == {
        "model": "tts-1",
        "input": "Hi",
        "voice": "alloy",
        "response_format": "pcm",
    }
    with pytest.raises(ValueError, match="empty"):
        wire.speech_request("tts-1", "  ", "alloy")
    with pytest.raises(ValueError, match="4096"):
        wire.speech_request("tts-1", "a" * 4097, "alloy")


def test_split_input_cuts_long_text_at_sentences_then_spaces() -> None:
    text = "First sentence here. " * 300  # 6300 characters
    pieces = wire.split_input(text)
    assert len(pieces) == 2 and all(len(p) <= wire.MAX_INPUT_CHARS for p in pieces)
    assert all(p.endswith(".") for p in pieces)
    assert " ".join(pieces) == text.strip()
    assert wire.split_input("short") == ["short"]
    assert wire.split_input("   ") == []
    unbroken = "x" * 5000
    assert wire.split_input(unbroken) == ["x" * 4096, "x" * 904]


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab .,!\n"), max_size=400), st.integers(min_value=5, max_value=60))
def test_split_input_keeps_every_word_in_order(text: str, limit: int) -> None:
    pieces = wire.split_input(text, limit)
    assert all(0 < len(p) <= limit for p in pieces)
    assert "".join("".join(pieces).split()) == "".join(text.split())


def test_transcription_fields_per_model() -> None:
    assert wire.transcription_fields(
        "gpt-4o-mini-transcribe", language="en", prompt="menu", temperature=0.0
    ) == [
        ("model", "gpt-4o-mini-transcribe"),
        ("response_format", "json"),
        ("language", "en"),
        ("prompt", "menu"),
        ("temperature", "0"),
        ("stream", "true"),
    ]
    # whisper-1 streams no deltas: stream is not asked for.
    assert wire.transcription_fields("whisper-1") == [("model", "whisper-1"), ("response_format", "json")]
    assert ("stream", "true") not in wire.transcription_fields("gpt-4o-transcribe", stream=False)


def test_utterance_wav_declares_what_it_holds() -> None:
    ulaw = bytes(range(256)) * 10
    data = wire.utterance_wav(ulaw)
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels(), w.getnframes()) == (
            8000,
            2,
            1,
            len(ulaw),
        )


def test_streamed_transcription_decodes_byte_by_byte() -> None:
    body = sse(
        {"type": "transcript.text.delta", "delta": "Book", "logprobs": None},
        {"type": "transcript.text.delta", "delta": " a table"},
        {"type": "transcript.text.segment", "text": "ignored"},
        {
            "type": "transcript.text.done",
            "text": "Book a table",
            "usage": {"input_tokens": 14, "output_tokens": 4},
        },
    ).replace(b"\n", b"\r\n")
    decoder = wire.TranscriptionDecoder()
    events = [e for i in range(len(body)) for e in decoder.feed(body[i : i + 1])] + decoder.close()
    assert events == [
        wire.TextDelta("Book"),
        wire.TextDelta(" a table"),
        wire.TextDone("Book a table", 14, 4),
    ]


def test_stream_errors_and_malformed_events_are_events_not_crashes() -> None:
    decoder = wire.TranscriptionDecoder()
    events = decoder.feed(
        b"data: {not json\n\n"
        b"data: [1, 2]\n\n"
        b'data: {"delta": "no type"}\n\n'
        b'data: {"type": "transcript.text.delta", "delta": 5}\n\n'
        b'data: {"type": "transcript.text.done"}\n\n'
        b": keep-alive\n\n"
        b"data: [DONE]\n\n"
        b'data: {"error": {"message": "overloaded", "type": "server_error", "code": null}}\n\n'
    )
    assert [type(e).__name__ for e in events] == ["Malformed"] * 5 + ["StreamError"]
    assert events[-1] == wire.StreamError("overloaded", "server_error", "")
    with pytest.raises(wire.AudioProtocolError, match="UTF-8"):
        wire.TranscriptionDecoder().feed(b"data: \xff\xfe\n\n")
    with pytest.raises(wire.AudioProtocolError, match="exceeds"):
        wire.TranscriptionDecoder().feed(b"data: " + b"x" * (MAX_EVENT_BYTES + 10))


def test_surrogates_and_deep_nesting_are_cleaned_or_refused() -> None:
    (event,) = wire.TranscriptionDecoder().feed(
        b'data: {"type": "transcript.text.delta", "delta": "a\\ud800b"}\n\n'
    )
    assert event == wire.TextDelta("a\ufffdb")
    (deep,) = wire.TranscriptionDecoder().feed(b"data: " + b"[" * 100_000 + b"\n\n")
    assert isinstance(deep, wire.Malformed)
    assert wire.error_message(b"[" * 100_000, 500).startswith("HTTP 500: [[[")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=12))
def test_decoder_fuzz_only_raises_its_protocol_error(chunks: list[bytes]) -> None:
    decoder = wire.TranscriptionDecoder()
    try:
        for chunk in chunks:
            for event in decoder.feed(chunk):
                assert isinstance(event, wire.TextDelta | wire.TextDone | wire.StreamError | wire.Malformed)
        decoder.close()
    except wire.AudioProtocolError:
        pass


def test_json_answers() -> None:
    assert wire.transcription_json(b'{"text": "hello", "usage": {"type": "duration", "seconds": 3}}') == (
        wire.TextDone("hello", 0, 0, 3.0)
    )
    assert wire.transcription_json(b'{"text": ""}') == wire.TextDone("")
    for bad in (b"<html>", b"[]", b'{"txt": 1}', b'{"error": {"message": "no"}}'):
        with pytest.raises(wire.AudioProtocolError):
            wire.transcription_json(bad)


def test_error_message_reads_openai_error_bodies() -> None:
    body = b'{"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error"}}'
    assert wire.error_message(body, 401) == "HTTP 401: Incorrect API key provided."
    assert wire.error_message(b'{"error": "model not loaded"}', 503) == "HTTP 503: model not loaded"
    assert wire.error_message(b"", 502) == "HTTP 502: no body"
    assert wire.error_message(b"<h1>Bad gateway</h1>", 502) == "HTTP 502: <h1>Bad gateway</h1>"


def test_sse_decoder_names_events_and_joins_data_lines() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"event: speech.audio.delta\ndata: a\ndata:b\nid: 1\n\ndata: tail") == [
        SSEEvent("speech.audio.delta", "a\nb")
    ]
    assert decoder.close() == [SSEEvent("", "tail")]


def test_only_raw_pcm_labels_are_taken_for_pcm() -> None:
    for label in ("audio/pcm", "audio/PCM; rate=24000", "application/octet-stream", ""):
        assert wire.is_raw_pcm(label), label
    for label in ("audio/mpeg", "audio/wav", "audio/ogg; codecs=opus", "application/json", "text/html"):
        assert not wire.is_raw_pcm(label), label
