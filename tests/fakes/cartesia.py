"""A fake Cartesia API on 127.0.0.1: the STT websocket (ink-whisper), the TTS websocket (sonic) and `GET /voices`.

Checked as Cartesia checks: the key in `X-API-Key` (or `Authorization: Bearer`, the SDK's way) else
401; a `Cartesia-Version` header (or `cartesia_version` query) shaped YYYY-MM-DD else 400; STT query
`model`, `encoding` (Cartesia's list) and `sample_rate` else 400; TTS generation requests need
`model_id`, `transcript`, `voice.id`, `context_id` and a raw `output_format` Cartesia offers, else an
`error` message for that context. Refusals carry Cartesia's JSON error body.

STT: an energy VAD over 20 ms frames drives the messages from the audio's own timeline (never the
clock): interim transcripts (`is_final: false`) every `interim_every_ms` of speech, a final when
`max_silence_duration_secs` of silence followed speech (ink-whisper's own endpointing), a final
and `flush_done` for `finalize`, the rest, `done` and a 1000 close for `close` (or `done`). Finals
are deltas: every one after the stream's first starts with a space. The words come from a script.

TTS: every context turns each text it receives into `ms_per_char` of μ-law audio, sent as base64
`chunk`s of `chunk_ms` (paced at `speed`× real time, None: as fast as the loop goes), then `done`
once its input ended (`continue: false`). `cancel` stops a context at once. A socket with no message
for `idle_timeout_secs` (300 s at Cartesia) is closed.

Fault modes (`Fault`, one per use in order): a status (refuses the next handshake, generation or GET,
whichever comes first), `drop_after` messages (aborts TCP), `stall` (accepts, then says nothing), or
`malformed` (garbage first).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import math
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from patterd.protocols.audio import VOICED_RMS, alaw_to_ulaw, pcm16_to_ulaw, rms_pcm16, ulaw_to_pcm16
from tests.fakes.speech_timeline import FRAME_MS, FaultQueue, FramedAudio, LoopbackServer, abort

STT_ENCODINGS = {
    "pcm_s16le": 2,
    "pcm_s32le": 4,
    "pcm_f16le": 2,
    "pcm_f32le": 4,
    "pcm_mulaw": 1,
    "pcm_alaw": 1,
}
DECODABLE = {"pcm_s16le", "pcm_mulaw", "pcm_alaw"}
TTS_ENCODINGS = {"pcm_f32le", "pcm_s16le", "pcm_mulaw", "pcm_alaw"}
TTS_RATES = {8000, 16000, 22050, 24000, 44100, 48000}
VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MALFORMED = (
    "not json",
    "[1, 2]",
    '{"type": "transcript"}',
    '{"type": "chunk", "context_id": "x", "data": "!!"}',
)
DEFAULT_VOICES = ("f786b574-daa5-4673-aa0c-cbe3e8534c02", "6ccbfb76-1fc6-48f7-b71d-91ac6298247b")


def tone_ulaw(ms: int, hz: float = 440.0, amplitude: int = 8000) -> bytes:
    """`ms` of a loud sine as 8 kHz μ-law: speech to the STT fake, voice from the TTS fake."""
    n = 8 * ms
    pcm = b"".join(
        int(amplitude * math.sin(2 * math.pi * hz * i / 8000)).to_bytes(2, "little", signed=True)
        for i in range(n)
    )
    return pcm16_to_ulaw(pcm)


@dataclass(frozen=True)
class Fault:
    """One use's misbehaviour."""

    status: int | None = None
    drop_after: int | None = None  # abort TCP after this many transcripts (STT) or chunks (TTS)
    stall: bool = False
    malformed: bool = False


def error_body(status: int, message: str) -> dict[str, Any]:
    titles = {
        400: "Bad Request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not Found",
        429: "Too Many Requests",
    }
    return {
        "type": "error",
        "status_code": status,
        "title": titles.get(status, "Internal Server Error"),
        "message": message,
        "error_code": titles.get(status, "internal_error").lower().replace(" ", "_"),
        "request_id": str(uuid.uuid4()),
    }


