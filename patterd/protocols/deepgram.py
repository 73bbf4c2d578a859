"""Deepgram live speech-to-text (`/v1/listen` websocket): URL, headers, control messages and server messages.

Followed: developers.deepgram.com "Live Audio" API reference (query parameters, `Results`,
`UtteranceEnd`, `SpeechStarted`, `Metadata`), "Endpointing", "Utterance End" (`utterance_end_ms`
needs `interim_results=true`; values below 1000 ms are not useful because results arrive about once a
second), "Audio Keep Alive" (`{"type":"KeepAlive"}` as a text frame every 3-5 s; 10 s without audio or
a message closes with 1011 / NET-0001), "Finalize" (the answer carries `from_finalize: true`),
"Close Stream", "Keyterm prompting" (Nova-3 only; older models take `keywords`), and the STT
troubleshooting guide (handshake refusals are HTTP 4xx with a `dg-error` header). Cross-checked with
the official deepgram-sdk 7.17 (`listen/v1/raw_client.py`: `Authorization: Token <key>`; `Bearer` is
for temporary tokens only).

No I/O here: the provider (`patterd.providers.deepgram`) and the fake server (`tests/fakes/deepgram.py`)
both use these types.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from patterd.protocols.jsontext import JSONError, loads

DEFAULT_BASE_URL = "wss://api.deepgram.com"
LISTEN_PATH = "/v1/listen"
PROJECTS_PATH = "/v1/projects"  # cheap authenticated GET for probes

KEEPALIVE = json.dumps({"type": "KeepAlive"})
FINALIZE = json.dumps({"type": "Finalize"})
CLOSE_STREAM = json.dumps({"type": "CloseStream"})

# Close codes the service uses after the handshake (RFC 6455 numbers; the reason carries Deepgram's code).
CLOSE_NORMAL = 1000
CLOSE_DATA_ERROR = 1008  # DATA-0000: the audio could not be decoded
CLOSE_NET_ERROR = 1011  # NET-0000/NET-0001: timeout (no audio nor KeepAlive for 10 s) or internal trouble


class DeepgramProtocolError(ValueError):
    """A server message that does not follow the protocol (bad JSON, missing fields)."""


@dataclass(frozen=True)
class ListenParams:
    """The query parameters of one live transcription request."""

    model: str = "nova-3"
    language: str | None = "en"
    encoding: str = "mulaw"
    sample_rate: int = 8000
    channels: int = 1
    interim_results: bool = True
    endpointing_ms: int | None = 300  # None: endpointing=false
    utterance_end_ms: int | None = 1000
    smart_format: bool = True
    punctuate: bool | None = None
    keyterms: Sequence[str] = ()  # Nova-3: one `keyterm` parameter each
    keywords: Sequence[str] = ()  # older models: `keywords=word` or `word:boost`, one each
    vad_events: bool = False

    def query(self) -> list[tuple[str, str]]:
        """The parameters in Deepgram's spelling (booleans as `true`/`false`; lists as repeated keys)."""
        out: list[tuple[str, str]] = [
            ("model", self.model),
            ("encoding", self.encoding),
            ("sample_rate", str(self.sample_rate)),
            ("channels", str(self.channels)),
            ("interim_results", _bool(self.interim_results)),
            ("endpointing", "false" if self.endpointing_ms is None else str(self.endpointing_ms)),
            ("smart_format", _bool(self.smart_format)),
        ]
        if self.language:
            out.append(("language", self.language))
        if self.utterance_end_ms is not None:
            out.append(("utterance_end_ms", str(self.utterance_end_ms)))
        if self.punctuate is not None:
            out.append(("punctuate", _bool(self.punctuate)))
        if self.vad_events:
            out.append(("vad_events", "true"))
        out += [("keyterm", term) for term in self.keyterms]
        out += [("keywords", word) for word in self.keywords]
        return out


def _bool(value: bool) -> str:
    return "true" if value else "false"


def listen_url(base_url: str, params: ListenParams) -> str:
    """`{base_url}/v1/listen?...`; an http(s) base becomes ws(s) (self-hosted servers are often given so)."""
    parts = urlsplit(base_url.rstrip("/"))
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/") + LISTEN_PATH
    return urlunsplit((scheme, parts.netloc, path, urlencode(params.query()), ""))


def http_url(base_url: str, path: str) -> str:
    """The REST URL of `path` on the same host as the websocket base (wss → https, ws → http)."""
    parts = urlsplit(base_url.rstrip("/"))
    scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + path, "", ""))


