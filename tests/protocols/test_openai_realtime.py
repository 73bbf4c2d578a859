"""The OpenAI Realtime GA codec: client events match the documented shapes; server events parse to types."""

from __future__ import annotations

import base64
import json

import jsonschema  # type: ignore[import-untyped]
import pytest

from patterd.protocols import openai_realtime as rt
from patterd.providers.kinds import ToolSchema
from tests.fakes.openai_realtime import CLIENT_EVENT_SCHEMAS


def valid(text: str) -> dict[str, object]:
    event = json.loads(text)
    jsonschema.validate(event, CLIENT_EVENT_SCHEMAS[event["type"]])
    return dict(event)


def test_session_update_pcm_with_tools_is_ga_shaped() -> None:
    tool = ToolSchema("end_call", "Hang up", {"type": "object", "properties": {}})
    event = valid(rt.session_update(instructions="Be brief.", voice="marin", tools=[tool]))
    session = event["session"]
    assert isinstance(session, dict)
    assert session["type"] == "realtime" and session["output_modalities"] == ["audio"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["output"] == {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"}
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert session["audio"]["input"]["transcription"] == {"model": "gpt-4o-mini-transcribe"}
    assert session["tools"] == [
        {
            "type": "function",
            "name": "end_call",
            "description": "Hang up",
            "parameters": {"type": "object", "properties": {}},
        }
    ]
    assert "temperature" not in session and "input_audio_format" not in session


def test_session_update_names_itself_and_sends_custom_voices_as_objects() -> None:
    event = valid(rt.session_update(instructions="", voice="voice_123abc"))
    assert event["event_id"] == rt.SESSION_UPDATE_EVENT_ID  # an error naming it means "not configured"
    assert event["session"]["audio"]["output"]["voice"] == {"id": "voice_123abc"}


def test_voice_params_are_recognised_in_both_shapes() -> None:
    assert rt.is_voice_param("session.audio.output.voice") and rt.is_voice_param("session.voice")
    assert not rt.is_voice_param("session.audio.input.turn_detection") and not rt.is_voice_param(None)


def test_session_update_pcmu_semantic_vad_no_transcription() -> None:
    event = valid(
        rt.session_update(
            instructions="",
            voice="alloy",
            audio_format="pcmu",
            turn_detection={"type": "semantic_vad", "eagerness": "high"},
            transcription_model=None,
        )
    )
    audio = event["session"]["audio"]  # type: ignore[index]
    assert audio["input"]["format"] == {"type": "audio/pcmu"} and audio["output"]["format"] == {
        "type": "audio/pcmu"
    }
    assert audio["input"]["transcription"] is None
    with pytest.raises(ValueError, match="audio_format 'mp3'"):
        rt.audio_format_object("mp3")  # type: ignore[arg-type]


def test_client_events() -> None:
    append = valid(rt.input_audio_append(b"\x01\x02\xff"))
    assert base64.b64decode(str(append["audio"])) == b"\x01\x02\xff"
    assert valid(rt.truncate("item_1", 0, 1234)) == {
        "type": "conversation.item.truncate",
        "item_id": "item_1",
        "content_index": 0,
        "audio_end_ms": 1234,
    }
    out = valid(rt.function_call_output("call_1", '{"ok": true}'))
    assert out["item"] == {"type": "function_call_output", "call_id": "call_1", "output": '{"ok": true}'}
    text = valid(rt.user_text("caller pressed 5"))
    assert text["item"] == {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "caller pressed 5"}],
    }
    assert valid(rt.response_create()) == {"type": "response.create"}
    assert valid(rt.response_create("Say hi"))["response"] == {"instructions": "Say hi"}
    assert valid(rt.response_cancel()) == {"type": "response.cancel"}
    assert valid(rt.response_cancel("resp_1"))["response_id"] == "resp_1"


