"""ElevenLabs text-to-speech wire format (HTTP `/stream` and websocket `stream-input`), sans I/O.

Sources: the ElevenLabs API reference "Stream speech" (`POST /v1/text-to-speech/{voice_id}/stream`,
`output_format` a query parameter defaulting to mp3_44100_128, body {text, model_id, voice_settings})
and "WebSocket" (`/v1/text-to-speech/{voice_id}/stream-input?model_id=&output_format=&inactivity_timeout=`:
first message `{"text": " "}`, text messages ending in a space, `flush: true` to generate what is
buffered, `{"text": ""}` to end; the server answers `{"audio": base64, ...}` then `{"isFinal": true}`),
cross-checked with the official `elevenlabs` Python SDK 2.78.0 (`text_to_speech/raw_client.py`,
`realtime_tts.py`, `types/{initialize_connection,send_text,audio_output,final_output}.py`,
`core/client_wrapper.py`: auth is the `xi-api-key` header). Errors come as
`{"detail": {"status": "voice_not_found", "message": ...}}` (or a list of validation errors for 422);
on the websocket as a JSON message carrying `message` (and `error`) before the close.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from patterd.protocols.jsontext import JSONError, loads

DEFAULT_BASE_URL = "https://api.elevenlabs.io"
DEFAULT_MODEL = (
    "eleven_flash_v2_5"  # the lowest-latency model (~75 ms model time per ElevenLabs' models page)
)
DEFAULT_OUTPUT_FORMAT = "ulaw_8000"
API_DEFAULT_OUTPUT_FORMAT = "mp3_44100_128"  # what the API sends when output_format is left out
# The websocket holds text until this many characters are buffered (chunk_length_schedule's first
# entry), unless a message carries `flush: true` or the socket was opened with auto_mode=true.
WS_BUFFER_CHARS = 120
WS_DEFAULT_INACTIVITY_SECS = 20  # `inactivity_timeout` default; the API accepts up to 180

# Premade voices every account can use, by lower-cased name → voice id. The API takes ids only (a
# name answers 404 voice_not_found). Current defaults as listed by `GET /v1/voices` (category
# "premade"), plus the legacy premade voices still served by id; "bella" is the current Bella
# (the legacy Bella id, EXAVITQu4vr4xnSDxMaL, is now named Sarah).
PREMADE_VOICES: dict[str, str] = {
    # current default voices
    "aria": "9BWtsMINqrJLrRacOk9x",
    "roger": "CwhRBWXzGAHq8TQ4Fs17",
    "sarah": "EXAVITQu4vr4xnSDxMaL",
    "laura": "FGY2WhTYpPnrIDTdsKH5",
    "charlie": "IKne3meq5aSn9XLyUdCD",
    "george": "JBFqnCBsd6RMkjVDRZzb",
    "callum": "N2lVS1w4EtoT3dr4eOWO",
    "river": "SAz9YHcvj6GT2YYXdXww",
    "liam": "TX3LPaxmHKxFdv7VOQHJ",
    "charlotte": "XB0fDUnXU5powFXDhCwa",
    "alice": "Xb7hH8MSUJpSbSDYk0k2",
    "matilda": "XrExE9yKIg1WjnnlVkGX",
    "will": "bIHbv24MWmeRgasZH58o",
    "jessica": "cgSgspJ2msm6clMCkdW9",
    "eric": "cjVigY5qzO86Huf0OWal",
    "chris": "iP95p4xoKVk53GoZ742B",
    "brian": "nPczCjzI2devNBz1zQrb",
    "daniel": "onwK4e9ZLuTAKqWW03F9",
    "lily": "pFZP5JQG7iQjIQuC4Bku",
    "bill": "pqHfZKP75CvOlQylNhV4",
    "bella": "hpp4J3VqNfWAUOO0d1Us",
    "harry": "SOYHLrjzK2X1ezoPC6cr",
    # legacy premade voices
    "rachel": "21m00Tcm4TlvDq8ikWAM",
    "drew": "29vD33N1CtxCmqQRPOHJ",
    "clyde": "2EiwWnXFnvU5JabPnv8n",
    "paul": "5Q0t7uMcjvnagumLfvZi",
    "domi": "AZnzlk1XvdvUeBnXmlld",
    "dave": "CYw3kZ02Hs0563khs1Fj",
    "fin": "D38z5RcWu1voky8WS1ja",
    "antoni": "ErXwobaYiN019PkySvjV",
    "thomas": "GBv7mTt0atIp3Br8iCZE",
    "elli": "MF3mGyEYCl7XYWbV9V6O",
    "josh": "TxGEqnHWrfWFTfGW9XjX",
    "arnold": "VR6AewLTigWG4xSOukaG",
    "adam": "pNInz6obpgDQGcFmaJgB",
    "sam": "yoZ06aMxZJJ28mfd3POQ",
}
VOICE_ID = re.compile(r"^[A-Za-z0-9]{20}$")  # every ElevenLabs voice id is 20 alphanumerics

# Output formats patterd can turn into 8 kHz μ-law without a decoder: (encoding, sample rate).
# mp3_* and opus_* would need a decoder and are refused at config time.
OUTPUT_FORMATS: dict[str, tuple[str, int]] = {
    "ulaw_8000": ("ulaw", 8000),
    "alaw_8000": ("alaw", 8000),
    "pcm_8000": ("pcm", 8000),
    "pcm_16000": ("pcm", 16000),
    "pcm_22050": ("pcm", 22050),
    "pcm_24000": ("pcm", 24000),
    "pcm_44100": ("pcm", 44100),
    "pcm_48000": ("pcm", 48000),
}


class ElevenLabsProtocolError(ValueError):
    """A server message that does not follow the protocol."""


def resolve_voice(voice: str) -> str:
    """A voice id for `voice`: a premade voice's name (any case) or an id as is; ValueError otherwise."""
    key = voice.strip().lower()
    if key in PREMADE_VOICES:
        return PREMADE_VOICES[key]
    if VOICE_ID.match(voice.strip()):
        return voice.strip()
    names = ", ".join(sorted(PREMADE_VOICES))
    raise ValueError(
        f"voice_id {voice!r} is neither a voice id (20 letters and digits) nor a premade voice name ({names})"
    )


