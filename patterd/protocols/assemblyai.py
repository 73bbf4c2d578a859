"""AssemblyAI Universal Streaming v3 (`/v3/ws` websocket): URL, headers, control messages, server messages.

Followed: assemblyai.com/docs/api-reference/streaming-api/universal-streaming (query parameters:
`speech_model` is required, `sample_rate`, `encoding` pcm_s16le|pcm_mulaw, `format_turns`,
`keyterms_prompt`, turn-silence parameters, `inactivity_timeout`), …/streaming/message-sequence
(`Begin`, `Turn` partials with `end_of_turn: false`, `Turn` with `end_of_turn: true`, with
`format_turns` a second `turn_is_formatted: true` copy of the ended turn; `Terminate` → in-flight
Turns, `Termination`, close 1000) and …/common-session-errors-and-closures (close codes 3005-3009,
1008 for a refused key; audio chunks must hold 50-1000 ms). Cross-checked with the official
`assemblyai` SDK 1.8.2 (`streaming/v3/_base.py`: `Authorization: <key>` with no scheme, list
parameters JSON-encoded in the query; `models.py`: message fields and `RealTimeErrorCodes`).

No I/O here: the provider (`patterd.providers.assemblyai`) and the fake (`tests/fakes/assemblyai.py`) share it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

from patterd.protocols.jsontext import JSONError, loads

DEFAULT_BASE_URL = "wss://streaming.assemblyai.com"
WS_PATH = "/v3/ws"
TOKEN_PATH = "/v3/token"  # GET ?expires_in_seconds=N: a temporary token; authenticated, not billed

FORCE_ENDPOINT = json.dumps({"type": "ForceEndpoint"})
TERMINATE = json.dumps({"type": "Terminate"})
KEEPALIVE = json.dumps({"type": "KeepAlive"})

MIN_CHUNK_MS = 50  # shorter or longer binary frames close the session with 3007
MAX_CHUNK_MS = 1000
ULAW_SILENCE = b"\xff"  # μ-law of 0: pads a short last chunk up to MIN_CHUNK_MS

# Close codes after the handshake (SDK `RealTimeErrorCodes`, the docs' closures page).
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008  # the key was refused
CLOSE_SERVER_ERROR = 3005
CLOSE_INPUT_VALIDATION = 3006  # a message the server could not read
CLOSE_CHUNK_DURATION = 3007  # an audio chunk outside 50-1000 ms, or audio faster than real time
CLOSE_SESSION_EXPIRED = 3008  # the 3 h session limit
CLOSE_TOO_MANY_SESSIONS = 3009  # the account's concurrency limit
CLOSE_REASONS = {
    CLOSE_POLICY: "Not Authorized",
    CLOSE_SERVER_ERROR: "Server error",
    CLOSE_INPUT_VALIDATION: "Input validation error",
    CLOSE_CHUNK_DURATION: "Audio chunk duration violation",
    CLOSE_SESSION_EXPIRED: "Session expired: maximum session duration exceeded",
    CLOSE_TOO_MANY_SESSIONS: "Too many concurrent sessions",
}

CloseKind = Literal["auth", "rate_limit", "retry", "protocol"]


def close_kind(code: int | None) -> CloseKind | None:
    """What a close code means for the caller: None for a normal close."""
    if code == CLOSE_NORMAL:
        return None
    if code == CLOSE_POLICY:
        return "auth"
    if code == CLOSE_TOO_MANY_SESSIONS:
        return "rate_limit"
    if code in (CLOSE_INPUT_VALIDATION, CLOSE_CHUNK_DURATION):
        return "protocol"  # our own messages are wrong: a new session would be refused the same way
    return "retry"  # 3005, 3008, a dropped connection


class AssemblyAIProtocolError(ValueError):
    """A server message that does not follow the protocol (bad JSON, missing or mistyped fields)."""


@dataclass(frozen=True)
class StreamParams:
    """The query parameters of one streaming session."""

    speech_model: str = "universal-streaming-english"
    sample_rate: int = 8000
    encoding: str = "pcm_mulaw"
    format_turns: bool = True
    keyterms: Sequence[str] = ()
    end_of_turn_confidence_threshold: float | None = None
    min_turn_silence_ms: int | None = None
    max_turn_silence_ms: int | None = None
    inactivity_timeout_secs: int | None = None

    def query(self) -> list[tuple[str, str]]:
        """The parameters in AssemblyAI's spelling (booleans `true`/`false`, lists as JSON as the SDK sends)."""
        out: list[tuple[str, str]] = [
            ("speech_model", self.speech_model),
            ("sample_rate", str(self.sample_rate)),
            ("encoding", self.encoding),
            ("format_turns", "true" if self.format_turns else "false"),
        ]
        if self.keyterms:
            out.append(("keyterms_prompt", json.dumps(list(self.keyterms))))
        if self.end_of_turn_confidence_threshold is not None:
            out.append(("end_of_turn_confidence_threshold", str(self.end_of_turn_confidence_threshold)))
        if self.min_turn_silence_ms is not None:
            out.append(("min_turn_silence", str(self.min_turn_silence_ms)))
        if self.max_turn_silence_ms is not None:
            out.append(("max_turn_silence", str(self.max_turn_silence_ms)))
        if self.inactivity_timeout_secs is not None:
            out.append(("inactivity_timeout", str(self.inactivity_timeout_secs)))
        return out


