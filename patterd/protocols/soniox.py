"""Soniox real-time speech-to-text (`/transcribe-websocket`): URL, headers, config, control messages, responses.

Followed: soniox.com/docs api-reference/stt/websocket-api (one JSON config first, then binary
audio; responses carry `tokens[{text, is_final, start_ms, end_ms, confidence}]`,
`final_audio_proc_ms`, `total_audio_proc_ms`, `finished`), guides/websocket-authentication (the key
goes in `Authorization: Bearer` on the upgrade; a key in the config is deprecated and refused from
2027-01-15, and the SDK says a key in both places is refused now), stt/rt/manual-finalization
(`{"type": "finalize"}` answers with a `<fin>` token), endpoint detection (`<end>` token),
connection-keepalive (`{"type": "keepalive"}`, at least every 20 s), error-handling (`{error_code,
error_message}` then the socket closes; 503 "Cannot continue request": start a new one) and
limits-and-quotas. Cross-checked with the official `soniox` SDK 2.10 (`realtime/async_stt.py`: the
end of audio is an empty frame, `send("")`; `types/realtime.py`).

No I/O here: the provider (`patterd.providers.soniox`) and the fake server (`tests/fakes/soniox.py`)
both use these types.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from patterd.protocols.jsontext import JSONError, loads

DEFAULT_BASE_URL = "wss://stt-rt.soniox.com"
DEFAULT_API_URL = "https://api.soniox.com"
WEBSOCKET_PATH = "/transcribe-websocket"
MODELS_PATH = "/v1/models"  # cheap authenticated GET for probes

END_TOKEN = "<end>"  # endpoint detected: the utterance is over
FIN_TOKEN = "<fin>"  # answer to a finalize message: everything before it is final
KEEPALIVE = json.dumps({"type": "keepalive"})
END_OF_AUDIO = ""  # an empty frame ends the stream (the SDK sends an empty text frame)


class SonioxProtocolError(ValueError):
    """A server message that does not follow the protocol (bad JSON, wrong field types)."""


@dataclass(frozen=True)
class Config:
    """The first (and only) JSON message of a stream: how to read the audio and what to detect."""

    model: str = "stt-rt-v4"
    audio_format: str = "mulaw"
    sample_rate: int = 8000
    num_channels: int = 1
    language_hints: Sequence[str] = ("en",)
    enable_endpoint_detection: bool = True
    max_endpoint_delay_ms: int | None = None  # 500-3000; Soniox's default is 2000
    context: str | None = None  # free text that biases recognition (names, terms)
    client_reference_id: str | None = None

    def message(self) -> str:
        """The config as JSON text. The API key is never in it: it travels in the upgrade's header."""
        body: dict[str, Any] = {
            "model": self.model,
            "audio_format": self.audio_format,
            "sample_rate": self.sample_rate,
            "num_channels": self.num_channels,
            "enable_endpoint_detection": self.enable_endpoint_detection,
        }
        if self.language_hints:
            body["language_hints"] = list(self.language_hints)
        if self.max_endpoint_delay_ms is not None:
            body["max_endpoint_delay_ms"] = self.max_endpoint_delay_ms
        if self.context:
            body["context"] = self.context
        if self.client_reference_id:
            body["client_reference_id"] = self.client_reference_id
        return json.dumps(body)


def finalize(trailing_silence_ms: int | None = None) -> str:
    """Ask for every pending token as final; answered by a `<fin>` token."""
    body: dict[str, Any] = {"type": "finalize"}
    if trailing_silence_ms is not None:
        body["trailing_silence_ms"] = trailing_silence_ms
    return json.dumps(body)