def headers(api_key: str) -> dict[str, str]:
    """Request headers: the key goes in `xi-api-key` (never in the URL, where logs would keep it)."""
    return {"xi-api-key": api_key}


def _join(base_url: str, path: str, query: dict[str, str], *, websocket: bool = False) -> str:
    parts = urlsplit(base_url)
    scheme = parts.scheme
    if websocket:
        scheme = {"https": "wss", "http": "ws"}.get(scheme, scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + path, urlencode(query), ""))


def stream_url(
    base_url: str, voice_id: str, output_format: str, optimize_streaming_latency: int | None = None
) -> str:
    """`POST` target of a streamed synthesis; `output_format` must be in the query (the body ignores it)."""
    query = {"output_format": output_format}
    if optimize_streaming_latency is not None:
        query["optimize_streaming_latency"] = str(optimize_streaming_latency)
    return _join(base_url, f"/v1/text-to-speech/{quote(voice_id, safe='')}/stream", query)


def stream_body(text: str, model_id: str, voice_settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON body of a streamed synthesis."""
    body: dict[str, Any] = {"text": text, "model_id": model_id}
    if voice_settings:
        body["voice_settings"] = dict(voice_settings)
    return body


def voice_url(base_url: str, voice_id: str) -> str:
    """`GET /v1/voices/{voice_id}`: a cheap authenticated probe that also proves the voice exists."""
    return _join(base_url, f"/v1/voices/{quote(voice_id, safe='')}", {})


def ws_url(
    base_url: str,
    voice_id: str,
    model_id: str,
    output_format: str,
    *,
    inactivity_timeout: int | None = None,
    auto_mode: bool = False,
) -> str:
    """The `stream-input` websocket URL (ws/wss derived from the http/https base URL)."""
    query = {"model_id": model_id, "output_format": output_format}
    if inactivity_timeout is not None:
        query["inactivity_timeout"] = str(inactivity_timeout)
    if auto_mode:
        query["auto_mode"] = "true"
    return _join(
        base_url, f"/v1/text-to-speech/{quote(voice_id, safe='')}/stream-input", query, websocket=True
    )


def ws_open(voice_settings: dict[str, Any] | None = None) -> str:
    """The first websocket message: a single space (plus settings, which only this message may carry)."""
    message: dict[str, Any] = {"text": " "}
    if voice_settings:
        message["voice_settings"] = dict(voice_settings)
    return json.dumps(message)


def ws_text(text: str, *, flush: bool = False) -> str:
    """A text message; it must end with a space, and `flush` makes the server speak what it holds now."""
    message: dict[str, Any] = {"text": text if text.endswith(" ") else text + " "}
    if flush:
        message["flush"] = True
    return json.dumps(message)


def ws_close() -> str:
    """End of input: the server speaks what is left, sends `isFinal` and closes."""
    return json.dumps({"text": ""})


@dataclass(frozen=True)
class WsAudio:
    """A chunk of audio in the requested output format."""

    audio: bytes


@dataclass(frozen=True)
class WsFinal:
    """The generation is complete (comes only after the end-of-input message)."""


@dataclass(frozen=True)
class WsError:
    """The server reports an error (it closes the socket after it)."""

    message: str
    error: str = ""


WsEvent = WsAudio | WsFinal | WsError


def parse_ws(data: str | bytes) -> WsEvent | None:
    """One server websocket message as an event (None: nothing to act on, e.g. alignment only).

    Raises ElevenLabsProtocolError for malformed JSON, a non-object, or audio that is not base64.
    """
    try:
        message = loads(data)
    except JSONError as exc:
        raise ElevenLabsProtocolError(f"not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ElevenLabsProtocolError(f"expected a JSON object, got {type(message).__name__}")
    audio = message.get("audio")
    if isinstance(audio, str) and audio:
        try:
            return WsAudio(base64.b64decode(audio, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise ElevenLabsProtocolError(f"audio is not base64: {exc}") from exc
    if audio is not None and not isinstance(audio, str):
        raise ElevenLabsProtocolError(f"audio is a {type(audio).__name__}, not a base64 string")
    if message.get("isFinal") is True:
        return WsFinal()
    if "message" in message or "error" in message:
        return WsError(str(message.get("message") or message.get("error")), str(message.get("error") or ""))
    return None


def error_detail(body: bytes, status: int) -> tuple[str, str]:
    """(status code word, message) from an error body, e.g. ("voice_not_found", "A voice with ...")."""
    try:
        data = loads(body)
    except JSONError:
        text = body.decode("utf-8", "replace").strip()[:200]
        return "", text or f"HTTP {status}"
    detail = data.get("detail") if isinstance(data, dict) else None
    if isinstance(detail, dict):
        return str(detail.get("status") or detail.get("code") or ""), str(
            detail.get("message") or f"HTTP {status}"
        )
    if isinstance(detail, list) and detail:  # 422: FastAPI validation errors
        first = detail[0] if isinstance(detail[0], dict) else {}
        where = ".".join(str(p) for p in first.get("loc", []) if isinstance(p, str | int))
        return "validation_error", f"{where}: {first.get('msg', 'invalid request')}".lstrip(": ")
    if isinstance(detail, str):
        return "", detail
    return "", f"HTTP {status}"