@dataclass
class SttSession:
    """One STT websocket as the fake saw it."""

    query: dict[str, str]
    headers: dict[str, str]
    audio_bytes: int = 0
    commands: list[str] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def finals(self) -> list[str]:
        return [m["text"] for m in self.sent if m.get("type") == "transcript" and m["is_final"]]


@dataclass
class TtsContext:
    """One TTS context as the fake saw it."""

    context_id: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    input_done: bool = False
    cancelled: bool = False
    completed: bool = False
    audio_bytes: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class TtsSocket:
    headers: dict[str, str]
    contexts: dict[str, TtsContext] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)  # every client message, in order
    close_code: int | None = None


class _Listener(FramedAudio):
    """The STT state of one socket, advanced frame by frame."""

    def __init__(
        self, server: FakeCartesiaServer, session: SttSession, ws: web.WebSocketResponse, fault: Fault | None
    ):
        q = session.query
        self.encoding = q["encoding"]
        self.rate = int(q["sample_rate"])
        super().__init__(ws, self.rate * FRAME_MS // 1000 * STT_ENCODINGS[self.encoding])
        self.server, self.session, self.fault = server, session, fault
        self.max_silence_ms = int(float(q.get("max_silence_duration_secs", server.max_silence_secs)) * 1000)
        self.request_id = str(uuid.uuid4())
        self.turn: list[str] | None = None  # the open turn's segments still to finalize
        self.words_heard = 0
        self.since_interim_ms = 0
        self.silence_ms = 0
        self.speech_ms = 0
        self.in_speech = False
        self.finals_sent = 0
        self.transcripts = 0

    async def send(self, message: dict[str, Any]) -> None:
        if self.dropped or self.ws.closed:
            return
        if message["type"] == "transcript":
            fault = self.fault
            if fault is not None and fault.drop_after is not None and self.transcripts >= fault.drop_after:
                self.drop()
                return
            self.transcripts += 1
        self.session.sent.append(message)
        await self.ws.send_str(json.dumps(message))

    def voiced(self, frame: bytes) -> bool:
        if self.encoding == "pcm_mulaw":
            pcm = ulaw_to_pcm16(frame)
        elif self.encoding == "pcm_alaw":
            pcm = ulaw_to_pcm16(alaw_to_ulaw(frame))
        elif self.encoding == "pcm_s16le":
            pcm = frame
        else:
            return False  # accepted but not understood, as Cartesia warns for a wrong encoding
        return rms_pcm16(pcm) >= self.server.vad_threshold

    async def frame(self, frame: bytes) -> None:
        self.cursor_ms += FRAME_MS
        if self.voiced(frame):
            if self.turn is None:
                self.turn = self.server.next_turn()
                self.words_heard = 0
                self.since_interim_ms = 0
            self.in_speech = True
            self.silence_ms = 0
            self.speech_ms += FRAME_MS
            self.since_interim_ms += FRAME_MS
            if self.since_interim_ms >= self.server.interim_every_ms and self.turn:
                self.since_interim_ms = 0
                words = self.turn[0].split()
                self.words_heard = min(self.words_heard + 1, len(words))
                if self.words_heard:
                    await self.transcript(" ".join(words[: self.words_heard]), is_final=False)
        elif self.in_speech:
            self.silence_ms += FRAME_MS
            if self.silence_ms >= self.max_silence_ms:
                await self.finalize_segment()

    async def finalize_segment(self) -> None:
        """ink-whisper finalized on silence: the segment being spoken becomes final."""
        self.in_speech = False
        if self.turn:
            await self.transcript(self.turn.pop(0), is_final=True)
        if not self.turn:
            self.turn = None
        self.words_heard = 0

    async def finalize_all(self) -> None:
        """`finalize` or `close`: everything heard and not yet final (an empty final when nothing was)."""
        text = (
            " ".join(s.strip() for s in self.turn or [] if s.strip()) if self.in_speech or self.turn else ""
        )
        self.turn, self.in_speech, self.words_heard = None, False, 0
        await self.transcript(text, is_final=True)

    async def transcript(self, text: str, *, is_final: bool) -> None:
        # Deltas: a stream's texts after its first final carry the space that joins them.
        if text and self.finals_sent:
            text = " " + text
        if is_final and text:
            self.finals_sent += 1
        end = self.cursor_ms / 1000
        words = text.split()
        step = (self.speech_ms / 1000) / max(len(words), 1)
        await self.send(
            {
                "type": "transcript",
                "request_id": self.request_id,
                "text": text,
                "is_final": is_final,
                "duration": round(self.speech_ms / 1000, 3),
                "language": "en",
                "words": [
                    {
                        "word": w,
                        "start": round(end - (len(words) - i) * step, 3),
                        "end": round(end - (len(words) - i - 1) * step, 3),
                    }
                    for i, w in enumerate(words)
                ],
            }
        )
        if is_final:
            self.speech_ms = 0


class FakeCartesiaServer(LoopbackServer, FaultQueue[Fault]):
    """`async with FakeCartesiaServer(key) as fake:` then point clients at `fake.base_url`."""

    def __init__(
        self,
        api_key: str = "sk_car_test",
        *,
        interim_every_ms: int = 200,
        max_silence_secs: float = 0.5,
        vad_threshold: int = VOICED_RMS,
        ms_per_char: int = 40,
        chunk_ms: int = 400,
        speed: float | None = 40.0,
        idle_timeout_secs: float = 300.0,
        voices: tuple[str, ...] = DEFAULT_VOICES,
    ) -> None:
        self.api_key = api_key
        self.interim_every_ms = interim_every_ms
        self.max_silence_secs = max_silence_secs
        self.vad_threshold = vad_threshold
        self.ms_per_char = ms_per_char
        self.chunk_ms = chunk_ms
        self.speed = speed
        self.idle_timeout_secs = idle_timeout_secs
        self.voices = set(voices)
        LoopbackServer.__init__(self)
        FaultQueue.__init__(self)
        # segments per turn (unlike TurnScript's one string), finalized one by one on silence
        self.script: collections.deque[list[str]] = collections.deque()
        self.stt_sessions: list[SttSession] = []
        self.tts_sockets: list[TtsSocket] = []
        self.refused: list[tuple[str, int]] = []  # (path, status) of refused handshakes and GETs
        self.probes = 0
        self.stt_open = 0
        self.tts_open = 0

    # -------- scripting and inspection

    def say(self, *turns: str | list[str]) -> None:
        """What the next turns say: a string, or segments finalized one by one on silence."""
        for turn in turns:
            self.script.append([turn] if isinstance(turn, str) else list(turn))

    def next_turn(self) -> list[str]:
        return self.script.popleft() if self.script else []

    def contexts(self) -> list[TtsContext]:
        return [c for s in self.tts_sockets for c in s.contexts.values()]

    def texts_received(self) -> list[str]:
        """The text of each context, pieces joined verbatim as Cartesia joins continuations."""
        return ["".join(c.texts) for c in self.contexts()]

    def streams_completed(self) -> int:
        return sum(1 for c in self.contexts() if c.completed)

    def generating(self) -> int:
        """Contexts still producing audio (not done, not cancelled, not stalled forever by a dead socket)."""
        return sum(1 for c in self.contexts() if not c.completed and not c.cancelled)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -------- lifecycle

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/stt/websocket", self._stt)
        app.router.add_get("/tts/websocket", self._tts)
        app.router.add_get("/voices", self._voices)
        app.router.add_get("/voices/{id}", self._voice)
        app.router.add_get("/", self._status)

    # -------- checks

    def _refuse(self, request: web.Request, status: int, message: str) -> web.Response:
        self.refused.append((request.path, status))
        return web.json_response(error_body(status, message), status=status)

    def _problem(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("X-API-Key")
        if key is None:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            key = token if scheme.lower() == "bearer" else None
        if key != self.api_key:
            return self._refuse(request, 401, "Invalid API key" if key else "Missing API key")
        version = request.headers.get("Cartesia-Version") or request.query.get("cartesia_version")
        if not version:
            return self._refuse(request, 400, "Cartesia-Version header is required")
        if not VERSION.match(version):
            return self._refuse(request, 400, f"Invalid Cartesia-Version: {version}")
        return None

    def _take_fault(
        self, request: web.Request, *, status_only: bool
    ) -> tuple[Fault | None, web.Response | None]:
        if not self.faults or (status_only and self.faults[0].status is None):
            return None, None
        fault = self.faults.popleft()
        if fault.status is not None:
            return fault, self._refuse(request, fault.status, f"fake fault {fault.status}")
        return fault, None

    # -------- REST

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "version": "2026-03-01"})

    async def _voices(self, request: web.Request) -> web.Response:
        problem = self._problem(request) or self._take_fault(request, status_only=True)[1]
        if problem is not None:
            return problem
        self.probes += 1
        data = [{"id": v, "name": f"voice {v[:4]}", "language": "en"} for v in sorted(self.voices)]
        limit = int(request.query.get("limit", "10") or 10)
        return web.json_response({"data": data[:limit], "has_more": len(data) > limit})

    async def _voice(self, request: web.Request) -> web.Response:
        problem = self._problem(request) or self._take_fault(request, status_only=True)[1]
        if problem is not None:
            return problem
        voice = request.match_info["id"]
        if voice not in self.voices:
            return self._refuse(request, 404, f"Voice {voice} not found")
        self.probes += 1
        return web.json_response({"id": voice, "name": f"voice {voice[:4]}", "language": "en"})

    # -------- STT

    async def _stt(self, request: web.Request) -> web.StreamResponse:
        problem = self._problem(request)
        if problem is not None:
            return problem
        fault, refusal = self._take_fault(request, status_only=False)
        if refusal is not None:
            return refusal
        q = request.query
        if not q.get("model"):
            return self._refuse(request, 400, "model is required")
        if q.get("encoding") not in STT_ENCODINGS:
            return self._refuse(request, 400, f"Unsupported encoding: {q.get('encoding')}")
        if not q.get("sample_rate", "").isdigit():
            return self._refuse(request, 400, "sample_rate is required")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        session = SttSession(dict(q), dict(request.headers))
        self.stt_sessions.append(session)
        self.stt_open += 1
        listener = _Listener(self, session, ws, fault)
        try:
            if fault is not None and fault.malformed:
                for text in MALFORMED:
                    await ws.send_str(text)
            await self._stt_serve(listener, stall=fault is not None and fault.stall)
        finally:
            self.stt_open -= 1
            session.ended.set()
        return ws

    async def _stt_serve(self, listener: _Listener, *, stall: bool) -> None:
        ws, session = listener.ws, listener.session
        while not listener.dropped:
            try:
                msg = await ws.receive(timeout=self.idle_timeout_secs)
            except TimeoutError:
                await ws.close(code=1000, message=b"idle timeout")
                return
            if msg.type == WSMsgType.BINARY:
                session.audio_bytes += len(msg.data)
                if not stall:
                    await listener.audio(msg.data)
            elif msg.type == WSMsgType.TEXT:
                command = msg.data.strip()
                session.commands.append(command)
                if stall:
                    continue
                if command == "finalize":
                    await listener.finalize_all()
                    await listener.send({"type": "flush_done", "request_id": listener.request_id})
                elif command in ("close", "done"):
                    if listener.in_speech or listener.turn:
                        await listener.finalize_all()
                    await listener.send({"type": "done", "request_id": listener.request_id})
                    await ws.close(code=1000)
                    return
                else:
                    await listener.send(error_body(400, f"Unknown command: {command[:40]}"))
            else:
                return

    # -------- TTS

    async def _tts(self, request: web.Request) -> web.StreamResponse:
        problem = self._problem(request) or self._take_fault(request, status_only=True)[1]
        if problem is not None:
            return problem
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        sock = TtsSocket(dict(request.headers))
        self.tts_sockets.append(sock)
        self.tts_open += 1
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                try:
                    msg = await ws.receive(timeout=self.idle_timeout_secs)
                except TimeoutError:
                    sock.close_code = 1000
                    await ws.close(code=1000, message=b"idle timeout")
                    return ws
                if msg.type != WSMsgType.TEXT:
                    return ws
                try:
                    body = json.loads(msg.data)
                except ValueError:
                    await ws.send_str(json.dumps(error_body(400, "Invalid JSON") | {"done": True}))
                    continue
                if not isinstance(body, dict):
                    await ws.send_str(json.dumps(error_body(400, "Expected an object") | {"done": True}))
                    continue
                sock.messages.append(body)
                await self._tts_message(request, ws, sock, body, tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.tts_open -= 1

    async def _tts_message(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        sock: TtsSocket,
        body: dict[str, Any],
        tasks: set[asyncio.Task[None]],
    ) -> None:
        context_id = body.get("context_id")

        async def error(status: int, message: str) -> None:
            out = error_body(status, message) | {"done": True}
            if isinstance(context_id, str):
                out["context_id"] = context_id
            await ws.send_str(json.dumps(out))

        if body.get("cancel") is True:
            ctx = sock.contexts.get(context_id) if isinstance(context_id, str) else None
            if ctx is not None:
                ctx.cancelled = True
                ctx.wake.set()
            return
        if not isinstance(context_id, str) or not context_id:
            return await error(400, "context_id is required")
        ctx = sock.contexts.get(context_id)
        if ctx is not None and (ctx.input_done or ctx.cancelled):
            return await error(400, f"Context {context_id} has already been closed")
        fault: Fault | None = None
        if ctx is None and self.faults:
            fault = self.faults.popleft()
            if fault.status is not None:
                self.refused.append((request.path, fault.status))
                return await error(fault.status, f"fake fault {fault.status}")
        transcript = body.get("transcript")
        voice = body.get("voice")
        fmt = body.get("output_format")
        if not isinstance(body.get("model_id"), str) or not body["model_id"]:
            return await error(400, "model_id is required")
        if not isinstance(transcript, str):
            return await error(400, "transcript is required")
        if not (isinstance(voice, dict) and isinstance(voice.get("id"), str)) and not isinstance(voice, str):
            return await error(400, "voice.id is required")
        voice_id = voice if isinstance(voice, str) else voice["id"]
        if voice_id not in self.voices:
            return await error(400, f"Voice {voice_id} not found")
        if not (
            isinstance(fmt, dict)
            and fmt.get("container") == "raw"
            and fmt.get("encoding") in TTS_ENCODINGS
            and fmt.get("sample_rate") in TTS_RATES
        ):
            return await error(400, f"Invalid output_format: {fmt}")
        if ctx is None:
            ctx = sock.contexts[context_id] = TtsContext(context_id)
            task = asyncio.create_task(self._generate(ws, ctx, fmt, fault))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        ctx.requests.append(body)
        if transcript:
            ctx.texts.append(transcript)  # continuations join verbatim: the client owns the spacing
        if body.get("continue") is not True:
            ctx.input_done = True
        ctx.wake.set()

    async def _generate(
        self, ws: web.WebSocketResponse, ctx: TtsContext, fmt: dict[str, Any], fault: Fault | None
    ) -> None:
        """Audio for each text as it arrives; `done` once the input ended and everything was sent."""
        if fault is not None and fault.stall:
            return
        if fault is not None and fault.malformed:
            for text in MALFORMED:
                await ws.send_str(text)
        spoken = 0
        chunks = 0
        chunk_bytes = 8 * self.chunk_ms
        while True:
            if ctx.cancelled:
                return
            if spoken < len(ctx.texts):
                text = ctx.texts[spoken]
                spoken += 1
                audio = tone_ulaw(self.ms_per_char * len(text), hz=220 + 20 * (spoken % 10))
                for i in range(0, len(audio), chunk_bytes):
                    if ctx.cancelled or ws.closed:
                        return
                    if fault is not None and fault.drop_after is not None and chunks >= fault.drop_after:
                        abort(ws)
                        return
                    piece = audio[i : i + chunk_bytes]
                    await ws.send_str(
                        json.dumps(
                            {
                                "type": "chunk",
                                "data": base64.b64encode(piece).decode(),
                                "done": False,
                                "status_code": 206,
                                "step_time": 12.5,
                                "context_id": ctx.context_id,
                                "flush_id": 1,
                            }
                        )
                    )
                    chunks += 1
                    ctx.audio_bytes += len(piece)
                    await asyncio.sleep(self.chunk_ms / 1000 / self.speed if self.speed else 0)
                continue
            if ctx.input_done:
                ctx.completed = True
                await ws.send_str(
                    json.dumps(
                        {"type": "done", "done": True, "status_code": 206, "context_id": ctx.context_id}
                    )
                )
                return
            ctx.wake.clear()
            await ctx.wake.wait()