def stream_url(base_url: str, params: StreamParams) -> str:
    """`{base_url}/v3/ws?...`; an http(s) base becomes ws(s)."""
    parts = urlsplit(base_url.rstrip("/"))
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + WS_PATH, urlencode(params.query()), ""))


def token_url(base_url: str, expires_in_seconds: int = 60) -> str:
    """The temporary-token URL on the streaming host (wss → https): the cheap authenticated probe."""
    parts = urlsplit(base_url.rstrip("/"))
    scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
    query = urlencode({"expires_in_seconds": str(expires_in_seconds)})
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + TOKEN_PATH, query, ""))


def auth_headers(api_key: str) -> dict[str, str]:
    """The key itself in `Authorization`, with no `Bearer` (AssemblyAI's scheme for API keys)."""
    return {"Authorization": api_key}


def chunk_bytes(ms: int, sample_rate: int = 8000) -> int:
    """μ-law bytes in `ms` of audio (one byte per sample)."""
    return sample_rate * ms // 1000


class Chunker:
    """Coalesces the carrier's 20 ms frames into chunks of `chunk_ms` (AssemblyAI takes 50-1000 ms only)."""

    def __init__(self, chunk_ms: int = 100, sample_rate: int = 8000) -> None:
        if not MIN_CHUNK_MS <= chunk_ms <= MAX_CHUNK_MS:
            raise ValueError(f"chunk_ms {chunk_ms} is outside {MIN_CHUNK_MS}-{MAX_CHUNK_MS}")
        self.size = chunk_bytes(chunk_ms, sample_rate)
        self.min_size = chunk_bytes(MIN_CHUNK_MS, sample_rate)
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held back until a chunk is full."""
        return len(self._buf)

    def push(self, audio: bytes) -> list[bytes]:
        """Full chunks made from what was held plus `audio`."""
        self._buf += audio
        out: list[bytes] = []
        while len(self._buf) >= self.size:
            out.append(bytes(self._buf[: self.size]))
            del self._buf[: self.size]
        return out

    def drain(self) -> bytes:
        """What is held, padded with silence to the 50 ms minimum (b"" when nothing is held).

        Sent before ForceEndpoint and Terminate, so the turn's last words reach the server.
        """
        if not self._buf:
            return b""
        out = bytes(self._buf)
        self._buf.clear()
        return out + ULAW_SILENCE * max(0, self.min_size - len(out))


# ------------------------------------------------------------------ server → client


@dataclass(frozen=True)
class Begin:
    """The session is open: its id and when it expires (Unix seconds)."""

    id: str
    expires_at: float | None = None


@dataclass(frozen=True)
class Word:
    """One word of a Turn; `final` words no longer change."""

    text: str
    final: bool
    start_ms: float | None = None
    end_ms: float | None = None


@dataclass(frozen=True)
class Turn:
    """The turn `turn_order` so far: `transcript` holds its finalized words; `end_of_turn` closes it."""

    turn_order: int
    transcript: str
    end_of_turn: bool
    turn_is_formatted: bool
    words: tuple[Word, ...] = ()
    end_of_turn_confidence: float | None = None

    @property
    def text(self) -> str:
        """Everything heard in the turn: the formatted transcript once ended, else every word so far."""
        if self.end_of_turn or not self.words:
            return self.transcript
        return " ".join(w.text for w in self.words)

    @property
    def confidence(self) -> float | None:
        return self.end_of_turn_confidence


@dataclass(frozen=True)
class SpeechStarted:
    """Voice activity began at `timestamp_ms` of the stream."""

    timestamp_ms: float


@dataclass(frozen=True)
class Termination:
    """The session is over (after Terminate): what AssemblyAI counted."""

    audio_duration_seconds: float
    session_duration_seconds: float


@dataclass(frozen=True)
class ErrorMessage:
    """An `Error` message; the server closes with `error_code` after it."""

    error: str
    error_code: int | None = None


@dataclass(frozen=True)
class Unknown:
    """A message type this client does not use (Warning, Heartbeat, ...): ignored, as the SDK does."""

    type: str


ServerMessage = Begin | Turn | SpeechStarted | Termination | ErrorMessage | Unknown


def _number(value: object) -> float | None:
    """`value` as a float when it is a JSON number (not a bool), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _optional_number(obj: Mapping[str, Any], key: str) -> float | None:
    return _number(obj.get(key))


