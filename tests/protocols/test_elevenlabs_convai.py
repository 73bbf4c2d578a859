"""The sans-I/O ElevenLabs Agents codec: URLs, client messages and server events as the SDK reads them."""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patterd.protocols import elevenlabs_convai as ev


def test_urls() -> None:
    assert ev.conversation_url("https://api.elevenlabs.io", "agent 1") == (
        "wss://api.elevenlabs.io/v1/convai/conversation?agent_id=agent%201"
    )
    assert (
        ev.conversation_url("http://127.0.0.1:9/", "a")
        == "ws://127.0.0.1:9/v1/convai/conversation?agent_id=a"
    )
    assert ev.signed_url_request("https://api.elevenlabs.io/", "a") == (
        "https://api.elevenlabs.io/v1/convai/conversation/get-signed-url?agent_id=a"
    )
    assert (
        ev.agent_request("https://api.elevenlabs.io", "a/b")
        == "https://api.elevenlabs.io/v1/convai/agents/a%2Fb"
    )
    assert ev.parse_signed_url(
        '{"signed_url": "wss://x/v1/convai/conversation?agent_id=a&conversation_signature=s"}'
    )
    for bad in ('{"signed_url": "https://x"}', "[]", "nope", "{}"):
        with pytest.raises(ev.ConvAIProtocolError):
            ev.parse_signed_url(bad)


def test_agent_formats() -> None:
    body = {
        "conversation_config": {
            "asr": {"user_input_audio_format": "ulaw_8000"},
            "tts": {"agent_output_audio_format": "pcm_16000"},
        }
    }
    formats = ev.parse_agent_formats(json.dumps(body))
    assert formats == ev.AgentFormats("ulaw_8000", "pcm_16000")
    assert formats.problems() == ["tts.agent_output_audio_format is pcm_16000"]
    assert ev.parse_agent_formats("{}").problems() == [
        "asr.user_input_audio_format is the default (pcm_16000)",
        "tts.agent_output_audio_format is the default (pcm_16000)",
    ]
    assert ev.sample_rate("ulaw_8000") == 8000 and ev.sample_rate("pcm_44100") == 44100
    with pytest.raises(ValueError):
        ev.sample_rate("mp3_44100_128")


def test_initiation_sends_only_what_was_asked() -> None:
    assert json.loads(ev.initiation()) == {"type": "conversation_initiation_client_data"}
    full = json.loads(
        ev.initiation(
            prompt="Be nice.", first_message="", language="it", voice_id="v1", dynamic_variables={"a": "1"}
        )
    )
    assert full == {
        "type": "conversation_initiation_client_data",
        "conversation_config_override": {
            "agent": {"prompt": {"prompt": "Be nice."}, "first_message": "", "language": "it"},
            "tts": {"voice_id": "v1"},
        },
        "dynamic_variables": {"a": "1"},
    }


def test_client_messages() -> None:
    chunk = ev.user_audio_chunk(b"\xff\x7f")
    assert json.loads(chunk) == {"user_audio_chunk": base64.b64encode(b"\xff\x7f").decode()}
    assert chunk.startswith(ev.USER_AUDIO_PREFIX)
    assert json.loads(ev.pong(7)) == {"type": "pong", "event_id": 7}
    assert json.loads(ev.client_tool_result("t1", "ok", is_error=True)) == {
        "type": "client_tool_result",
        "tool_call_id": "t1",
        "result": "ok",
        "is_error": True,
    }
    assert json.loads(ev.user_message("hi")) == {"type": "user_message", "text": "hi"}
    assert json.loads(ev.contextual_update("x")) == {"type": "contextual_update", "text": "x"}


def frame(etype: str, key: str, body: object) -> str:
    return json.dumps({"type": etype, key: body})


def test_server_events() -> None:
    meta = frame(
        "conversation_initiation_metadata",
        "conversation_initiation_metadata_event",
        {
            "conversation_id": "c1",
            "agent_output_audio_format": "ulaw_8000",
            "user_input_audio_format": "pcm_16000",
        },
    )
    assert ev.parse_server_event(meta) == ev.Metadata("c1", "ulaw_8000", "pcm_16000")
    audio = frame("audio", "audio_event", {"audio_base_64": base64.b64encode(b"abc").decode(), "event_id": 3})
    assert ev.parse_server_event(audio) == ev.Audio(3, b"abc")
    assert ev.parse_server_event(
        frame("interruption", "interruption_event", {"event_id": 3})
    ) == ev.Interruption(3)
    assert ev.parse_server_event(frame("ping", "ping_event", {"event_id": "4", "ping_ms": 20})) == ev.Ping(
        4, 20
    )
    assert ev.parse_server_event(
        frame("agent_response", "agent_response_event", {"agent_response": "Hi"})
    ) == (ev.AgentResponse("Hi"))
    assert ev.parse_server_event(
        frame("user_transcript", "user_transcription_event", {"user_transcript": "hello"})
    ) == ev.UserTranscript("hello")
    call = frame(
        "client_tool_call",
        "client_tool_call",
        {"tool_name": "end_call", "tool_call_id": "t", "parameters": {"r": 1}},
    )
    assert ev.parse_server_event(call) == ev.ClientToolCall("end_call", "t", {"r": 1})
    correction = frame(
        "agent_response_correction",
        "agent_response_correction_event",
        {"original_agent_response": "a b", "corrected_agent_response": "a"},
    )
    assert ev.parse_server_event(correction) == ev.AgentResponseCorrection("a b", "a")
    assert ev.parse_server_event(
        '{"type": "vad_score", "vad_score_event": {"vad_score": 0.9}}'
    ) == ev.OtherEvent("vad_score")
    assert isinstance(ev.parse_server_event('{"type": "new_thing"}'), ev.UnknownEvent)
    # Lone surrogates in text are cleaned, so a record can always be written.
    text = ev.parse_server_event(
        '{"type": "agent_response", "agent_response_event": {"agent_response": "a\\ud800"}}'
    )
    assert isinstance(text, ev.AgentResponse) and text.text.encode()


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "null",
        "[]",
        '{"type": 1}',
        '{"type": "audio"}',
        '{"type": "audio", "audio_event": []}',
        '{"type": "audio", "audio_event": {"audio_base_64": "!!", "event_id": 1}}',
        '{"type": "audio", "audio_event": {"audio_base_64": "", "event_id": true}}',
        '{"type": "ping", "ping_event": {"event_id": "x"}}',
        '{"type": "client_tool_call", "client_tool_call": {"tool_name": "a", "tool_call_id": "b", "parameters": []}}',
        '{"type": "user_transcript", "user_transcript_event": {"user_transcript": "x"}}',
        "[" * 100000,
    ],
)
def test_malformed_frames_raise_protocol_errors(raw: str) -> None:
    with pytest.raises(ev.ConvAIProtocolError):
        ev.parse_server_event(raw)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(
                    st.sampled_from(
                        [
                            "type",
                            "audio_event",
                            "ping_event",
                            "event_id",
                            "audio_base_64",
                            "client_tool_call",
                            "agent_response_event",
                            "agent_response",
                            "x",
                        ]
                    ),
                    inner,
                    max_size=4,
                )
            ),
            max_leaves=12,
        ).map(json.dumps),
    )
)
def test_fuzz_only_protocol_errors(raw: str | bytes) -> None:
    with contextlib.suppress(ev.ConvAIProtocolError):
        ev.parse_server_event(raw)