def websocket_url(base_url: str) -> str:
    """`{base_url}/transcribe-websocket`; an http(s) base becomes ws(s)."""
    parts = urlsplit(base_url.rstrip("/"))
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    if not path.endswith(WEBSOCKET_PATH):
        path += WEBSOCKET_PATH
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def api_url(base_url: str, api_base: str | None, path: str) -> str:
    """The REST URL of `path`: on `api_base` if given, on api.soniox.com for the production websocket
    host, else on the websocket's own host (a fake, a proxy)."""
    if api_base is None:
        parts = urlsplit(base_url.rstrip("/"))
        if parts.hostname == urlsplit(DEFAULT_BASE_URL).hostname:
            api_base = DEFAULT_API_URL
        else:
            scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
            api_base = urlunsplit((scheme, parts.netloc, "", "", ""))
    return api_base.rstrip("/") + path


def auth_headers(api_key: str) -> dict[str, str]:
    """The key on the upgrade request (never in the config message)."""
    return {"Authorization": f"Bearer {api_key}"}


# ------------------------------------------------------------------ server → client


@dataclass(frozen=True)
class Token:
    """A piece of text (often a sub-word with its leading space); markers `<end>`/`<fin>` are tokens too."""

    text: str
    is_final: bool
    start_ms: float | None = None
    end_ms: float | None = None
    confidence: float | None = None

    @property
    def marker(self) -> bool:
        return self.text in (END_TOKEN, FIN_TOKEN)


@dataclass(frozen=True)
class Response:
    """One result message: finals are sent once, non-finals are re-sent (revised) in each message."""

    tokens: tuple[Token, ...]
    final_audio_proc_ms: float = 0.0
    total_audio_proc_ms: float = 0.0
    finished: bool = False  # the last message of the stream (after the empty frame)


@dataclass(frozen=True)
class ErrorResponse:
    """`{error_code, error_message}`: the socket closes after it. Codes are HTTP-like (400, 401, 408, 429, 503)."""

    code: int
    message: str
    error_type: str = ""


ServerMessage = Response | ErrorResponse


def _number(value: object, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SonioxProtocolError(f"{what} is not a number: {value!r}")
    return float(value)


def _token(raw: object) -> Token:
    if not isinstance(raw, dict):
        raise SonioxProtocolError(f"token is not an object: {type(raw).__name__}")
    text = raw.get("text")
    if not isinstance(text, str):
        raise SonioxProtocolError("token text is not a string")
    return Token(
        text=text,
        is_final=raw.get("is_final") is True,
        start_ms=_number(raw.get("start_ms"), "start_ms"),
        end_ms=_number(raw.get("end_ms"), "end_ms"),
        confidence=_number(raw.get("confidence"), "confidence"),
    )


def parse(data: str | bytes) -> ServerMessage:
    """One server frame as a typed message; SonioxProtocolError for anything malformed."""
    try:
        obj = loads(data)
    except JSONError as exc:
        raise SonioxProtocolError(str(exc)) from None
    if not isinstance(obj, dict):
        raise SonioxProtocolError(f"message is not a JSON object: {type(obj).__name__}")
    code = obj.get("error_code")
    if code is not None or "error_message" in obj:
        # Soniox documents integer codes; some clients saw strings: read both, never crash on either.
        try:
            number = int(code) if code is not None and not isinstance(code, bool) else 0
        except (TypeError, ValueError):
            number = 0
        message = obj.get("error_message")
        error_type = obj.get("error_type")
        return ErrorResponse(
            number,
            message if isinstance(message, str) else "error",
            error_type if isinstance(error_type, str) else "",
        )
    tokens = obj.get("tokens", [])
    if not isinstance(tokens, list):
        raise SonioxProtocolError("tokens is not a list")
    return Response(
        tokens=tuple(_token(t) for t in tokens),
        final_audio_proc_ms=_number(obj.get("final_audio_proc_ms"), "final_audio_proc_ms") or 0.0,
        total_audio_proc_ms=_number(obj.get("total_audio_proc_ms"), "total_audio_proc_ms") or 0.0,
        finished=obj.get("finished") is True,
    )
