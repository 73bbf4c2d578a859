"""Cartesia streaming STT (`/stt/websocket`, ink-whisper) and TTS (`/tts/websocket`, sonic): URLs, headers, messages.

Followed: docs.cartesia.ai "STT WebSocket" (query `model`, `language`, `encoding`, `sample_rate`;
binary audio frames; text commands `finalize` — answered by `flush_done` — and `close` (2026-03-01;
`done` before that), answered by `done`; `transcript` messages whose `is_final` texts are deltas to
be joined verbatim from 2026-03-01), "TTS WebSocket" and "Contexts" (a generation request per
input with `context_id`, `continue: true` while more text follows, `{context_id, cancel: true}` to
stop one; `chunk` (base64 audio), `timestamps`, `flush_done`, `done`, `error` messages), and
"Concurrency limits and timeouts" (idle sockets close after 5 minutes; too many active contexts is
a 429). Auth is `X-API-Key` plus the `Cartesia-Version` header. Cross-checked with the official
`cartesia` SDK 4.2 (`resources/stt/manual_finalize.py`, `lib/_tts.py`, `types/websocket_response.py`).

No I/O here: the providers (`patterd.providers.cartesia`) and the fake (`tests/fakes/cartesia.py`)
both use these types.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from patterd.protocols.jsontext import JSONError, loads

DEFAULT_BASE_URL = "https://api.cartesia.ai"
DEFAULT_VERSION = "2026-03-01"
STT_PATH = "/stt/websocket"
TTS_PATH = "/tts/websocket"
VOICES_PATH = "/voices"

FINALIZE = "finalize"  # plain text frames, not JSON (the SDK sends the bare word)
CLOSE = "close"
CLOSE_LEGACY = "done"  # the close command before 2026-03-01
DELTA_FINALS_SINCE = "2026-03-01"  # from this version a final's text is a delta: join unstripped


class CartesiaProtocolError(ValueError):
    """A server message that does not follow the protocol (bad JSON, missing fields, bad base64)."""


def close_command(version: str) -> str:
    """`close` from 2026-03-01, `done` before (ISO dates compare as strings)."""
    return CLOSE if version >= DELTA_FINALS_SINCE else CLOSE_LEGACY


def finals_are_deltas(version: str) -> bool:
    return version >= DELTA_FINALS_SINCE


def headers(api_key: str, version: str) -> dict[str, str]:
    """`X-API-Key` and `Cartesia-Version` (the API refuses a request without a version)."""
    return {"X-API-Key": api_key, "Cartesia-Version": version}


def _ws_base(base_url: str) -> tuple[str, str, str]:
    parts = urlsplit(base_url.rstrip("/"))
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    return scheme, parts.netloc, parts.path.rstrip("/")


def http_url(base_url: str, path: str) -> str:
    """A REST URL on the same host (ws(s) bases become http(s))."""
    parts = urlsplit(base_url.rstrip("/"))
    scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + path, "", ""))


def voice_url(base_url: str, voice_id: str) -> str:
    return http_url(base_url, f"{VOICES_PATH}/{quote(voice_id, safe='')}")


@dataclass(frozen=True)
class STTParams:
    """The query of one STT websocket."""

    model: str = "ink-whisper"
    language: str | None = "en"
    encoding: str = "pcm_mulaw"
    sample_rate: int = 8000
    max_silence_duration_secs: float | None = None  # ink-whisper's own endpointing (None: its default)
    min_volume: float | None = None

    def query(self) -> list[tuple[str, str]]:
        out = [("model", self.model), ("encoding", self.encoding), ("sample_rate", str(self.sample_rate))]
        if self.language:
            out.append(("language", self.language))
        if self.max_silence_duration_secs is not None:
            out.append(("max_silence_duration_secs", f"{self.max_silence_duration_secs:g}"))
        if self.min_volume is not None:
            out.append(("min_volume", f"{self.min_volume:g}"))
        return out


def stt_url(base_url: str, params: STTParams) -> str:
    scheme, netloc, path = _ws_base(base_url)
    return urlunsplit((scheme, netloc, path + STT_PATH, urlencode(params.query()), ""))


def tts_url(base_url: str) -> str:
    scheme, netloc, path = _ws_base(base_url)
    return urlunsplit((scheme, netloc, path + TTS_PATH, "", ""))


# ------------------------------------------------------------------ TTS client → server


OUTPUT_FORMAT: dict[str, Any] = {"container": "raw", "encoding": "pcm_mulaw", "sample_rate": 8000}


def generation(
    *,
    context_id: str,
    transcript: str,
    model_id: str,
    voice_id: str,
    language: str | None,
    more: bool,
    max_buffer_delay_ms: int | None = None,
    speed: str | None = None,
) -> str:
    """One generation request; `more` (`continue`) says more text follows on this context."""
    body: dict[str, Any] = {
        "model_id": model_id,
        "transcript": transcript,
        "voice": {"mode": "id", "id": voice_id},
        "output_format": OUTPUT_FORMAT,
        "context_id": context_id,
        "continue": more,
    }
    if language:
        body["language"] = language
    if max_buffer_delay_ms is not None:
        body["max_buffer_delay_ms"] = max_buffer_delay_ms
    if speed is not None:
        body["speed"] = speed
    return json.dumps(body)


def cancel(context_id: str) -> str:
    return json.dumps({"context_id": context_id, "cancel": True})


# ------------------------------------------------------------------ server → client


@dataclass(frozen=True)
class Transcript:
    """STT: text heard; `is_final` texts are deltas from the previous final (2026-03-01)."""

    text: str
    is_final: bool
    duration: float | None = None  # seconds of audio behind this result
    request_id: str = ""


@dataclass(frozen=True)
class FlushDone:
    """STT: `finalize` was processed (its final, if any, came before). TTS: a flush of a context ended."""

    context_id: str = ""


@dataclass(frozen=True)
class Done:
    """STT: the `close` command was processed. TTS: a context finished (no more audio for it)."""

    context_id: str = ""


@dataclass(frozen=True)
class Chunk:
    """TTS: audio of a context (already decoded from base64)."""

    context_id: str
    audio: bytes


@dataclass(frozen=True)
class Timestamps:
    """TTS: word timings (not used; parsed so they are not counted as unknown)."""

    context_id: str


@dataclass(frozen=True)
class ErrorMessage:
    """An `error` message (the status says whether to retry); `context_id` empty when socket-wide."""

    message: str
    status_code: int | None = None
    error_code: str = ""
    context_id: str = ""


@dataclass(frozen=True)
class Unknown:
    """A message type this client does not use."""

    type: str


ServerMessage = Transcript | FlushDone | Done | Chunk | Timestamps | ErrorMessage | Unknown


def _str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key, "")
    return value if isinstance(value, str) else ""


def parse(data: str | bytes) -> ServerMessage:
    """One server text frame as a typed message; CartesiaProtocolError for anything malformed."""
    try:
        obj = loads(data)
    except JSONError as exc:
        raise CartesiaProtocolError(str(exc)) from None
    if not isinstance(obj, dict):
        raise CartesiaProtocolError(f"message is not a JSON object: {type(obj).__name__}")
    kind = obj.get("type")
    if kind == "transcript":
        text = obj.get("text")
        if not isinstance(text, str) or not isinstance(obj.get("is_final"), bool):
            raise CartesiaProtocolError("transcript message without text or is_final")
        duration = obj.get("duration")
        seconds = (
            float(duration) if isinstance(duration, int | float) and not isinstance(duration, bool) else None
        )
        return Transcript(text, obj["is_final"], seconds, _str(obj, "request_id"))
    if kind == "chunk":
        context_id, data64 = obj.get("context_id"), obj.get("data")
        if not isinstance(context_id, str) or not isinstance(data64, str):
            raise CartesiaProtocolError("chunk message without context_id or data")
        try:
            audio = base64.b64decode(data64, validate=True)
        except (binascii.Error, ValueError):
            raise CartesiaProtocolError("chunk data is not base64") from None
        return Chunk(context_id, audio)
    if kind == "flush_done":
        return FlushDone(_str(obj, "context_id"))
    if kind == "done":
        return Done(_str(obj, "context_id"))
    if kind in ("timestamps", "phoneme_timestamps"):
        return Timestamps(_str(obj, "context_id"))
    if kind == "error":
        status = obj.get("status_code")
        code = obj.get("error_code") or obj.get("code") or ""
        message = obj.get("message") or obj.get("title") or obj.get("error") or "error"
        return ErrorMessage(
            str(message),
            status if isinstance(status, int) and not isinstance(status, bool) else None,
            str(code),
            _str(obj, "context_id"),
        )
    if not isinstance(kind, str):
        raise CartesiaProtocolError("message without a type")
    return Unknown(kind)


def error_detail(body: bytes, status: int) -> str:
    """The message of an HTTP error answer (JSON `message`/`error`/`title`, else the text), for logs."""
    try:
        obj = loads(body)
    except JSONError:
        return body.decode("utf-8", "replace").strip()[:200] or f"HTTP {status}"
    if isinstance(obj, dict):
        for key in ("message", "error", "title"):
            if isinstance(obj.get(key), str):
                return str(obj[key])[:200]
    return f"HTTP {status}"
