"""LMNT streaming speech session wire format (websocket `/v1/ai/speech/stream`, API 1.1), sans I/O.

Sources: LMNT's "Speech session (WebSocket)" reference (docs.lmnt.com/api-reference/speech/streaming)
and the official `lmnt` Python SDK 2.13.0 (`resources/sessions.py`, `types/speech_session_*.py`,
`types/error_body.py`, `resources/accounts.py`). There is no auth header: the key travels in the
first frame, `{"X-API-Key", "lmnt-version", voice, format, sample_rate, language}`. Then the client
sends `{"type": "text"}`, `{"type": "flush"|"reset", "nonce"}` and `{"type": "finish"}`; the server
answers `ready` {request_id}, binary audio frames, `flush_complete` / `reset_complete` {nonce} (the
nonce of the matching request), `timestamps`, and `error` {error: {type, message}, request_id}.
`ulaw` audio carries a WAV header (SDK: "8-bit G711 µ-law audio with a WAV header"): stripped here.

`model` and `speed` are not in the SDK 2.13 session schema; they are sent in the first frame only
when configured (older LMNT docs and other clients send them there), so the default frame is the SDK's.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from patterd.protocols.jsontext import JSONError, loads

DEFAULT_BASE_URL = "https://api.lmnt.com"
STREAM_PATH = "/v1/ai/speech/stream"
ACCOUNT_PATH = "/v1/account"
# The brief and LMNT's 1.1 reference; SDK 2.13 sends "1.2" with the very same messages.
API_VERSION = "1.1"
LANGUAGES = (
    "auto", "ar", "as", "bn", "cs", "da", "de", "en", "es", "fi", "fr", "hi", "id", "it", "ja", "ko", "ml",
    "mr", "nl", "pl", "pt", "ru", "sk", "sv", "ta", "te", "th", "tr", "uk", "ur", "vi", "zh",
)  # fmt: skip
SAMPLE_RATES = (8000, 16000, 24000)
FORMATS = ("mp3", "pcm_s16le", "pcm_f32le", "ulaw", "webm")
# ErrorBody.type (SDK types/error_body.py) → the HTTP status it stands for, for patterd.errors.
ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "payment_required_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "internal_server_error": 500,
}
MAX_WAV_HEADER = 4096  # a header longer than this is not one LMNT would send
WAVE_FORMAT_MULAW = 7


class LMNTProtocolError(ValueError):
    """A server message (or WAV header) that does not follow the protocol."""


def _join(base_url: str, path: str, *, websocket: bool = False) -> str:
    parts = urlsplit(base_url)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme) if websocket else parts.scheme
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + path, "", ""))


def stream_url(base_url: str) -> str:
    """The session websocket URL (ws/wss derived from the http/https base URL, as the SDK does)."""
    return _join(base_url, STREAM_PATH, websocket=True)


def account_url(base_url: str) -> str:
    """`GET /v1/account`: the cheapest authenticated request (the SDK's `accounts.retrieve`)."""
    return _join(base_url, ACCOUNT_PATH)


def headers(api_key: str) -> dict[str, str]:
    """HTTP request headers: the key goes in `X-API-Key`."""
    return {"X-API-Key": api_key}


def init_message(
    api_key: str,
    voice: str,
    *,
    language: str | None = None,
    model: str | None = None,
    speed: float | None = None,
    audio_format: str = "ulaw",
    sample_rate: int = 8000,
) -> str:
    """The first frame: credentials and session settings (nothing else may come first)."""
    message: dict[str, Any] = {
        "X-API-Key": api_key,
        "lmnt-version": API_VERSION,
        "voice": voice,
        "format": audio_format,
        "sample_rate": sample_rate,
    }
    if language is not None:
        message["language"] = language
    if model is not None:
        message["model"] = model
    if speed is not None:
        message["speed"] = speed
    return json.dumps(message)


def text_message(text: str) -> str:
    """Append text to the session's buffer (spoken at the next flush, or when LMNT decides)."""
    return json.dumps({"type": "text", "text": text})


def flush_message(nonce: int) -> str:
    """Speak everything buffered now; the server answers `flush_complete` with this nonce after its audio."""
    return json.dumps({"type": "flush", "nonce": nonce})


def reset_message(nonce: int) -> str:
    """Drop buffered text and pending speech (barge-in); `reset_complete` with this nonce follows."""
    return json.dumps({"type": "reset", "nonce": nonce})


def finish_message() -> str:
    """No more text: the server speaks what is left and closes."""
    return json.dumps({"type": "finish"})


@dataclass(frozen=True)
class Ready:
    """The session is open."""

    request_id: str


@dataclass(frozen=True)
class FlushComplete:
    """All audio of the flush with this nonce has been sent."""

    nonce: int


@dataclass(frozen=True)
class ResetComplete:
    """The reset with this nonce is done: audio after this is for text sent after the reset."""

    nonce: int


@dataclass(frozen=True)
class SessionError:
    """The server refuses or failed; it closes the session after this."""

    type: str
    message: str
    request_id: str = ""

    @property
    def status(self) -> int:
        """The HTTP status this error type stands for (500 for a type LMNT has not documented)."""
        return ERROR_STATUS.get(self.type, 500)


Event = Ready | FlushComplete | ResetComplete | SessionError


def _nonce(message: dict[str, Any]) -> int:
    nonce = message.get("nonce")
    if not isinstance(nonce, int) or isinstance(nonce, bool):
        raise LMNTProtocolError(f"{message.get('type')} without an integer nonce")
    return nonce


def parse(data: str | bytes) -> Event | None:
    """One server text frame as an event (None: nothing to act on, e.g. `timestamps`).

    Raises LMNTProtocolError for malformed JSON, a non-object, an unknown `type` or a missing nonce.
    """
    try:
        message = loads(data)
    except JSONError as exc:
        raise LMNTProtocolError(f"not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise LMNTProtocolError(f"expected a JSON object, got {type(message).__name__}")
    kind = message.get("type")
    if kind == "ready":
        return Ready(str(message.get("request_id") or ""))
    if kind == "flush_complete":
        return FlushComplete(_nonce(message))
    if kind == "reset_complete":
        return ResetComplete(_nonce(message))
    if kind == "timestamps":
        return None
    if kind == "error" or (kind is None and "error" in message):
        body = message.get("error")
        if isinstance(body, dict):
            return SessionError(
                str(body.get("type") or ""),
                str(body.get("message") or ""),
                str(message.get("request_id") or ""),
            )
        # API 1.0 sent {"error": "text"}: keep its words
        return SessionError(
            "", str(body or message.get("message") or "error"), str(message.get("request_id") or "")
        )
    raise LMNTProtocolError(f"unknown message type {kind!r}")


def error_detail(body: bytes, status: int) -> str:
    """The message of an HTTP error body (`{"error": {"type", "message"}}` or `{"message"}`), or its text."""
    try:
        data = loads(body)
    except JSONError:
        return body.decode("utf-8", "replace").strip()[:200] or f"HTTP {status}"
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            words = " ".join(str(error.get(k)) for k in ("type", "message") if error.get(k))
            return words or f"HTTP {status}"
        for key in ("message", "error", "detail"):
            if isinstance(data.get(key), str):
                return str(data[key])
    return f"HTTP {status}"


def wav_header(sample_rate: int = 8000, data_size: int = 0xFFFFFFFF) -> bytes:
    """A μ-law WAV header (format 7, mono, 8 bit) with an open-ended data chunk, as a stream sends it."""
    riff_size = 0xFFFFFFFF if data_size == 0xFFFFFFFF else 4 + 26 + 8 + data_size
    fmt = struct.pack("<HHIIHHH", WAVE_FORMAT_MULAW, 1, sample_rate, sample_rate, 1, 8, 0)
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + (b"data" + struct.pack("<I", data_size))
    )


class WavHeaderStripper:
    """Removes the WAV header from the front of a `ulaw` audio stream, however the frames split it.

    Armed at the start of a session and after each flush or reset (a header there is stripped too);
    audio that does not start with `RIFF` passes through untouched. A header that says anything but
    8 kHz mono μ-law raises LMNTProtocolError: played as μ-law it would be noise.
    """

    def __init__(self, sample_rate: int = 8000) -> None:
        self.sample_rate = sample_rate
        self._buffer = b""
        self._armed = True

    def arm(self) -> bytes:
        """A new segment starts: returns audio held back from the last one (a partial `RIFF` prefix)."""
        held, self._buffer, self._armed = self._buffer, b"", True
        return held

    def feed(self, data: bytes) -> bytes:
        """Audio without any header."""
        if not self._armed:
            return data
        buffer = self._buffer + data
        if len(buffer) < 4:
            if b"RIFF".startswith(buffer):
                self._buffer = buffer
                return b""
            return self._pass(buffer)
        if buffer[:4] != b"RIFF":
            return self._pass(buffer)
        if len(buffer) < 12:
            self._buffer = buffer
            return b""
        if buffer[8:12] != b"WAVE":
            raise LMNTProtocolError("audio starts with RIFF but is not a WAVE file")
        at = 12
        while len(buffer) >= at + 8:
            chunk, size = buffer[at : at + 4], struct.unpack("<I", buffer[at + 4 : at + 8])[0]
            if chunk == b"data":
                return self._pass(buffer[at + 8 :])
            end = at + 8 + size + (size & 1)
            if end > MAX_WAV_HEADER:
                raise LMNTProtocolError(f"WAV chunk {chunk!r} of {size} bytes before the audio")
            if len(buffer) < end:
                break
            if chunk == b"fmt ":
                self._check_fmt(buffer[at + 8 : at + 8 + size])
            at = end
        if len(buffer) > MAX_WAV_HEADER:
            raise LMNTProtocolError(f"no WAV data chunk in the first {MAX_WAV_HEADER} bytes")
        self._buffer = buffer
        return b""

    def _pass(self, data: bytes) -> bytes:
        self._buffer, self._armed = b"", False
        return data

    def _check_fmt(self, body: bytes) -> None:
        if len(body) < 16:
            raise LMNTProtocolError(f"WAV fmt chunk of {len(body)} bytes")
        code, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
        if (code, channels, rate, bits) != (WAVE_FORMAT_MULAW, 1, self.sample_rate, 8):
            raise LMNTProtocolError(
                f"WAV header says format {code}, {channels} channel(s), {rate} Hz, {bits} bit; "
                f"expected μ-law (7), mono, {self.sample_rate} Hz, 8 bit"
            )
