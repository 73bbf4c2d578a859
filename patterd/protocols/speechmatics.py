"""Speechmatics real-time v2 (`wss://{eu|us}.rt.speechmatics.com/v2`): URL, headers, client and server messages.

Followed: the Speechmatics Realtime API reference (docs.speechmatics.com/api-ref/realtime-transcription-websocket
and spec/realtime.yaml in github speechmatics/docs): `Authorization: Bearer <key>` on the upgrade
(a bad key is an HTTP 401 there); `StartRecognition` exactly once, then wait for
`RecognitionStarted` before any audio; audio as binary frames (`AddAudio`, each acknowledged by
`AudioAdded {seq_no}`); `ForceEndOfUtterance`; `EndOfStream {last_seq_no}` answered by
`EndOfTranscript`; `AddPartialTranscript`/`AddTranscript {metadata{transcript, start_time,
end_time}, results}`; `EndOfUtterance` (needs `conversation_config.end_of_utterance_silence_trigger`);
`Warning`/`Error {type, reason}`, after an Error the server closes; retry only after 4005
quota_exceeded, 4013 job_error and 1011 internal_error. Turn detection: docs/speech-to-text/realtime/
turn-detection.mdx; limits: …/limits.mdx. Cross-checked with the official `speechmatics-rt` SDK 1.2
(`_async_client.py`, `_models.py`: `ForceEndOfUtterance` carries a `timestamp`, the seconds of audio
sent; `EndOfStream.last_seq_no` is the count of audio frames sent).

No I/O here: the provider (`patterd.providers.speechmatics`) and the fake server
(`tests/fakes/speechmatics.py`) both use these types.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from patterd.protocols.jsontext import JSONError, loads

Region = Literal["eu", "us"]
REGION_URLS: dict[str, str] = {
    "eu": "wss://eu.rt.speechmatics.com/v2",
    "us": "wss://us.rt.speechmatics.com/v2",
}
# Batch API hosts per region: `GET /v2/jobs?limit=1` is the cheap authenticated probe (real-time has no REST).
REGION_API_URLS: dict[str, str] = {
    "eu": "https://eu1.asr.api.speechmatics.com",
    "us": "https://us1.asr.api.speechmatics.com",
}
JOBS_PATH = "/v2/jobs"

# Close codes after an Error message (RFC 6455 numbers and Speechmatics' own).
CLOSE_NOT_AUTHORISED = 4001
CLOSE_QUOTA_EXCEEDED = 4005
CLOSE_JOB_ERROR = 4013
CLOSE_INTERNAL_ERROR = 1011
CLOSE_POLICY = 1008  # idle (no audio nor ping for too long) and protocol misuse

# Error `type`s and what they mean to a caller: auth (fatal), try again (retryable), or a bad request.
AUTH_ERRORS = frozenset({"not_authorised", "insufficient_funds", "not_allowed"})
RETRYABLE_ERRORS = frozenset(
    {
        "quota_exceeded",
        "job_error",
        "internal_error",
        "idle_timeout",
        "session_timeout",
        "session_transfer",
        "timelimit_exceeded",
        "unknown_error",
    }
)


class SpeechmaticsProtocolError(ValueError):
    """A server message that does not follow the protocol (bad JSON, missing fields)."""


def websocket_url(base_url: str) -> str:
    """The endpoint as given (`…/v2`), an http(s) base turned into ws(s); a bare host gets `/v2`."""
    parts = urlsplit(base_url.rstrip("/"))
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/") or "/v2"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def api_url(base_url: str, api_base: str | None, path: str) -> str:
    """The REST URL of `path`: `api_base` if given, the region's batch host for a Speechmatics
    websocket host, else the websocket's own host (a fake, an on-prem appliance)."""
    if api_base is None:
        parts = urlsplit(base_url.rstrip("/"))
        host = parts.hostname or ""
        if host.endswith(".rt.speechmatics.com"):
            api_base = REGION_API_URLS["us" if host.startswith("us") else "eu"]
        else:
            scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
            api_base = urlunsplit((scheme, parts.netloc, "", "", ""))
    return api_base.rstrip("/") + path


def auth_headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


@dataclass(frozen=True)
class StartRecognition:
    """The session's first message: raw 8 kHz μ-law and how transcripts and turns are produced."""

    language: str = "en"
    operating_point: str | None = "enhanced"
    enable_partials: bool = True
    max_delay: float = 1.0  # seconds, 0.7-4: how long a word may stay non-final
    end_of_utterance_silence_trigger: float | None = 0.5  # seconds of silence for EndOfUtterance, 0-2
    encoding: str = "mulaw"
    sample_rate: int = 8000
    additional_vocab: tuple[str, ...] = ()

    def message(self) -> str:
        config: dict[str, Any] = {
            "language": self.language,
            "enable_partials": self.enable_partials,
            "max_delay": self.max_delay,
        }
        if self.operating_point:
            config["operating_point"] = self.operating_point
        if self.end_of_utterance_silence_trigger is not None:
            config["conversation_config"] = {
                "end_of_utterance_silence_trigger": self.end_of_utterance_silence_trigger
            }
        if self.additional_vocab:
            config["additional_vocab"] = [{"content": word} for word in self.additional_vocab]
        return json.dumps(
            {
                "message": "StartRecognition",
                "audio_format": {"type": "raw", "encoding": self.encoding, "sample_rate": self.sample_rate},
                "transcription_config": config,
            }
        )