def test_parse_audio_and_speech_events() -> None:
    delta = rt.parse_server_event(
        json.dumps(
            {
                "type": "response.output_audio.delta",
                "event_id": "e",
                "response_id": "r",
                "item_id": "i",
                "output_index": 0,
                "content_index": 0,
                "delta": base64.b64encode(b"abc").decode(),
            }
        )
    )
    assert delta == rt.OutputAudioDelta("r", "i", 0, b"abc")
    assert rt.parse_server_event(
        '{"type":"input_audio_buffer.speech_started","event_id":"e","audio_start_ms":1000,"item_id":"i"}'
    ) == rt.SpeechStarted("i", 1000)
    assert rt.parse_server_event(
        '{"type":"input_audio_buffer.speech_stopped","event_id":"e","audio_end_ms":2000,"item_id":"i"}'
    ) == rt.SpeechStopped("i", 2000)
    done = rt.parse_server_event(
        '{"type":"response.output_audio_transcript.done","event_id":"e","response_id":"r","item_id":"i","output_index":0,"content_index":0,"transcript":"Hello"}'
    )
    assert done == rt.OutputTranscriptDone("r", "i", "Hello")
    heard = rt.parse_server_event(
        '{"type":"conversation.item.input_audio_transcription.completed","event_id":"e","item_id":"i","content_index":0,"transcript":"hi","usage":{"type":"duration","seconds":1}}'
    )
    assert heard == rt.InputTranscriptionCompleted("i", 0, "hi")


def test_parse_function_call_and_response_done_usage() -> None:
    call = rt.parse_server_event(
        '{"type":"response.function_call_arguments.done","event_id":"e","response_id":"r","item_id":"i","output_index":0,"call_id":"c","arguments":"{}"}'
    )
    assert call == rt.FunctionCallArgumentsDone("r", "i", "c", "{}", None)
    added = rt.parse_server_event(
        '{"type":"response.output_item.added","event_id":"e","response_id":"r","output_index":0,"item":{"id":"i","type":"function_call","name":"lookup","call_id":"c"}}'
    )
    assert added == rt.OutputItemAdded("r", "i", "function_call", "lookup", "c")
    done = rt.parse_server_event(
        json.dumps(
            {
                "type": "response.done",
                "event_id": "e",
                "response": {
                    "id": "r",
                    "status": "cancelled",
                    "usage": {
                        "input_tokens": 10,
                        "output_tokens": 5,
                        "input_token_details": {"text_tokens": 6, "audio_tokens": 4, "cached_tokens": 2},
                        "output_token_details": {"text_tokens": 1, "audio_tokens": 4},
                    },
                },
            }
        )
    )
    assert isinstance(done, rt.ResponseDone) and done.status == "cancelled" and done.usage is not None
    assert done.usage.quantities() == {
        "input_text_tokens": 6.0,  # no per-modality split of the cached tokens: nothing to subtract
        "input_audio_tokens": 4.0,
        "cached_input_tokens": 2.0,
        "cached_tokens": 2.0,
        "output_text_tokens": 1.0,
        "output_audio_tokens": 4.0,
    }


def test_parse_error_unknown_and_malformed() -> None:
    err = rt.parse_server_event(
        '{"type":"error","event_id":"e","error":{"type":"invalid_request_error","code":"invalid_value","message":"bad","param":"session.x","event_id":"c1"}}'
    )
    assert err == rt.ErrorEvent("invalid_request_error", "bad", "invalid_value", "session.x", "c1")
    assert rt.parse_server_event('{"type":"rate_limits_updated","rate_limits":[]}') == rt.OtherEvent(
        "rate_limits_updated", {"type": "rate_limits_updated", "rate_limits": []}
    )
    assert isinstance(
        rt.parse_server_event('{"type":"response.audio.delta"}'), rt.UnknownEvent
    )  # the retired beta name
    for bad in [
        "{nope",
        "[1]",
        '{"type": 5}',
        '{"type":"response.output_audio.delta","response_id":"r","item_id":"i","delta":"%%%"}',
        '{"type":"input_audio_buffer.speech_started","item_id":"i"}',
    ]:
        with pytest.raises(rt.RealtimeProtocolError):
            rt.parse_server_event(bad)
