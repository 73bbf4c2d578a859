"""A fake OpenAI audio API on 127.0.0.1: `/audio/speech` streams PCM, `/audio/transcriptions` answers SSE or JSON.

Validation follows the API reference ("Create speech", "Create transcription") and what the
official SDK sends: Bearer auth; speech JSON `{model, input ≤ 4096 chars, voice, response_format,
speed 0.25-4, instructions (not with tts-1*), stream_format}`; transcription multipart with a
named `file` upload (a WAV is parsed: it must be readable and at least 0.1 s long), `model`,
`response_format` (gpt-4o-*-transcribe: json only), `stream`, `language`, `prompt`,
`temperature`. Unknown arguments, wrong values and bad keys get OpenAI's status and
`{"error": {...}}` body. Speech audio is 24 kHz 16-bit mono PCM (or the same in a WAV), its length
proportional to the text; transcripts come from a queue the test fills (`say`).
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import wave
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np
from aiohttp import BodyPartReader, web

from tests.fakes.openai_chat import error_body, failure
from tests.fakes.speech_timeline import ControlledServer

TTS_MODELS = {"gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15", "tts-1", "tts-1-hd"}
VOICES = {
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
}
SPEECH_FORMATS = {"mp3", "opus", "aac", "flac", "wav", "pcm"}
SPEECH_KEYS = {"model", "input", "voice", "response_format", "speed", "instructions", "stream_format"}
STT_MODELS = {"gpt-4o-mini-transcribe", "gpt-4o-transcribe", "gpt-4o-mini-transcribe-2025-12-15", "whisper-1"}
STT_FORMATS = {"json", "text", "srt", "verbose_json", "vtt"}
STT_FIELDS = {"file", "model", "language", "prompt", "response_format", "stream", "temperature", "include"}
UPLOAD_EXTENSIONS = {"flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "wav", "webm"}
PCM_RATE = 24000


@dataclass
class Script:
    """What the next transcription returns: the text, and the deltas it streams (default: word by word)."""

    text: str
    deltas: Sequence[str] = ()
    raw_before: bytes = b""  # written verbatim into the event stream before the deltas (malformed events)


@dataclass
class SpeechRequest:
    """One `/audio/speech` request as the fake saw it."""

    body: dict[str, Any]
    headers: dict[str, str]
    bytes_sent: int = 0
    completed: bool = False  # the whole audio was written
    cancelled: bool = False  # the client went away mid-stream
    ended: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class TranscriptionRequest:
    """One `/audio/transcriptions` request: its form fields and the uploaded file."""

    fields: dict[str, str]
    headers: dict[str, str]
    file_name: str = ""
    file_type: str = ""
    file: bytes = b""
    wav_rate: int = 0
    wav_width: int = 0
    wav_channels: int = 0
    wav_seconds: float = 0.0
    text: str = ""
    completed: bool = False
    ended: asyncio.Event = field(default_factory=asyncio.Event)


def speech_pcm(text: str, ms_per_char: float, speed: float) -> bytes:
    """24 kHz PCM as long as `text` would take to say: a voiced tone whose pitch moves per character."""
    per_char = int(PCM_RATE * ms_per_char / 1000 / speed)
    freqs = np.repeat(np.array([140.0 + (ord(ch) % 32) * 6.0 for ch in text]), per_char)
    phase = np.cumsum(2 * np.pi * freqs / PCM_RATE)
    samples = 9000 * np.sin(phase) + 3000 * np.sin(2 * phase)
    return bytes(samples.astype("<i2").tobytes())


def wav_of(pcm: bytes, rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return out.getvalue()


def validate_speech(body: Any) -> str | None:
    """What is wrong with a speech request body (the API's wording where known), or None."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    for key in body:
        if key not in SPEECH_KEYS:
            return f"Unrecognized request argument supplied: {key}"
    for key in ("model", "input", "voice"):
        if key not in body:
            return f"Missing required parameter: '{key}'."
    model, text, voice = body["model"], body["input"], body["voice"]
    if model not in TTS_MODELS:
        return f"Invalid value for 'model': '{model}'."
    if not isinstance(text, str) or not text:
        return "Invalid value for 'input': expected a non-empty string."
    if len(text) > 4096:
        return f"[{{'type': 'string_too_long', 'loc': ('body', 'input'), 'msg': 'String should have at most 4096 characters', 'input_length': {len(text)}}}]"
    if not (voice in VOICES or (isinstance(voice, dict) and isinstance(voice.get("id"), str))):
        return f"Invalid value for 'voice': '{voice}'."
    fmt = body.get("response_format", "mp3")
    if fmt not in SPEECH_FORMATS:
        return f"Invalid value for 'response_format': '{fmt}'."
    speed = body.get("speed", 1.0)
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0:
        return f"Invalid value for 'speed': {speed!r}; expected a number from 0.25 to 4.0."
    if "instructions" in body:
        if not isinstance(body["instructions"], str):
            return "Invalid type for 'instructions': expected a string."
        if str(model).startswith("tts-1"):
            return f"Instructions are not supported for model '{model}'."
    stream_format = body.get("stream_format", "audio")
    if stream_format not in ("audio", "sse"):
        return f"Invalid value for 'stream_format': '{stream_format}'."
    if stream_format == "sse" and str(model).startswith("tts-1"):
        return f"stream_format 'sse' is not supported for model '{model}'."
    return None


class FakeOpenAIAudioServer(ControlledServer):
    """`async with FakeOpenAIAudioServer("sk-test") as fake:` then point clients at `fake.base_url`.

    `pace`: audio is streamed this many times faster than real time (so a cancel can land mid-stream).
    """

    client_max_size = 26 * 1024 * 1024  # transcription uploads of up to 25 MB

    def __init__(
        self,
        api_key: str = "sk-test",
        *,
        ms_per_char: float = 60.0,
        pace: float = 100.0,
        chunk_bytes: int = 4801,  # odd: chunks cut mid-sample, as real responses may be
    ) -> None:
        self.api_key = api_key
        self.ms_per_char = ms_per_char
        self.pace = pace
        self.chunk_bytes = chunk_bytes
        self.scripts: list[Script] = []
        self.speech: list[SpeechRequest] = []
        self.transcriptions: list[TranscriptionRequest] = []
        self.models_requests = 0
        self.delay_secs = 0.0  # before answering a transcription (a slow upstream)
        self.speech_content_type = ""  # label speech answers with this instead (a misbehaving server)
        self.base_url = ""
        ControlledServer.__init__(self)

    # -------------------------------------------------------------- scripting and inspection

    def say(self, text: str, deltas: Sequence[str] = (), raw_before: bytes = b"") -> None:
        """The next transcription request hears `text`."""
        self.scripts.append(Script(text, tuple(deltas), raw_before))

    # fail_next: the next request (any route) gets OpenAI's error body; drop_next: the next speech or
    # transcription answer is cut after its first chunk or event; stall_next: it gets nothing (ControlledServer)

    def active_streams(self) -> int:
        requests: list[Any] = [*self.speech, *self.transcriptions]
        return sum(1 for r in requests if not r.ended.is_set())

    def texts_received(self) -> list[str]:
        return [str(r.body["input"]) for r in self.speech]

    def streams_completed(self) -> int:
        return sum(1 for r in self.speech if r.completed)

    def audio_received(self) -> int:
        return sum(len(r.file) for r in self.transcriptions)

    # -------------------------------------------------------------- server

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/audio/speech", self._speech)
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        return self

    def _auth(self, request: web.Request) -> web.Response | None:
        if self._fail:
            return failure(self._fail.popleft())
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return web.json_response(
                error_body(
                    "You didn't provide an API key. You need to provide your API key in an Authorization header "
                    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                    "invalid_request_error",
                ),
                status=401,
            )
        if header != f"Bearer {self.api_key}":
            return web.json_response(
                error_body("Incorrect API key provided.", "invalid_request_error", code="invalid_api_key"),
                status=401,
            )
        return None

    async def _models(self, request: web.Request) -> web.Response:
        denied = self._auth(request)
        if denied is not None:
            return denied
        self.models_requests += 1
        names = sorted(TTS_MODELS | STT_MODELS)
        data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "system"} for m in names]
        return web.json_response({"object": "list", "data": data})

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        denied = self._auth(request)
        if denied is not None:
            return denied
        try:
            body = json.loads(await request.read())
        except ValueError:
            return web.json_response(
                error_body("We could not parse the JSON body of your request."), status=400
            )
        problem = validate_speech(body)
        if problem is not None:
            return web.json_response(error_body(problem, param=None), status=400)
        if body.get("stream_format") == "sse" or body.get("response_format", "mp3") not in ("pcm", "wav"):
            return web.json_response(
                error_body("fake server: only response_format pcm or wav with stream_format audio"),
                status=400,
            )
        received = SpeechRequest(body, dict(request.headers))
        self.speech.append(received)
        if await self._stalled(request):
            received.cancelled = True
            received.ended.set()
            return web.Response()
        pcm = speech_pcm(body["input"], self.ms_per_char, float(body.get("speed", 1.0)))
        audio = pcm if body.get("response_format") == "pcm" else wav_of(pcm, PCM_RATE)
        drop = self._take_drop()
        content_type = self.speech_content_type or (
            "audio/pcm" if body.get("response_format") == "pcm" else "audio/wav"
        )
        response = web.StreamResponse(headers={"Content-Type": content_type})
        try:
            await response.prepare(request)
            for start in range(0, len(audio), self.chunk_bytes):
                chunk = audio[start : start + self.chunk_bytes]
                await response.write(chunk)
                received.bytes_sent += len(chunk)
                if drop:
                    assert request.transport is not None
                    request.transport.abort()  # a crashed upstream: no end of the chunked body
                    return response
                await asyncio.sleep(len(chunk) / 2 / PCM_RATE / self.pace)
            await response.write_eof()
            received.completed = True
        except ConnectionResetError:
            received.cancelled = True  # the client hung up mid-stream (barge-in): not a server error
        except asyncio.CancelledError:
            received.cancelled = True
            raise
        finally:
            received.ended.set()
        return response

    async def _stalled(self, request: web.Request) -> bool:
        """Stall this request if asked: hold it, silent, until the client hangs up."""
        if not self._stall:
            return False
        self._stall -= 1
        # aiohttp does not cancel a handler whose client left: watch the transport instead.
        while request.transport is not None and not request.transport.is_closing():
            await asyncio.sleep(0.02)
        return True

    async def _transcriptions(self, request: web.Request) -> web.StreamResponse:
        denied = self._auth(request)
        if denied is not None:
            return denied
        if not request.content_type.startswith("multipart/form-data"):
            return web.json_response(
                error_body("Invalid Content-Type header (expected multipart/form-data)"), status=400
            )
        received = TranscriptionRequest({}, dict(request.headers))
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                return web.json_response(error_body("Nested multipart bodies are not supported."), status=400)
            name = part.name or ""
            if name not in STT_FIELDS and not name.startswith("include"):
                return web.json_response(
                    error_body(f"Unrecognized request argument supplied: {name}"), status=400
                )
            data = await part.read()
            if name == "file":
                received.file_name = part.filename or ""
                received.file_type = str(part.headers.get("Content-Type", ""))
                received.file = bytes(data)
            else:
                received.fields[name] = bytes(data).decode()
        problem = self._validate_transcription(received)
        if problem is not None:
            return web.json_response(error_body(problem[1]), status=problem[0])
        self.transcriptions.append(received)
        try:
            if await self._stalled(request):
                return web.Response()
            return await self._answer_transcription(request, received)
        finally:
            received.ended.set()

    def _validate_transcription(self, r: TranscriptionRequest) -> tuple[int, str] | None:
        model = r.fields.get("model")
        if not r.file:
            return 400, "Missing required parameter: 'file'."
        if model is None:
            return 400, "Missing required parameter: 'model'."
        if model not in STT_MODELS:
            return 400, f"Invalid value for 'model': '{model}'."
        extension = r.file_name.rpartition(".")[2].lower()
        if extension not in UPLOAD_EXTENSIONS:
            return 400, (f"Invalid file format. Supported formats: {sorted(UPLOAD_EXTENSIONS)}")
        fmt = r.fields.get("response_format", "json")
        if fmt not in STT_FORMATS:
            return 400, f"Invalid value for 'response_format': '{fmt}'."
        if model != "whisper-1" and fmt != "json":
            return 400, f"response_format '{fmt}' is not compatible with model '{model}'. Use 'json'."
        if r.fields.get("stream", "false") not in ("true", "false"):
            return 400, f"Invalid value for 'stream': '{r.fields['stream']}'."
        if "temperature" in r.fields:
            try:
                temperature = float(r.fields["temperature"])
            except ValueError:
                return 400, f"Invalid value for 'temperature': '{r.fields['temperature']}'."
            if not 0 <= temperature <= 1:
                return 400, "temperature must be between 0 and 1."
        if extension == "wav":
            try:
                with wave.open(io.BytesIO(r.file)) as wav:
                    r.wav_rate, r.wav_width, r.wav_channels = (
                        wav.getframerate(),
                        wav.getsampwidth(),
                        wav.getnchannels(),
                    )
                    frames = wav.getnframes()
                    if len(wav.readframes(frames)) != frames * r.wav_width * r.wav_channels:
                        return 400, "Audio file might be corrupted or unsupported"
            except (wave.Error, EOFError):
                return 400, "Audio file might be corrupted or unsupported"
            r.wav_seconds = frames / r.wav_rate if r.wav_rate else 0.0
            if r.wav_seconds < 0.1:
                return 400, "Audio file is too short. Minimum audio length is 0.1 seconds."
        return None

    async def _answer_transcription(
        self, request: web.Request, r: TranscriptionRequest
    ) -> web.StreamResponse:
        script = self.scripts.pop(0) if self.scripts else Script("")
        r.text = script.text
        model = r.fields["model"]
        seconds = round(r.wav_seconds or 1.0, 3)
        audio_tokens = max(1, int(seconds * 10))
        usage: dict[str, Any] = {
            "type": "tokens",
            "input_tokens": audio_tokens,
            "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
            "output_tokens": max(1, len(script.text) // 4),
            "total_tokens": audio_tokens + max(1, len(script.text) // 4),
        }
        if model == "whisper-1":
            usage = {"type": "duration", "seconds": math.ceil(seconds)}
        drop = self._take_drop()
        if drop:
            self.scripts.insert(0, script)  # never delivered: the retry hears the same utterance
        if self.delay_secs:
            # A slow upstream that still notices a client hanging up (aiohttp does not cancel the handler).
            deadline = asyncio.get_running_loop().time() + self.delay_secs
            while asyncio.get_running_loop().time() < deadline:
                if request.transport is None or request.transport.is_closing():
                    return web.Response()
                await asyncio.sleep(0.02)
        if r.fields.get("stream") != "true" or model == "whisper-1":  # whisper-1 ignores stream
            if drop:
                assert request.transport is not None
                request.transport.abort()
                return web.Response()
            r.completed = True
            return web.json_response({"text": script.text, "usage": usage})
        deltas = list(script.deltas) or [
            w if i == 0 else " " + w for i, w in enumerate(script.text.split(" "))
        ]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        try:
            await self._stream_transcript(request, response, script, deltas, usage, drop)
        except ConnectionResetError:
            return response  # the client went away (its call ended): nothing more to send
        r.completed = not drop
        return response

    async def _stream_transcript(
        self,
        request: web.Request,
        response: web.StreamResponse,
        script: Script,
        deltas: list[str],
        usage: dict[str, Any],
        drop: bool,
    ) -> None:
        await response.prepare(request)
        if script.raw_before:
            await response.write(script.raw_before)
        for delta in deltas:
            event = {"type": "transcript.text.delta", "delta": delta, "logprobs": None}
            await response.write(f"data: {json.dumps(event)}\n\n".encode())
            if drop:
                assert request.transport is not None
                request.transport.abort()
                return
            await asyncio.sleep(0)
        done = {"type": "transcript.text.done", "text": script.text, "logprobs": None, "usage": usage}
        await response.write(f"data: {json.dumps(done)}\n\n".encode())
        await response.write_eof()
