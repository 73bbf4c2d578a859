"""A fake LMNT speech-session server on 127.0.0.1: websocket `/v1/ai/speech/stream` and `GET /v1/account`.

It checks what LMNT checks, the way LMNT answers (an `error` frame {error: {type, message}, request_id},
then the close): the first frame must be the init object carrying `X-API-Key` (there is no auth
header; a wrong key is `authentication_error`), an `lmnt-version` of 1.1 or 1.2 (the SDK 2.13 sends
1.2 with the same messages), a known `voice`, and a valid `format` / `sample_rate` / `language`
(`invalid_request_error`). Then `{"type": "text"}` appends to the buffer, `flush` {nonce} speaks it
and answers `flush_complete` with that nonce after the audio, `reset` {nonce} drops the buffer and
the speech in progress and answers `reset_complete`, `finish` speaks the rest and closes 1000; any
other message is an `invalid_request_error`. The close code after an error (1008) is this fake's
choice: LMNT does not document it. Only `ulaw` (8 kHz, with a WAV header at the start of the
session's audio) and `pcm_s16le` are rendered; mp3, pcm_f32le and webm are refused (a fake's limit).

Audio is a tone whose length is proportional to the text (`ms_per_char`), sent in `chunk_ms` binary
frames paced at `speed`× real time. Each flush is one generation (a "stream" for the controller).
Faults: `fail_next(status)` answers the next init, flush or account request with the error type
of that status; `drop_next()` cuts the TCP connection after the next generation's first chunk;
`stall_next()` accepts the next flush and never speaks it; `close_sessions()` closes every open
session from the server's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from patterd.protocols.audio import pcm16_to_ulaw
from patterd.protocols.lmnt import ERROR_STATUS, FORMATS, LANGUAGES, SAMPLE_RATES, wav_header
from tests.fakes.speech_timeline import ControlledServer

VERSIONS = {"1.1", "1.2"}
VOICES = {"lily", "leah", "ava", "elowen", "morgan", "zeke"}
MODELS = {"blizzard", "aurora"}
STATUS_ERROR = {status: kind for kind, status in ERROR_STATUS.items()} | {503: "internal_server_error"}
MESSAGES = {
    "authentication_error": "Invalid API key.",
    "permission_error": "This API key may not use the speech API.",
    "payment_required_error": "Your account is out of characters.",
    "rate_limit_error": "Too many concurrent sessions.",
    "internal_server_error": "An internal error occurred.",
    "invalid_request_error": "Invalid request.",
    "not_found_error": "Not found.",
}


def tone(ms: int, rate: int, hz: float = 220.0) -> bytes:
    """`ms` of a sine at `rate` as 16-bit PCM, fading in and out (speech-like energy)."""
    n = rate * ms // 1000
    i = np.arange(n)
    ramp = rate * 0.02
    envelope = np.minimum(1.0, np.minimum(i / ramp, (n - i) / ramp))
    return bytes((8000 * envelope * np.sin(2 * np.pi * hz * i / rate)).astype("<i2").tobytes())


def render(text: str, audio_format: str, sample_rate: int, ms_per_char: float) -> bytes:
    """The whole audio of `text` (no header)."""
    pcm = tone(max(100, int(len(text.strip()) * ms_per_char)), sample_rate)
    return pcm16_to_ulaw(pcm) if audio_format == "ulaw" else pcm


@dataclass
class Generation:
    """One flush's speech as the server saw it."""

    text: str
    nonce: int
    audio_bytes: int = 0
    completed: bool = False
    cancelled: bool = False  # reset, or the client went away before the end
    ended: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Session:
    """One websocket as the server saw it."""

    init: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)  # client messages after the init
    generations: list[Generation] = field(default_factory=list)
    error: str | None = None  # the error type the server sent
    close_code: int | None = None
    header_sent: bool = False
    client_port: int = 0
    ws: web.WebSocketResponse | None = None


