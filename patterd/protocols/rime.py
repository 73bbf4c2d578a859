"""Rime streaming TTS over the JSON websocket (`wss://users-ws.rime.ai/ws3`): URL, headers, messages, events.

Followed: docs.rime.ai/docs/websockets (use `/ws3`: JSON, every model; `/ws2` and `/ws` are
legacy), …/api-reference/websockets-json and …/arcana/websockets-json (Bearer key in the upgrade's
`Authorization` header; synthesis settings as query parameters `speaker`, `modelId`, `audioFormat`
pcm|mulaw|mp3, `samplingRate`, `lang`; client messages `{"text", "contextId"?}` and
`{"operation": "flush"|"clear"|"eos"}`; text is buffered up to `.`, `?` or `!` unless flushed;
one context at a time, events carry the context id that was current when their audio was
requested; events `chunk` {data: base64 audio, contextId}, `timestamps` {word_timestamps{words,
start, end}, contextId}, `done` {contextId}, `error` {message}). Rime has no official Python SDK;
the docs' own example client (websockets + json + base64) is what the fake was checked against.

No I/O here: the provider (`patterd.providers.rime`) and the fake (`tests/fakes/rime.py`) share it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from patterd.protocols.jsontext import JSONError, loads

DEFAULT_BASE_URL = "wss://users-ws.rime.ai"
WS_PATH = "/ws3"
TERMINAL_PUNCTUATION = ".?!"  # Rime holds text back until one of these (or a flush)

FLUSH = json.dumps({"operation": "flush"})
CLEAR = json.dumps({"operation": "clear"})  # barge-in: drop what is buffered and being spoken
EOS = json.dumps({"operation": "eos"})  # flush, then the server closes the connection


class RimeProtocolError(ValueError):
    """A server message that does not follow the protocol (bad JSON, bad base64, missing fields)."""


@dataclass(frozen=True)
class SynthesisParams:
    """The query parameters of one connection (they hold for every text sent on it)."""

    speaker: str
    model_id: str
    audio_format: str = "mulaw"
    sampling_rate: int = 8000
    lang: str | None = None

    def query(self) -> list[tuple[str, str]]:
        """The parameters in Rime's spelling."""
        out = [
            ("speaker", self.speaker),
            ("modelId", self.model_id),
            ("audioFormat", self.audio_format),
            ("samplingRate", str(self.sampling_rate)),
        ]
        if self.lang:
            out.append(("lang", self.lang))
        return out


def ws_url(base_url: str, params: SynthesisParams) -> str:
    """`{base_url}/ws3?...`; an http(s) base becomes ws(s)."""
    parts = urlsplit(base_url.rstrip("/"))
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + WS_PATH, urlencode(params.query()), ""))


def auth_headers(api_key: str) -> dict[str, str]:
    """`Authorization: Bearer <key>` on the websocket upgrade."""
    return {"Authorization": f"Bearer {api_key}"}


def text_message(text: str, context_id: str | None = None) -> str:
    """Text to speak, tagged with the context its audio events will carry."""
    message: dict[str, str] = {"text": text}
    if context_id is not None:
        message["contextId"] = context_id
    return json.dumps(message)


# ------------------------------------------------------------------ server → client


@dataclass(frozen=True)
class Chunk:
    """Audio in the connection's format, for the context current when it was requested."""

    audio: bytes
    context_id: str | None


@dataclass(frozen=True)
class Timestamps:
    """Word timings of audio already sent (what the caller heard, on a barge-in)."""

    words: tuple[str, ...]
    context_id: str | None


@dataclass(frozen=True)
class Done:
    """Everything requested for the context has been sent."""

    context_id: str | None


@dataclass(frozen=True)
class ErrorMessage:
    """An `error` event (a malformed request, a wrong voice, ...)."""

    message: str


@dataclass(frozen=True)
class Unknown:
    """An event type this client does not use."""

    type: str


ServerMessage = Chunk | Timestamps | Done | ErrorMessage | Unknown


def _context(obj: Mapping[str, Any]) -> str | None:
    value = obj.get("contextId")
    if value is not None and not isinstance(value, str):
        raise RimeProtocolError("contextId is not a string")
    return value


def parse(data: str | bytes) -> ServerMessage:
    """One server text frame as a typed event; RimeProtocolError for anything malformed."""
    try:
        obj = loads(data)
    except JSONError as exc:
        raise RimeProtocolError(str(exc)) from None
    if not isinstance(obj, dict):
        raise RimeProtocolError(f"message is not a JSON object: {type(obj).__name__}")
    kind = obj.get("type")
    if kind == "chunk":
        encoded = obj.get("data")
        if not isinstance(encoded, str):
            raise RimeProtocolError("chunk without base64 data")
        try:
            audio = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise RimeProtocolError("chunk data is not base64") from None
        return Chunk(audio, _context(obj))
    if kind == "timestamps":
        stamps = obj.get("word_timestamps")
        words = stamps.get("words") if isinstance(stamps, dict) else None
        if not isinstance(words, list):
            raise RimeProtocolError("timestamps without word_timestamps.words")
        return Timestamps(tuple(str(w) for w in words), _context(obj))
    if kind == "done":
        return Done(_context(obj))
    if kind == "error":
        return ErrorMessage(str(obj.get("message") or "error")[:500])
    if not isinstance(kind, str):
        raise RimeProtocolError("message without a type")
    return Unknown(kind)


def error_text(status: int, body: str) -> str:
    """What a refused handshake says: a JSON `message`/`error`/`detail` when present, else the status."""
    try:
        obj = loads(body)
    except JSONError:
        obj = None
    reason: object = None
    if isinstance(obj, dict):
        reason = obj.get("message") or obj.get("error") or obj.get("detail")
    return f"HTTP {status}: {str(reason)[:200]}" if reason else f"HTTP {status}"
