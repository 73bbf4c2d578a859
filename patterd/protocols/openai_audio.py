"""OpenAI audio endpoints, sans-I/O: `/audio/speech` request bodies and `/audio/transcriptions` forms and answers.

Wire facts followed (platform.openai.com API reference "Create speech" and "Create transcription",
the Speech-to-Text guide's "Streaming" section, and openai-python 3.57 `types/audio/*`):

- Speech: `POST /audio/speech`, JSON `{model, input (≤ 4096 chars), voice, response_format,
  speed (0.25-4), instructions}`; `instructions` does not work with `tts-1`/`tts-1-hd`. The body
  of the answer is the audio itself, sent as it is made. `pcm` is raw 24 kHz 16-bit LE mono; no
  8 kHz or μ-law format exists, so the provider transcodes.
- Transcription: `POST /audio/transcriptions`, multipart/form-data with `file` (a named upload:
  wav, mp3, flac, …), `model`, and optional `language`, `prompt`, `temperature`,
  `response_format` (`json` is the only one gpt-4o-*-transcribe accept) and `stream`.
  With `stream=true` gpt-4o-*-transcribe answer `text/event-stream` of
  `{"type": "transcript.text.delta", "delta"}` then `{"type": "transcript.text.done", "text",
  "usage"}`; `whisper-1` ignores `stream` and answers the plain JSON `{"text", "usage"?}`.
- Errors: `{"error": {"message", "type", "param", "code"}}` with the HTTP status; inside a stream
  an `{"error": {...}}` event (openai-python `_streaming.py` raises on it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from patterd.protocols.audio import ULAW_RATE, pcm16_to_wav, ulaw_to_pcm16
from patterd.protocols.jsontext import JSONError, clean_text, loads
from patterd.protocols.sse import SSEDecoder, SSEError

# ---------------------------------------------------------------- speech

TTS_MODELS = ("gpt-4o-mini-tts", "tts-1", "tts-1-hd")
VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "onyx",
    "nova",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)
PCM_RATE = 24000  # response_format "pcm": 24 kHz, 16-bit little-endian, mono, no header
MAX_INPUT_CHARS = 4096
MIN_SPEED, MAX_SPEED = 0.25, 4.0


# What a `pcm` answer may be labelled: OpenAI's own label, generic binary, or nothing at all.
_RAW_PCM_TYPES = frozenset(
    {"", "audio/pcm", "audio/l16", "audio/raw", "application/octet-stream", "binary/octet-stream"}
)


def is_raw_pcm(content_type: str) -> bool:
    """Whether a speech answer's Content-Type can be the raw PCM asked for (not mp3/wav/opus/JSON...)."""
    return content_type.split(";", 1)[0].strip().lower() in _RAW_PCM_TYPES


def supports_instructions(model: str) -> bool:
    """Whether `instructions` (voice direction) works with this speech model (not tts-1 / tts-1-hd)."""
    return not model.startswith("tts-1")


def speech_request(
    model: str, text: str, voice: str, *, speed: float | None = None, instructions: str | None = None
) -> dict[str, Any]:
    """The JSON body of `POST /audio/speech` asking for raw 24 kHz PCM."""
    if not text.strip():
        raise ValueError("speech input is empty")
    if len(text) > MAX_INPUT_CHARS:
        raise ValueError(f"speech input is {len(text)} characters; the API takes at most {MAX_INPUT_CHARS}")
    body: dict[str, Any] = {"model": model, "input": text, "voice": voice, "response_format": "pcm"}
    if speed is not None and speed != 1.0:
        body["speed"] = speed
    if instructions and supports_instructions(model):
        body["instructions"] = instructions
    return body


_BREAKS = (re.compile(r"[.!?;:]\s"), re.compile(r",\s"), re.compile(r"\s"))


def split_input(text: str, limit: int = MAX_INPUT_CHARS) -> list[str]:
    """`text` in pieces of at most `limit` characters, cut after a sentence, else a comma, else a space."""
    pieces: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        window = rest[:limit]
        cut = 0
        for pattern in _BREAKS:
            found = [m.end() for m in pattern.finditer(window)]
            if found:
                cut = found[-1]
                break
        if cut == 0:
            cut = limit  # one unbroken word of 4096 characters: cut it anywhere
        pieces.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        pieces.append(rest)
    return [p for p in pieces if p]


# ---------------------------------------------------------------- transcription

STT_MODELS = ("gpt-4o-mini-transcribe", "gpt-4o-transcribe", "whisper-1")
MIN_AUDIO_MS = 100  # the API refuses shorter files ("Minimum audio length is 0.1 seconds")
UPLOAD_NAME = "utterance.wav"
UPLOAD_TYPE = "audio/wav"


def streams_transcripts(model: str) -> bool:
    """Whether `stream=true` gives text deltas with this model (whisper-1 ignores it)."""
    return not model.startswith("whisper")


def utterance_wav(ulaw: bytes) -> bytes:
    """An utterance of 8 kHz μ-law as the WAV file to upload: 8 kHz 16-bit PCM, mono.

    PCM rather than a μ-law WAV (format 7): every decoder takes it, and it is the same samples.
    """
    return pcm16_to_wav(ulaw_to_pcm16(ulaw), ULAW_RATE)


