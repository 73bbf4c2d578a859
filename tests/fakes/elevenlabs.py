"""A fake ElevenLabs text-to-speech server on 127.0.0.1: HTTP `/stream`, websocket `stream-input`, voices, user.

It checks what ElevenLabs checks: the `xi-api-key` header (401 `invalid_api_key` / `needs_authorization`),
that the voice id exists (404 `voice_not_found`: a voice *name* is not an id), `output_format` read from
the query string only (absent: mp3_44100_128, answered as silent MP3 frames), the model id, the body
(422 for a missing `text`), voice_settings ranges. On the websocket: the first message must be
`{"text": " "}`; text is held until 120 characters are buffered unless a message has `flush: true` or
the socket was opened with `auto_mode=true`; `{"text": ""}` speaks the rest, sends `{"isFinal": true}`
and closes 1000; a socket that receives no message for `inactivity_timeout` seconds (query, default
`inactivity_secs`) is sent an error and closed 1008. Which close code ElevenLabs uses there is not
documented; 1008 with the `input_timeout_exceeded` error is this fake's choice.

Audio is a tone whose length is proportional to the text (`ms_per_char`), in the requested format,
sent in `chunk_ms` pieces after `first_byte_ms` (model latency) and paced at `speed`× real time.
Faults: `fail_next(status)` answers the next request or handshake with the vendor's error body;
`drop_next()` cuts the next stream's TCP connection after its first chunk; `stall_next()` accepts the
next HTTP stream and sends nothing; `garbage_next()` answers it 200 with JSON instead of audio.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from patterd.protocols.audio import pcm16_to_ulaw, ulaw_to_alaw
from patterd.protocols.elevenlabs import (
    API_DEFAULT_OUTPUT_FORMAT,
    OUTPUT_FORMATS,
    PREMADE_VOICES,
    WS_BUFFER_CHARS,
)
from tests.fakes.speech_timeline import ControlledServer

MODELS = {
    "eleven_flash_v2_5",
    "eleven_flash_v2",
    "eleven_turbo_v2_5",
    "eleven_turbo_v2",
    "eleven_multilingual_v2",
    "eleven_monolingual_v1",
    "eleven_v3",
}
# A silent MPEG-1 Layer III frame (128 kbit/s, 44.1 kHz, no padding: 417 bytes, zero side info).
MP3_FRAME = b"\xff\xfb\x90\x64" + bytes(413)
ERRORS = {
    401: ("invalid_api_key", "Invalid API key"),
    403: ("missing_permissions", "The API key you used is missing the permission text_to_speech"),
    404: ("voice_not_found", "A voice with the voice_id was not found."),
    429: ("too_many_concurrent_requests", "Too many concurrent requests for your subscription."),
    500: ("internal_server_error", "An internal server error occurred."),
    503: ("service_unavailable", "The service is temporarily unavailable."),
}


def error_body(status: int, code: str | None = None, message: str | None = None) -> dict[str, Any]:
    known = ERRORS.get(status, ("error", f"HTTP {status}"))
    return {"detail": {"status": code or known[0], "message": message or known[1]}}


def tone_pcm(ms: int, rate: int, hz: float = 220.0) -> bytes:
    """`ms` of a sine at `rate` as 16-bit PCM, fading in and out (speech-like energy)."""
    n = rate * ms // 1000
    i = np.arange(n)
    ramp = rate * 0.02
    envelope = np.minimum(1.0, np.minimum(i / ramp, (n - i) / ramp))
    return bytes((8000 * envelope * np.sin(2 * np.pi * hz * i / rate)).astype("<i2").tobytes())


def render(text: str, output_format: str, ms_per_char: float) -> bytes:
    """The whole audio of `text` in `output_format`."""
    ms = max(100, int(len(text.strip()) * ms_per_char))
    if output_format.startswith("mp3_"):
        return MP3_FRAME * max(1, ms // 26)  # one frame per 26 ms at 44.1 kHz
    encoding, rate = OUTPUT_FORMATS[output_format]
    pcm = tone_pcm(ms, 8000 if encoding != "pcm" else rate)
    if encoding == "pcm":
        return pcm
    ulaw = pcm16_to_ulaw(pcm)
    return ulaw if encoding == "ulaw" else ulaw_to_alaw(ulaw)


def bytes_per_ms(output_format: str) -> float:
    if output_format.startswith("mp3_"):
        return 16.0  # 128 kbit/s
    encoding, rate = OUTPUT_FORMATS[output_format]
    return rate / 1000 * (2 if encoding == "pcm" else 1)


def _peer_port(request: web.Request) -> int:
    peer = request.transport.get_extra_info("peername") if request.transport is not None else None
    return int(peer[1]) if peer else 0


@dataclass
class Stream:
    """One synthesis (an HTTP stream request or a websocket) as the server saw it."""

    transport: str  # "http" or "websocket"
    voice_id: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any] | None = None  # the HTTP request body
    messages: list[dict[str, Any]] = field(default_factory=list)  # websocket client messages, in order
    texts: list[str] = field(default_factory=list)  # texts spoken (HTTP: one; websocket: one per generation)
    audio_bytes: int = 0
    completed: bool = False  # every byte was sent
    cancelled: bool = False  # the client went away before the end
    close_code: int | None = None  # what the server closed the websocket with
    error: str | None = None  # the error the server reported
    client_port: int = 0  # the client's TCP port: equal ports = one kept-alive connection
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class FakeElevenLabsServer(ControlledServer):
    """`async with FakeElevenLabsServer() as el:` then point a client at `el.base_url`."""

    def __init__(
        self,
        api_key: str = "el-test-key",
        *,
        ms_per_char: float = 60.0,
        chunk_ms: int = 100,
        first_byte_ms: float = 0.0,
        speed: float = 20.0,
        inactivity_secs: float = 20.0,
        voices: dict[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        # serve https/wss (the SDK's websocket helper only speaks wss)
        ControlledServer.__init__(self, ssl_context)
        self.api_key = api_key
        self.ms_per_char = ms_per_char
        self.chunk_ms = chunk_ms
        self.first_byte_ms = first_byte_ms
        self.speed = speed  # audio made this many times faster than real time (0: no pacing)
        self.inactivity_secs = inactivity_secs
        self.voices = (
            dict(voices) if voices is not None else {v: k.title() for k, v in PREMADE_VOICES.items()}
        )
        self.streams: list[Stream] = []
        self.refused: list[tuple[int, str]] = []  # (status, detail.status) of refused requests
        self.probes = 0
        self._garbage = 0

    # -------- controller (patterd.testing.TTSControl)

    # fail_next: the next request or handshake gets ElevenLabs' error body; drop_next: cut after the first
    # audio chunk; stall_next: the next HTTP stream request gets nothing at all (ControlledServer)

    def garbage_next(self) -> None:
        """Answer the next HTTP stream with 200 and a JSON error object instead of audio (a broken proxy)."""
        self._garbage += 1

    def active_streams(self) -> int:
        return sum(1 for s in self.streams if not s.ended.is_set())

    def streams_completed(self) -> int:
        return sum(1 for s in self.streams if s.completed)

    def texts_received(self) -> list[str]:
        return [t for s in self.streams for t in s.texts]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -------- lifecycle

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/text-to-speech/{voice_id}/stream", self._http_stream)
        app.router.add_get("/v1/text-to-speech/{voice_id}/stream-input", self._ws_stream)
        app.router.add_get("/v1/voices", self._voices)
        app.router.add_get("/v1/voices/{voice_id}", self._voice)
        app.router.add_get("/v1/user", self._user)

    # -------- checks shared by every route

    def _refuse(self, status: int, code: str | None = None, message: str | None = None) -> web.Response:
        body = error_body(status, code, message)
        self.refused.append((status, body["detail"]["status"]))
        return web.json_response(body, status=status)

    def _gate(self, request: web.Request, *, key_optional: bool = False) -> web.Response | None:
        """Faults first, then the key: None when the request may go on."""
        if self._fail:
            return self._refuse(self._fail.popleft())
        key = request.headers.get("xi-api-key")
        if key is None:
            if key_optional:
                return None
            return self._refuse(
                401, "needs_authorization", "Neither authorization header nor xi-api-key received."
            )
        if key != self.api_key:
            return self._refuse(401)
        return None

    def _voice_problem(self, voice_id: str) -> web.Response | None:
        if voice_id not in self.voices:
            return self._refuse(404, "voice_not_found", f"A voice with voice_id {voice_id} was not found.")
        return None

    def _format_problem(self, query: dict[str, str]) -> web.Response | None:
        fmt = query.get("output_format", API_DEFAULT_OUTPUT_FORMAT)
        if fmt not in OUTPUT_FORMATS and not fmt.startswith("mp3_"):
            return self._refuse(400, "invalid_output_format", f"Invalid output format: {fmt}")
        return None

    def _settings_problem(self, settings: Any) -> web.Response | None:
        if settings is None:
            return None
        if not isinstance(settings, dict):
            return self._refuse(422, "validation_error", "voice_settings must be an object")
        for name in ("stability", "similarity_boost", "style"):
            value = settings.get(name)
            if value is not None and not (isinstance(value, int | float) and 0 <= value <= 1):
                return self._refuse(400, "invalid_voice_settings", f"{name} must be between 0 and 1")
        speed = settings.get("speed")
        if speed is not None and not (isinstance(speed, int | float) and 0.7 <= speed <= 1.2):
            return self._refuse(400, "invalid_voice_settings", "speed must be between 0.7 and 1.2")
        return None

    # -------- probes

    def _voice_json(self, voice_id: str) -> dict[str, Any]:
        return {
            "voice_id": voice_id,
            "name": self.voices[voice_id],
            "category": "premade",
            "labels": {},
            "settings": None,
        }

    async def _voices(self, request: web.Request) -> web.Response:
        self.probes += 1
        if problem := self._gate(request):
            return problem
        return web.json_response({"voices": [self._voice_json(v) for v in self.voices]})

    async def _voice(self, request: web.Request) -> web.Response:
        self.probes += 1
        if problem := self._gate(request) or self._voice_problem(request.match_info["voice_id"]):
            return problem
        return web.json_response(self._voice_json(request.match_info["voice_id"]))

    async def _user(self, request: web.Request) -> web.Response:
        self.probes += 1
        if problem := self._gate(request):
            return problem
        return web.json_response(
            {
                "user_id": "u_fake",
                "subscription": {"tier": "creator", "character_count": 0, "character_limit": 100000},
            }
        )

    # -------- audio pacing

    async def _chunks(self, text: str, output_format: str) -> AsyncIterator[bytes]:
        audio = render(text, output_format, self.ms_per_char)
        size = max(1, int(self.chunk_ms * bytes_per_ms(output_format)))
        if self.first_byte_ms:
            await asyncio.sleep(self.first_byte_ms / 1000)
        for i in range(0, len(audio), size):
            yield audio[i : i + size]
            if self.speed:
                await asyncio.sleep(self.chunk_ms / 1000 / self.speed)

    # -------- HTTP streaming

    async def _http_stream(self, request: web.Request) -> web.StreamResponse:
        voice_id = request.match_info["voice_id"]
        query = dict(request.query)
        if problem := self._gate(request) or self._voice_problem(voice_id) or self._format_problem(query):
            return problem
        try:
            body = await request.json()
        except ValueError:
            return self._refuse(400, "invalid_json", "The request body is not valid JSON.")
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            return web.json_response(
                {
                    "detail": [
                        {"loc": ["body", "text"], "msg": "field required", "type": "value_error.missing"}
                    ]
                },
                status=422,
            )
        model = body.get("model_id") or "eleven_multilingual_v2"
        if model not in MODELS:
            return self._refuse(400, "model_not_found", f"A model with model ID {model} does not exist")
        if problem := self._settings_problem(body.get("voice_settings")):
            return problem
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower() != "xi-api-key"}
        stream = Stream("http", voice_id, query, headers, body=body, texts=[body["text"]])
        stream.client_port = _peer_port(request)
        self.streams.append(stream)
        if self._stall:
            self._stall -= 1
            while request.transport is not None and not request.transport.is_closing():
                await asyncio.sleep(0.02)  # a hung upstream: no status line, no bytes
            stream.cancelled = True
            stream.ended.set()
            return web.Response()
        if self._garbage:
            self._garbage -= 1
            stream.ended.set()
            return web.json_response(error_body(500))
        fmt = query.get("output_format", API_DEFAULT_OUTPUT_FORMAT)
        # audio/mpeg for MP3; what ElevenLabs labels raw formats with is not documented, and
        # tts.elevenlabs only refuses JSON or text answers, so raw audio is plain octets here.
        kind = "audio/mpeg" if fmt.startswith("mp3_") else "application/octet-stream"
        response = web.StreamResponse(headers={"Content-Type": kind})
        drop = self._take_drop()
        try:
            await response.prepare(request)
            async for chunk in self._chunks(body["text"], fmt):
                await response.write(chunk)
                stream.audio_bytes += len(chunk)
                if drop:
                    assert request.transport is not None
                    request.transport.abort()
                    stream.cancelled = True
                    return response
            await response.write_eof()
            stream.completed = True
        except ConnectionResetError:  # the client went away (barge-in): the generation stops
            stream.cancelled = True
        except asyncio.CancelledError:
            stream.cancelled = True
            raise
        finally:
            stream.ended.set()
        return response

    # -------- websocket stream-input

    async def _ws_stream(self, request: web.Request) -> web.StreamResponse:
        voice_id = request.match_info["voice_id"]
        query = dict(request.query)
        # The key may come in the header or in the first message (xi-api-key): check the header here.
        if problem := self._gate(request, key_optional=True) or self._voice_problem(voice_id):
            return problem
        if problem := self._format_problem(query):
            return problem
        model = query.get("model_id") or "eleven_multilingual_v2"
        if model not in MODELS:
            return self._refuse(400, "model_not_found", f"A model with model ID {model} does not exist")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower() != "xi-api-key"}
        stream = Stream("websocket", voice_id, query, headers)
        stream.client_port = _peer_port(request)
        self.streams.append(stream)
        try:
            await self._ws_session(request, ws, stream)
        finally:
            if not ws.closed:
                await ws.close()
            if not stream.completed:
                stream.cancelled = True
            stream.ended.set()
        return ws

    async def _ws_error(self, ws: web.WebSocketResponse, stream: Stream, code: str, message: str) -> None:
        stream.error = code
        await ws.send_str(json.dumps({"message": message, "error": code, "code": 1008}))
        stream.close_code = 1008
        await ws.close(code=1008, message=message[:120].encode())

    async def _ws_session(self, request: web.Request, ws: web.WebSocketResponse, stream: Stream) -> None:
        fmt = stream.query.get("output_format", API_DEFAULT_OUTPUT_FORMAT)
        auto = stream.query.get("auto_mode") == "true"
        timeout = float(stream.query.get("inactivity_timeout", self.inactivity_secs))
        authed = "xi-api-key" in request.headers
        buffer = ""
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        drop = self._take_drop()

        async def speaker() -> None:
            while (text := await queue.get()) is not None:
                stream.texts.append(text)
                async for chunk in self._chunks(text, fmt):
                    await ws.send_str(
                        json.dumps(
                            {
                                "audio": base64.b64encode(chunk).decode(),
                                "isFinal": None,
                                "normalizedAlignment": None,
                                "alignment": None,
                            }
                        )
                    )
                    stream.audio_bytes += len(chunk)
                    if drop:
                        assert request.transport is not None
                        request.transport.abort()
                        return

        speaking = asyncio.create_task(speaker())
        try:
            while True:
                try:
                    msg = await asyncio.wait_for(ws.receive(), timeout)
                except TimeoutError:
                    await self._ws_error(
                        ws,
                        stream,
                        "input_timeout_exceeded",
                        f"Have not received new text in the last {timeout:g} seconds. Closing the websocket connection.",
                    )
                    return
                if msg.type != WSMsgType.TEXT:
                    return  # closed by the client (or garbage): the generation stops
                try:
                    message = json.loads(msg.data)
                except ValueError:
                    await self._ws_error(ws, stream, "invalid_message", "Invalid message received")
                    return
                if not isinstance(message, dict) or not isinstance(message.get("text"), str):
                    await self._ws_error(
                        ws, stream, "invalid_message", "Each message must carry a text string"
                    )
                    return
                stream.messages.append({k: v for k, v in message.items() if k != "xi-api-key"})
                text = message["text"]
                if len(stream.messages) == 1:
                    if text != " ":
                        await self._ws_error(
                            ws, stream, "invalid_message", "The first message must be a single space"
                        )
                        return
                    if not authed:
                        key = message.get("xi-api-key") or message.get("xi_api_key")
                        if key != self.api_key:
                            await self._ws_error(ws, stream, "invalid_api_key", "Invalid API key")
                            return
                    if problem := self._settings_problem(message.get("voice_settings")):
                        await self._ws_error(ws, stream, "invalid_voice_settings", problem.text or "")
                        return
                    continue
                if text == "":
                    if buffer.strip():
                        queue.put_nowait(buffer)
                    queue.put_nowait(None)
                    await speaking
                    if ws.closed:
                        return
                    await ws.send_str(json.dumps({"isFinal": True}))
                    stream.completed = True
                    stream.close_code = 1000
                    await ws.close(code=1000)
                    return
                buffer += text
                if message.get("flush") is True or auto or len(buffer) >= WS_BUFFER_CHARS:
                    if buffer.strip():
                        queue.put_nowait(buffer)
                    buffer = ""
        finally:
            if not speaking.done():
                speaking.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
                    await speaking