class FakeLMNTServer(ControlledServer):
    """`async with FakeLMNTServer() as lmnt:` then point a client at `lmnt.base_url`."""

    def __init__(
        self,
        api_key: str = "lmnt-test-key",
        *,
        ms_per_char: float = 60.0,
        chunk_ms: int = 100,
        speed: float = 20.0,
    ) -> None:
        self.api_key = api_key
        self.ms_per_char = ms_per_char
        self.chunk_ms = chunk_ms
        self.speed = speed  # audio made this many times faster than real time (0: no pacing)
        self.sessions: list[Session] = []
        self.refused: list[str] = []  # error types sent (init, flush or HTTP)
        self.probes = 0
        ControlledServer.__init__(self)

    # -------- controller (patterd.testing.TTSControl)

    # fail_next: the next init, flush or account request gets the error type of the status; drop_next: cut
    # after the next generation's first audio frame; stall_next: the next flush is never spoken (ControlledServer)

    async def close_sessions(self, code: int = 1001) -> None:
        """Close every open session from the server's side (as LMNT may close an idle one)."""
        for session in self.sessions:
            if session.ws is not None and not session.ws.closed:
                await session.ws.close(code=code)

    def generations(self) -> list[Generation]:
        return [g for s in self.sessions for g in s.generations]

    def active_streams(self) -> int:
        return sum(1 for g in self.generations() if not g.ended.is_set())

    def streams_completed(self) -> int:
        return sum(1 for g in self.generations() if g.completed)

    def texts_received(self) -> list[str]:
        return [g.text for g in self.generations()]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -------- lifecycle

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/ai/speech/stream", self._stream)
        app.router.add_get("/v1/account", self._account)

    # -------- HTTP

    async def _account(self, request: web.Request) -> web.Response:
        self.probes += 1
        if request.headers.get("X-API-Key") != self.api_key:
            return self._http_error(401)
        if self._fail:
            return self._http_error(self._fail.popleft())
        plan = {"character_limit": 1_000_000, "commercial_use_allowed": True}
        usage = {"characters": 1234, "instant_voices": 0, "professional_voices": 0}
        return web.json_response({"plan": plan, "usage": usage})

    def _http_error(self, status: int) -> web.Response:
        kind = STATUS_ERROR.get(status, "internal_server_error")
        self.refused.append(kind)
        return web.json_response({"error": {"type": kind, "message": MESSAGES[kind]}}, status=status)

    # -------- websocket

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        session = Session(ws=ws)
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        session.client_port = int(peer[1]) if peer else 0
        self.sessions.append(session)
        request_id = uuid.uuid4().hex
        speaker: asyncio.Task[None] | None = None
        queue: asyncio.Queue[Generation] = asyncio.Queue()
        try:
            first = await ws.receive()
            problem = self._init_problem(first, session)
            if problem is not None:
                await self._error(ws, session, request_id, *problem)
                return ws
            await ws.send_json({"type": "ready", "request_id": request_id})
            speaker = asyncio.create_task(self._speak(request, ws, session, queue, request_id))
            buffer: list[str] = []
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    await self._error(
                        ws, session, request_id, "invalid_request_error", "expected a text frame"
                    )
                    break
                try:
                    message = json.loads(msg.data)
                except ValueError:
                    message = None
                if not isinstance(message, dict):
                    await self._error(ws, session, request_id, "invalid_request_error", "not a JSON object")
                    break
                session.messages.append(message)
                kind, nonce = message.get("type"), message.get("nonce")
                if kind == "text" and isinstance(message.get("text"), str):
                    buffer.append(message["text"])
                elif kind == "flush" and isinstance(nonce, int):
                    generation = Generation("".join(buffer), nonce)
                    buffer.clear()
                    session.generations.append(generation)
                    queue.put_nowait(generation)
                elif kind == "reset" and isinstance(nonce, int):
                    buffer.clear()
                    speaker.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await speaker
                    self._cancel_all(session)
                    queue = asyncio.Queue()
                    await ws.send_json({"type": "reset_complete", "nonce": nonce})
                    speaker = asyncio.create_task(self._speak(request, ws, session, queue, request_id))
                elif kind == "finish":
                    if buffer:
                        generation = Generation("".join(buffer), -1)
                        session.generations.append(generation)
                        queue.put_nowait(generation)
                    await queue.join()
                    session.close_code = 1000
                    await ws.close(code=1000)
                    break
                else:
                    await self._error(
                        ws, session, request_id, "invalid_request_error", f"bad message {kind!r}"
                    )
                    break
        finally:
            if speaker is not None:
                speaker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await speaker
            self._cancel_all(session)
        return ws

    def _init_problem(self, first: Any, session: Session) -> tuple[str, str] | None:
        if first.type is not WSMsgType.TEXT:
            return "invalid_request_error", "the first frame must be the JSON init message"
        try:
            init = json.loads(first.data)
        except ValueError:
            init = None
        if not isinstance(init, dict):
            return "invalid_request_error", "the first frame must be a JSON object"
        session.init = init
        if init.get("X-API-Key") != self.api_key:
            return "authentication_error", MESSAGES["authentication_error"]
        if self._fail:
            kind = STATUS_ERROR.get(self._fail.popleft(), "internal_server_error")
            return kind, MESSAGES[kind]
        if init.get("lmnt-version") not in VERSIONS:
            return "invalid_request_error", f"unsupported lmnt-version {init.get('lmnt-version')!r}"
        if init.get("type", "init") != "init":
            return "invalid_request_error", "the first message must be init"
        if init.get("voice") not in VOICES:
            return "invalid_request_error", f"unknown voice {init.get('voice')!r}"
        audio_format, rate = init.get("format", "mp3"), init.get("sample_rate", 24000)
        if audio_format not in FORMATS or rate not in SAMPLE_RATES:
            return "invalid_request_error", f"bad format {audio_format!r} / sample_rate {rate!r}"
        if audio_format not in ("ulaw", "pcm_s16le") or (audio_format == "ulaw" and rate != 8000):
            return (
                "invalid_request_error",
                f"this fake renders ulaw 8000 and pcm_s16le only, not {audio_format}",
            )
        if init.get("language", "auto") not in LANGUAGES:
            return "invalid_request_error", f"unknown language {init.get('language')!r}"
        if "model" in init and init["model"] not in MODELS:
            return "invalid_request_error", f"unknown model {init['model']!r}"
        speed = init.get("speed", 1.0)
        if not isinstance(speed, int | float) or isinstance(speed, bool) or not 0.25 <= speed <= 2.0:
            return "invalid_request_error", f"speed {speed!r} is not within 0.25-2"
        return None

    async def _error(
        self, ws: web.WebSocketResponse, session: Session, request_id: str, kind: str, text: str
    ) -> None:
        self.refused.append(kind)
        session.error, session.close_code = kind, 1008
        with contextlib.suppress(ConnectionError):
            await ws.send_json(
                {"type": "error", "error": {"type": kind, "message": text}, "request_id": request_id}
            )
            await ws.close(code=1008, message=kind.encode())

    def _cancel_all(self, session: Session) -> None:
        for generation in session.generations:
            if not generation.ended.is_set():
                generation.cancelled = True
                generation.ended.set()

    async def _speak(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        session: Session,
        queue: asyncio.Queue[Generation],
        request_id: str,
    ) -> None:
        audio_format, rate = session.init.get("format", "mp3"), int(session.init.get("sample_rate", 24000))
        per_ms = rate / 1000 * (1 if audio_format == "ulaw" else 2)
        chunk = max(1, int(self.chunk_ms * per_ms))
        while True:
            generation = await queue.get()
            try:
                if self._fail:
                    kind = STATUS_ERROR.get(self._fail.popleft(), "internal_server_error")
                    await self._error(ws, session, request_id, kind, MESSAGES[kind])
                    return
                if self._stall:
                    self._stall -= 1
                    await asyncio.Event().wait()  # until the client goes away (cancelled then)
                drop = self._drop > 0
                self._drop -= drop
                audio = (
                    render(generation.text, audio_format, rate, self.ms_per_char) if generation.text else b""
                )
                for at in range(0, len(audio), chunk):
                    piece = audio[at : at + chunk]
                    if audio_format == "ulaw" and not session.header_sent:
                        piece, session.header_sent = wav_header(rate) + piece, True
                    await ws.send_bytes(piece)
                    generation.audio_bytes += len(piece)
                    if drop:
                        assert request.transport is not None
                        request.transport.abort()
                        return
                    if self.speed:
                        await asyncio.sleep(self.chunk_ms / 1000 / self.speed)
                generation.completed = True
                generation.ended.set()
                if generation.nonce >= 0:
                    await ws.send_json({"type": "flush_complete", "nonce": generation.nonce})
            finally:
                queue.task_done()