def auth_headers(api_key: str) -> dict[str, str]:
    """API keys go in `Authorization: Token <key>` (`Bearer` is only for temporary tokens: 401 otherwise)."""
    return {"Authorization": f"Token {api_key}"}


# ------------------------------------------------------------------ server → client


@dataclass(frozen=True)
class Results:
    """A transcript of `start`..`start+duration` s of the stream; `is_final` closes the segment."""

    transcript: str
    is_final: bool
    speech_final: bool
    from_finalize: bool
    start: float  # seconds from the stream's start
    duration: float
    confidence: float | None = None

    @property
    def end_ms(self) -> float:
        """Where in the stream's audio this result ends (ms)."""
        return (self.start + self.duration) * 1000.0


@dataclass(frozen=True)
class UtteranceEnd:
    """`utterance_end_ms` of no words followed the last finalized word (ends at `last_word_end` s)."""

    last_word_end: float


@dataclass(frozen=True)
class SpeechStarted:
    """Speech began at `timestamp` s (only with `vad_events=true`)."""

    timestamp: float


@dataclass(frozen=True)
class Metadata:
    """Sent once the stream is over (after CloseStream): the request id and the audio duration processed."""

    request_id: str
    duration: float


@dataclass(frozen=True)
class ErrorMessage:
    """An `Error` message (the connection closes after it)."""

    description: str
    code: str = ""


@dataclass(frozen=True)
class Unknown:
    """A message type this client does not use (new types are ignored, as the SDK does)."""

    type: str


ServerMessage = Results | UtteranceEnd | SpeechStarted | Metadata | ErrorMessage | Unknown


def _number(obj: Mapping[str, Any], key: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DeepgramProtocolError(f"{obj.get('type')} message: {key!r} is not a number: {value!r}")
    return float(value)


def parse(data: str | bytes) -> ServerMessage:
    """One server text frame as a typed message; DeepgramProtocolError for anything malformed."""
    try:
        obj = loads(data)
    except JSONError as exc:
        raise DeepgramProtocolError(str(exc)) from None
    if not isinstance(obj, dict):
        raise DeepgramProtocolError(f"message is not a JSON object: {type(obj).__name__}")
    kind = obj.get("type")
    if kind == "Results":
        channel = obj.get("channel")
        alternatives = channel.get("alternatives") if isinstance(channel, dict) else None
        if not isinstance(alternatives, list):
            raise DeepgramProtocolError("Results message without channel.alternatives")
        best = alternatives[0] if alternatives else {}
        if not isinstance(best, dict):
            raise DeepgramProtocolError("Results alternative is not an object")
        text = best.get("transcript", "")
        if not isinstance(text, str):
            raise DeepgramProtocolError("Results transcript is not a string")
        confidence = best.get("confidence")
        ok = isinstance(confidence, int | float) and not isinstance(confidence, bool)
        return Results(
            transcript=text,
            is_final=obj.get("is_final") is True,
            speech_final=obj.get("speech_final") is True,
            from_finalize=obj.get("from_finalize") is True,
            start=_number(obj, "start"),
            duration=_number(obj, "duration"),
            confidence=float(confidence) if ok else None,  # type: ignore[arg-type]
        )
    if kind == "UtteranceEnd":
        return UtteranceEnd(_number(obj, "last_word_end"))
    if kind == "SpeechStarted":
        return SpeechStarted(_number(obj, "timestamp"))
    if kind == "Metadata":
        request_id = obj.get("request_id")
        duration = obj.get("duration")
        return Metadata(
            request_id if isinstance(request_id, str) else "",
            float(duration) if isinstance(duration, int | float) and not isinstance(duration, bool) else 0.0,
        )
    if kind == "Error":
        description = obj.get("description") or obj.get("message") or "error"
        code = obj.get("code") or obj.get("variant") or ""
        return ErrorMessage(str(description), str(code))
    if not isinstance(kind, str):
        raise DeepgramProtocolError("message without a type")
    return Unknown(kind)


def handshake_error(status: int, headers: Mapping[str, str]) -> str:
    """What a refused handshake says: the `dg-error` header when present, else the status alone."""
    reason = ""
    for key, value in headers.items():
        if key.lower() == "dg-error":
            reason = value
            break
    return f"HTTP {status}: {reason}" if reason else f"HTTP {status}"