def transcription_fields(
    model: str,
    *,
    language: str | None = None,
    prompt: str | None = None,
    temperature: float | None = None,
    stream: bool = True,
) -> list[tuple[str, str]]:
    """The form fields of `POST /audio/transcriptions` besides `file`, in order."""
    fields = [("model", model), ("response_format", "json")]
    if language:
        fields.append(("language", language))
    if prompt:
        fields.append(("prompt", prompt))
    if temperature is not None:
        fields.append(("temperature", f"{temperature:g}"))
    if stream and streams_transcripts(model):
        fields.append(("stream", "true"))
    return fields


@dataclass(frozen=True)
class TextDelta:
    """`transcript.text.delta`: more of the transcript."""

    delta: str


@dataclass(frozen=True)
class TextDone:
    """The whole transcript (`transcript.text.done`, or a plain JSON answer), with token usage if given."""

    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float | None = None  # whisper-1 bills by duration: usage {type: "duration", seconds}


@dataclass(frozen=True)
class StreamError:
    """The server reported an error inside the stream."""

    message: str
    type: str = ""
    code: str = ""


@dataclass(frozen=True)
class Malformed:
    """An event that is not what the API sends (kept so the provider can log and count it)."""

    why: str


TranscriptionEvent = TextDelta | TextDone | StreamError | Malformed


class AudioProtocolError(ValueError):
    """A whole answer is unreadable (not JSON, not SSE)."""


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def done_event(data: dict[str, Any]) -> TextDone | Malformed:
    """A `transcript.text.done` event or a non-streamed transcription object."""
    text = data.get("text")
    if not isinstance(text, str):
        return Malformed(f"transcription without text: {str(data)[:200]}")
    usage = data.get("usage")
    seconds: float | None = None
    tokens_in = tokens_out = 0
    if isinstance(usage, dict):
        if usage.get("type") == "duration" and isinstance(usage.get("seconds"), int | float):
            seconds = float(usage["seconds"])
        tokens_in, tokens_out = _int(usage.get("input_tokens")), _int(usage.get("output_tokens"))
    return TextDone(clean_text(text), tokens_in, tokens_out, seconds)


def stream_error(error: Any) -> StreamError:
    """An `{"error": ...}` payload as a StreamError."""
    if isinstance(error, dict):
        return StreamError(
            clean_text(str(error.get("message") or error)),
            str(error.get("type") or ""),
            str(error.get("code") or ""),
        )
    return StreamError(clean_text(str(error)))


def transcription_event(payload: str) -> TranscriptionEvent | None:
    """One SSE payload of a streamed transcription (None: an event we do not use, or `[DONE]`)."""
    if payload.strip() == "[DONE]":
        return None
    try:
        data = loads(payload)
    except JSONError as exc:
        return Malformed(f"event is not JSON ({exc}): {payload[:120]!r}")
    if not isinstance(data, dict):
        return Malformed(f"event is not an object: {payload[:120]!r}")
    if data.get("error"):
        return stream_error(data["error"])
    kind = data.get("type")
    if kind == "transcript.text.delta":
        delta = data.get("delta")
        return (
            TextDelta(delta) if isinstance(delta, str) else Malformed(f"delta is not text: {payload[:120]!r}")
        )
    if kind == "transcript.text.done":
        return done_event(data)
    if isinstance(kind, str):
        return None  # transcript.text.segment (diarize models) and later additions
    return Malformed(f"event without a type: {payload[:120]!r}")


class TranscriptionDecoder:
    """Incremental decoder of a streamed transcription: feed body bytes, get events."""

    def __init__(self) -> None:
        self._sse = SSEDecoder()

    def feed(self, chunk: bytes) -> list[TranscriptionEvent]:
        """Events completed by `chunk`."""
        try:
            return self._events(self._sse.feed(chunk))
        except SSEError as exc:
            raise AudioProtocolError(str(exc)) from exc

    def close(self) -> list[TranscriptionEvent]:
        """The body ended: what is left."""
        try:
            return self._events(self._sse.close())
        except SSEError as exc:
            raise AudioProtocolError(str(exc)) from exc

    @staticmethod
    def _events(raw: list[Any]) -> list[TranscriptionEvent]:
        out: list[TranscriptionEvent] = []
        for sse in raw:
            event = transcription_event(sse.data)
            if event is not None:
                out.append(event)
        return out


def transcription_json(body: bytes) -> TextDone:
    """A non-streamed answer (`response_format=json`): the transcript and its usage."""
    try:
        data = loads(body)
    except JSONError as exc:
        raise AudioProtocolError(f"transcription answer is not JSON: {body[:200]!r}") from exc
    if not isinstance(data, dict):
        raise AudioProtocolError(f"transcription answer is not an object: {body[:200]!r}")
    if data.get("error"):
        error = stream_error(data["error"])
        raise AudioProtocolError(f"transcription answer is an error: {error.message}")
    event = done_event(data)
    if isinstance(event, Malformed):
        raise AudioProtocolError(event.why)
    return event


def error_message(body: bytes, status: int) -> str:
    """The human message of an error answer (`{"error": {"message": ...}}`), else the start of its text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = loads(text)
    except JSONError:
        return f"HTTP {status}: {clean_text(text[:300]) or 'no body'}"
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict) and isinstance(err.get("message"), str) and err["message"]:
        return f"HTTP {status}: {err['message'][:500]}"
    if isinstance(err, str) and err:
        return f"HTTP {status}: {err[:500]}"
    return f"HTTP {status}: {text[:300]}"
