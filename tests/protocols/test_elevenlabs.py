"""ElevenLabs TTS wire format: URLs, headers, bodies, websocket messages, server messages and error bodies."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patterd.protocols import elevenlabs as wire


def test_premade_names_resolve_to_ids_and_ids_pass_through() -> None:
    assert wire.resolve_voice("rachel") == "21m00Tcm4TlvDq8ikWAM"
    assert wire.resolve_voice(" Adam ") == "pNInz6obpgDQGcFmaJgB"
    assert wire.resolve_voice("pNInz6obpgDQGcFmaJgB") == "pNInz6obpgDQGcFmaJgB"
    assert wire.resolve_voice("AbCdEfGhIjKlMnOpQrSt") == "AbCdEfGhIjKlMnOpQrSt"  # a custom voice id
    assert all(wire.VOICE_ID.match(v) for v in wire.PREMADE_VOICES.values())
    for bad in ("nobody", "", "21m00Tcm4TlvDq8ikWA", "../../v1/user?x=yyyyyy"):
        with pytest.raises(ValueError, match="premade voice name"):
            wire.resolve_voice(bad)


def test_stream_url_puts_output_format_in_the_query_and_the_key_in_a_header() -> None:
    url = wire.stream_url("https://api.elevenlabs.io/", "21m00Tcm4TlvDq8ikWAM", "ulaw_8000")
    assert (
        url
        == "https://api.elevenlabs.io/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM/stream?output_format=ulaw_8000"
    )
    assert wire.headers("k") == {"xi-api-key": "k"}
    proxied = wire.stream_url("http://127.0.0.1:8080/el", "v" * 20, "pcm_16000", optimize_streaming_latency=3)
    parts = urlsplit(proxied)
    assert parts.path == f"/el/v1/text-to-speech/{'v' * 20}/stream"
    assert parse_qs(parts.query) == {"output_format": ["pcm_16000"], "optimize_streaming_latency": ["3"]}
    assert wire.voice_url("https://api.elevenlabs.io", "abc") == "https://api.elevenlabs.io/v1/voices/abc"


def test_stream_body() -> None:
    assert wire.stream_body("Hi.", "eleven_flash_v2_5") == {"text": "Hi.", "model_id": "eleven_flash_v2_5"}
    assert wire.stream_body("Hi.", "m", {"stability": 0.4})["voice_settings"] == {"stability": 0.4}


def test_ws_url_is_derived_from_the_base_url() -> None:
    url = wire.ws_url(
        "https://api.elevenlabs.io", "x" * 20, "eleven_flash_v2_5", "ulaw_8000", inactivity_timeout=60
    )
    parts = urlsplit(url)
    assert parts.scheme == "wss" and parts.path == f"/v1/text-to-speech/{'x' * 20}/stream-input"
    assert parse_qs(parts.query) == {
        "model_id": ["eleven_flash_v2_5"],
        "output_format": ["ulaw_8000"],
        "inactivity_timeout": ["60"],
    }
    assert wire.ws_url("http://127.0.0.1:1", "v", "m", "ulaw_8000", auto_mode=True).startswith(
        "ws://127.0.0.1:1/"
    )
    assert "auto_mode=true" in wire.ws_url("http://h", "v", "m", "ulaw_8000", auto_mode=True)


def test_ws_client_messages() -> None:
    assert json.loads(wire.ws_open()) == {"text": " "}
    assert json.loads(wire.ws_open({"speed": 1.1})) == {"text": " ", "voice_settings": {"speed": 1.1}}
    assert json.loads(wire.ws_text("Hello.")) == {"text": "Hello. "}  # text must end with a space
    assert json.loads(wire.ws_text("Hello. ", flush=True)) == {"text": "Hello. ", "flush": True}
    assert json.loads(wire.ws_close()) == {"text": ""}


def test_ws_server_messages() -> None:
    audio = base64.b64encode(b"\xff\x7f\x00").decode()
    assert wire.parse_ws(json.dumps({"audio": audio, "isFinal": None, "alignment": None})) == wire.WsAudio(
        b"\xff\x7f\x00"
    )
    assert wire.parse_ws('{"isFinal": true}') == wire.WsFinal()
    assert wire.parse_ws('{"audio": null, "isFinal": true}') == wire.WsFinal()
    assert wire.parse_ws('{"audio": "", "normalizedAlignment": {}}') is None
    error = wire.parse_ws('{"message": "Invalid API key", "error": "invalid_api_key", "code": 1008}')
    assert error == wire.WsError("Invalid API key", "invalid_api_key")
    for bad in ("nope", "[1]", '{"audio": "!!notbase64!!"}', '{"audio": 5}', b"\xff\xfe"):
        with pytest.raises(wire.ElevenLabsProtocolError):
            wire.parse_ws(bad)


def test_error_bodies() -> None:
    body = b'{"detail": {"status": "voice_not_found", "message": "A voice with voice_id x was not found."}}'
    assert wire.error_detail(body, 404) == ("voice_not_found", "A voice with voice_id x was not found.")
    validation = (
        b'{"detail": [{"loc": ["body", "text"], "msg": "field required", "type": "value_error.missing"}]}'
    )
    assert wire.error_detail(validation, 422) == ("validation_error", "body.text: field required")
    assert wire.error_detail(b"<html>Bad gateway</html>", 502) == ("", "<html>Bad gateway</html>")
    assert wire.error_detail(b"", 503) == ("", "HTTP 503")
    assert wire.error_detail(b'{"detail": "Not authenticated"}', 401) == ("", "Not authenticated")
    assert wire.error_detail(b"[" * 5000, 500)[1]  # too deep: text, never a crash


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(
                    st.sampled_from(["audio", "isFinal", "message", "error", "x"]), inner, max_size=4
                )
            ),
            max_leaves=12,
        ).map(json.dumps),
    )
)
def test_fuzz_server_messages_parse_or_raise_the_protocol_error(data: str | bytes) -> None:
    code, message = wire.error_detail(
        data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data, 500
    )
    assert isinstance(code, str) and isinstance(message, str) and message
    try:
        event = wire.parse_ws(data)
    except wire.ElevenLabsProtocolError:
        return
    assert event is None or isinstance(event, wire.WsAudio | wire.WsFinal | wire.WsError)