def force_end_of_utterance(timestamp: float | None = None) -> str:
    """Finalize now; `timestamp`: seconds of audio sent (the SDK's default marker)."""
    body: dict[str, Any] = {"message": "ForceEndOfUtterance"}
    if timestamp is not None:
        body["timestamp"] = round(timestamp, 3)
    return json.dumps(body)


def end_of_stream(last_seq_no: int) -> str:
    """No more audio: `last_seq_no` is the number of audio frames sent."""
    return json.dumps({"message": "EndOfStream", "last_seq_no": last_seq_no})


# ------------------------------------------------------------------ server → client


@dataclass(frozen=True)
class RecognitionStarted:
    id: str


@dataclass(frozen=True)
class AudioAdded:
    seq_no: int


@dataclass(frozen=True)
class TranscriptMessage:
    """`AddTranscript` (final: sent once) or `AddPartialTranscript` (replaced by the next one)."""

    final: bool
    transcript: str
    start_time: float
    end_time: float
    confidence: float | None = None

    @property
    def end_ms(self) -> float:
        return self.end_time * 1000.0


@dataclass(frozen=True)
class EndOfUtterance:
    """`end_of_utterance_silence_trigger` of silence followed the words (or ForceEndOfUtterance)."""

    end_time: float


@dataclass(frozen=True)
class EndOfTranscript:
    """The answer to EndOfStream: nothing more comes."""


@dataclass(frozen=True)
class ErrorMessage:
    """`Error {type, reason}`: the server closes after it."""

    type: str
    reason: str


@dataclass(frozen=True)
class WarningMessage:
    type: str
    reason: str


@dataclass(frozen=True)
class Unknown:
    """A message this client does not use (Info, AudioEventStarted, translations…)."""

    message: str


ServerMessage = (
    RecognitionStarted
    | AudioAdded
    | TranscriptMessage
    | EndOfUtterance
    | EndOfTranscript
    | ErrorMessage
    | WarningMessage
    | Unknown
)


def _number(obj: Mapping[str, Any], key: str, what: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpeechmaticsProtocolError(f"{what}: {key!r} is not a number: {value!r}")
    return float(value)


def _text(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def _confidence(results: object) -> float | None:
    if not isinstance(results, list):
        return None
    values: list[float] = []
    for result in results:
        alternatives = result.get("alternatives") if isinstance(result, dict) else None
        best = alternatives[0] if isinstance(alternatives, list) and alternatives else None
        value = best.get("confidence") if isinstance(best, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            values.append(float(value))
    return sum(values) / len(values) if values else None


def parse(data: str | bytes) -> ServerMessage:
    """One server frame as a typed message; SpeechmaticsProtocolError for anything malformed."""
    try:
        obj = loads(data)
    except JSONError as exc:
        raise SpeechmaticsProtocolError(str(exc)) from None
    if not isinstance(obj, dict):
        raise SpeechmaticsProtocolError(f"message is not a JSON object: {type(obj).__name__}")
    kind = obj.get("message")
    if not isinstance(kind, str):
        raise SpeechmaticsProtocolError("message without a `message` name")
    if kind in ("AddTranscript", "AddPartialTranscript"):
        metadata = obj.get("metadata")
        if not isinstance(metadata, dict) or not isinstance(metadata.get("transcript"), str):
            raise SpeechmaticsProtocolError(f"{kind} without metadata.transcript")
        return TranscriptMessage(
            final=kind == "AddTranscript",
            transcript=metadata["transcript"],
            start_time=_number(metadata, "start_time", kind),
            end_time=_number(metadata, "end_time", kind),
            confidence=_confidence(obj.get("results")),
        )
    if kind == "EndOfUtterance":
        metadata = obj.get("metadata")
        if not isinstance(metadata, dict):
            raise SpeechmaticsProtocolError("EndOfUtterance without metadata")
        return EndOfUtterance(_number(metadata, "end_time", kind))
    if kind == "AudioAdded":
        seq = obj.get("seq_no")
        if isinstance(seq, bool) or not isinstance(seq, int):
            raise SpeechmaticsProtocolError("AudioAdded without an integer seq_no")
        return AudioAdded(seq)
    if kind == "RecognitionStarted":
        return RecognitionStarted(_text(obj, "id"))
    if kind == "EndOfTranscript":
        return EndOfTranscript()
    if kind == "Error":
        return ErrorMessage(_text(obj, "type") or "unknown_error", _text(obj, "reason"))
    if kind == "Warning":
        return WarningMessage(_text(obj, "type"), _text(obj, "reason"))
    return Unknown(kind)