def _word(raw: object) -> Word:
    if not isinstance(raw, dict) or not isinstance(raw.get("text"), str):
        raise AssemblyAIProtocolError("Turn word is not an object with a text")
    return Word(
        raw["text"],
        raw.get("word_is_final") is True,
        _optional_number(raw, "start"),
        _optional_number(raw, "end"),
    )


def _turn(obj: Mapping[str, Any]) -> Turn:
    order = _number(obj.get("turn_order"))
    transcript = obj.get("transcript")
    if order is None or not isinstance(transcript, str):
        raise AssemblyAIProtocolError("Turn message without a numeric turn_order and a transcript string")
    words = obj.get("words", [])
    if not isinstance(words, list):
        raise AssemblyAIProtocolError("Turn words is not a list")
    end = obj.get("end_of_turn")
    if not isinstance(end, bool):
        raise AssemblyAIProtocolError("Turn end_of_turn is not a boolean")
    return Turn(
        turn_order=int(order),
        transcript=transcript,
        end_of_turn=end,
        turn_is_formatted=obj.get("turn_is_formatted") is True,
        words=tuple(_word(w) for w in words),
        end_of_turn_confidence=_optional_number(obj, "end_of_turn_confidence"),
    )


def parse(data: str | bytes) -> ServerMessage:
    """One server text frame as a typed message; AssemblyAIProtocolError for anything malformed."""
    try:
        obj = loads(data)
    except JSONError as exc:
        raise AssemblyAIProtocolError(str(exc)) from None
    if not isinstance(obj, dict):
        raise AssemblyAIProtocolError(f"message is not a JSON object: {type(obj).__name__}")
    kind = obj.get("type")
    if kind == "Turn":
        return _turn(obj)
    if kind == "Begin":
        session = obj.get("id")
        if not isinstance(session, str):
            raise AssemblyAIProtocolError("Begin message without a session id")
        return Begin(session, _optional_number(obj, "expires_at"))
    if kind == "SpeechStarted":
        return SpeechStarted(_optional_number(obj, "timestamp") or 0.0)
    if kind == "Termination":
        return Termination(
            _optional_number(obj, "audio_duration_seconds") or 0.0,
            _optional_number(obj, "session_duration_seconds") or 0.0,
        )
    if kind == "Error" or (kind is None and "error" in obj):  # the SDK reads a bare {"error"} too
        code = _number(obj.get("error_code"))
        return ErrorMessage(str(obj.get("error") or "error"), int(code) if code is not None else None)
    if not isinstance(kind, str):
        raise AssemblyAIProtocolError("message without a type")
    return Unknown(kind)


def handshake_error(status: int, body: str) -> str:
    """What a refused handshake or probe says: the JSON `error` field when there is one, else the status."""
    try:
        obj = loads(body)
    except JSONError:
        obj = None
    reason = obj.get("error") if isinstance(obj, dict) else None
    return f"HTTP {status}: {str(reason)[:200]}" if reason else f"HTTP {status}"
