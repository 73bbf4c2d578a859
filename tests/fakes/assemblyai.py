"""A fake AssemblyAI Universal Streaming v3 server (`/v3/ws` websocket + `GET /v3/token`) on 127.0.0.1.

It checks what AssemblyAI checks: the key alone in `Authorization` (`Bearer <key>` is refused like
a wrong key: an `Error` then close 1008), `speech_model` present, `encoding` pcm_s16le|pcm_mulaw,
a positive integer `sample_rate`, every binary chunk 50-1000 ms long (else `Error` + close 3007),
only JSON control messages it knows (else 3006). After the handshake it sends `Begin`, runs an
energy VAD over the audio in 20 ms frames and speaks from the audio's own timeline: partial `Turn`s
every `partial_every_ms` of speech revealing the scripted words (all but the newest
`word_is_final`), an ended `Turn` after `min_turn_silence` ms of silence (default 400) or at
`ForceEndpoint`, followed by a `turn_is_formatted` copy when `format_turns=true`; `Terminate`
ends the open turn, then `Termination` and a 1000 close.

Faults (`Fault`, one per connection in order): refuse the handshake with an HTTP status and a JSON
`{"error"}` body, close after Begin with a code (3005, 3009, ...), drop the TCP connection after N
Turns, stall (accept and never speak), or send malformed messages first.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from patterd.protocols.audio import VOICED_RMS, rms_pcm16, ulaw_to_pcm16
from tests.fakes.speech_timeline import FRAME_MS, FaultQueue, FramedAudio, LoopbackServer, TurnScript

ENCODINGS = {"pcm_mulaw": 1, "pcm_s16le": 2}  # bytes per sample
CONTROL_TYPES = {"ForceEndpoint", "Terminate", "KeepAlive", "UpdateConfiguration"}
MALFORMED = (
    "this is not json",
    '{"type": "Turn"}',
    "[1, 2, 3]",
    '{"type": "Turn", "turn_order": "x", "transcript": 5, "end_of_turn": "no"}',
    '{"type": "Begin"}',
)


@dataclass(frozen=True)
class Fault:
    """One connection's misbehaviour."""

    status: int | None = None  # refuse the handshake with this HTTP status
    close_code: int | None = None  # close right after Begin with this code (and an Error message)
    drop_after_turns: int | None = None  # abort the TCP connection after this many Turn messages
    stall: bool = False  # accept the upgrade, then say nothing at all
    malformed: bool = False  # send MALFORMED messages right after Begin


@dataclass
class Session:
    """One accepted connection as the server saw it."""

    query: dict[str, str]
    headers: dict[str, str]
    audio_bytes: int = 0
    chunk_ms: list[float] = field(default_factory=list)  # duration of every binary chunk
    controls: list[str] = field(default_factory=list)  # control message types, in order
    sent: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    opened_at: float = field(default_factory=time.monotonic)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def turns(self) -> list[dict[str, Any]]:
        return [m for m in self.sent if m.get("type") == "Turn"]


def formatted(text: str) -> str:
    """What format_turns makes of a transcript: a capital first letter and a full stop."""
    text = text.strip()
    if not text:
        return text
    return text[0].upper() + text[1:] + ("" if text[-1] in ".?!" else ".")


def plain(text: str) -> str:
    """The unformatted words: lower case, no punctuation."""
    return " ".join(w.strip(".,?!").lower() for w in text.split())


class _Recognizer(FramedAudio):
    """The turn state of one session, advanced frame by frame on the audio's timeline."""

    def __init__(self, server: FakeAssemblyAIServer, session: Session, ws: web.WebSocketResponse) -> None:
        q = session.query
        self.width = ENCODINGS[q["encoding"]]
        self.rate = int(q["sample_rate"])
        super().__init__(ws, self.rate * FRAME_MS // 1000 * self.width)
        self.server = server
        self.session = session
        self.format_turns = q.get("format_turns", "false").lower() == "true"
        self.min_silence_ms = int(q.get("min_turn_silence") or q.get("max_turn_silence") or 400)
        self.turn_order = 0
        self.script_text = ""  # the open turn's scripted text, as the formatted final gives it
        self.words: list[str] | None = None  # its plain words
        self.spoken = 0  # words revealed so far
        self.speech_ms = 0
        self.since_partial_ms = 0
        self.silence_ms = 0
        self.turn_start_ms = 0
        self.turns_sent = 0
        self.drop_after: int | None = None

    async def send(self, message: dict[str, Any]) -> None:
        if self.dropped or self.ws.closed:
            return
        if message["type"] == "Turn" and self.drop_after is not None and self.turns_sent >= self.drop_after:
            self.drop()
            return
        self.session.sent.append(message)
        if message["type"] == "Turn":
            self.turns_sent += 1
        await self.ws.send_str(json.dumps(message))

    def voiced(self, frame: bytes) -> bool:
        pcm = ulaw_to_pcm16(frame) if self.width == 1 else frame
        return rms_pcm16(pcm) >= self.server.vad_threshold

    async def frame(self, frame: bytes) -> None:
        self.cursor_ms += FRAME_MS
        if self.voiced(frame):
            if self.words is None:
                self.script_text = self.server.next_turn()
                self.words = plain(self.script_text).split()
                self.spoken = self.speech_ms = self.since_partial_ms = 0
                self.turn_start_ms = self.cursor_ms - FRAME_MS
            self.silence_ms = 0
            self.speech_ms += FRAME_MS
            self.since_partial_ms += FRAME_MS
            if self.since_partial_ms >= self.server.partial_every_ms and self.words:
                self.since_partial_ms = 0
                self.spoken = min(len(self.words), self.spoken + 1)
                await self.turn(end_of_turn=False)
        elif self.words is not None:
            self.silence_ms += FRAME_MS
            if self.silence_ms >= self.min_silence_ms:
                await self.end_turn()

    def word_objects(self, count: int, final_upto: int) -> list[dict[str, Any]]:
        assert self.words is not None
        step = max(self.speech_ms, FRAME_MS) / max(len(self.words), 1)
        return [
            {
                "start": int(self.turn_start_ms + i * step),
                "end": int(self.turn_start_ms + (i + 1) * step),
                "confidence": 0.93,
                "text": w,
                "word_is_final": i < final_upto,
            }
            for i, w in enumerate(self.words[:count])
        ]

    async def turn(self, *, end_of_turn: bool, formatted_copy: bool = False) -> None:
        assert self.words is not None
        count = len(self.words) if end_of_turn else self.spoken
        final_upto = count if end_of_turn else max(0, count - 1)
        text = " ".join(self.words[:final_upto])
        if formatted_copy:
            text = formatted(self.script_text)
        await self.send(
            {
                "type": "Turn",
                "turn_order": self.turn_order,
                "turn_is_formatted": formatted_copy,
                "end_of_turn": end_of_turn,
                "transcript": text,
                "end_of_turn_confidence": 0.9 if end_of_turn else 0.05,
                "words": self.word_objects(count, final_upto),
                "utterance": text if end_of_turn else "",
            }
        )

    async def end_turn(self) -> None:
        """End the open turn (if one holds speech): the plain Turn, then its formatted copy."""
        if self.words is None:
            return
        await self.turn(end_of_turn=True)
        if self.format_turns:
            await self.turn(end_of_turn=True, formatted_copy=True)
        self.words = None
        self.silence_ms = 0
        self.turn_order += 1


class FakeAssemblyAIServer(LoopbackServer, TurnScript, FaultQueue[Fault]):
    """The fake; `async with FakeAssemblyAIServer("key") as aai:` then point a client at `aai.base_url`."""

    def __init__(
        self, api_key: str = "aai-test-key", *, partial_every_ms: int = 200, vad_threshold: int = VOICED_RMS
    ) -> None:
        self.api_key = api_key
        self.partial_every_ms = partial_every_ms
        self.vad_threshold = vad_threshold
        LoopbackServer.__init__(self)
        TurnScript.__init__(self)  # formatted finals keep the said text's words, capitalized
        FaultQueue.__init__(self)
        self.sessions: list[Session] = []
        self.refused: list[int] = []  # HTTP statuses of refused handshakes
        self.probes = 0
        self.open_connections = 0

    @property
    def base_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    # -------- lifecycle

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v3/ws", self._ws)
        app.router.add_get("/v3/token", self._token)

    # -------- HTTP

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == self.api_key

    def _fault(self) -> tuple[Fault | None, web.Response | None]:
        fault = self.next_fault()
        if fault is not None and fault.status is not None:
            self.refused.append(fault.status)
            message = "Too many requests" if fault.status == 429 else "Internal server error"
            if fault.status in (401, 403):
                message = "Invalid API key"
            return fault, web.json_response({"error": message}, status=fault.status)
        return fault, None

    async def _token(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return web.json_response({"error": "Invalid API key"}, status=401)
        refusal = self._fault()[1]
        if refusal is not None:
            return refusal
        expires = request.query.get("expires_in_seconds", "")
        if not expires.isdigit() or not 1 <= int(expires) <= 600:
            return web.json_response({"error": "expires_in_seconds must be 1-600"}, status=400)
        self.probes += 1
        return web.json_response({"token": uuid.uuid4().hex})

    def _param_problem(self, query: dict[str, str]) -> str | None:
        if not query.get("speech_model"):
            return "speech_model is required"
        if query.get("encoding", "pcm_s16le") not in ENCODINGS:
            return f"Invalid encoding: {query.get('encoding')}"
        rate = query.get("sample_rate", "")
        if not rate.isdigit() or int(rate) <= 0:
            return "Sample rate must be a positive integer"
        # The SDK sends Python's `True`/`False` (urlencode of a bool), which AssemblyAI takes.
        if query.get("format_turns", "false").lower() not in ("true", "false"):
            return "format_turns must be a boolean"
        if "keyterms_prompt" in query:
            try:
                terms = json.loads(query["keyterms_prompt"])
            except ValueError:
                terms = None
            if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
                return "keyterms_prompt must be a JSON list of strings"
        return None

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        fault, refusal = self._fault()
        if refusal is not None:
            return refusal
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        query = {k: request.query[k] for k in request.query}
        query.setdefault("encoding", "pcm_s16le")
        session = Session(query, dict(request.headers))
        self.sessions.append(session)
        self.open_connections += 1
        try:
            await self._serve(request, ws, session, fault)
        finally:
            self.open_connections -= 1
            session.ended.set()
        return ws

    async def _error_close(self, ws: web.WebSocketResponse, session: Session, code: int, error: str) -> None:
        message = {"type": "Error", "error_code": code, "error": error}
        session.sent.append(message)
        await ws.send_str(json.dumps(message))
        session.close_code = code
        await ws.close(code=code, message=error.encode())

    async def _serve(
        self, request: web.Request, ws: web.WebSocketResponse, session: Session, fault: Fault | None
    ) -> None:
        if fault is not None and fault.stall:
            async for _ in ws:  # say nothing; wait for the client to give up
                pass
            return
        if not self._authorized(request):
            await self._error_close(ws, session, 1008, "Invalid API key")
            return
        problem = self._param_problem(session.query)
        if problem is not None:
            await self._error_close(ws, session, 3006, problem)
            return
        begin = {"type": "Begin", "id": str(uuid.uuid4()), "expires_at": int(time.time()) + 10800}
        session.sent.append(begin)
        await ws.send_str(json.dumps(begin))
        if fault is not None and fault.close_code is not None:
            await self._error_close(ws, session, fault.close_code, "fault")
            return
        if fault is not None and fault.malformed:
            for text in MALFORMED:
                await ws.send_str(text)
        rec = _Recognizer(self, session, ws)
        rec.drop_after = fault.drop_after_turns if fault is not None else None
        bytes_per_ms = rec.rate * rec.width / 1000
        async for msg in ws:
            if rec.dropped:
                return
            if msg.type == WSMsgType.BINARY:
                ms = len(msg.data) / bytes_per_ms
                session.chunk_ms.append(ms)
                if not 50 <= ms <= 1000:
                    await self._error_close(ws, session, 3007, f"Audio chunk duration {ms:.0f} ms")
                    return
                session.audio_bytes += len(msg.data)
                await rec.audio(msg.data)
            elif msg.type == WSMsgType.TEXT:
                try:
                    obj = json.loads(msg.data)
                    kind = obj.get("type") if isinstance(obj, dict) else None
                except ValueError:
                    kind = None
                if kind not in CONTROL_TYPES:
                    await self._error_close(ws, session, 3006, "Input validation error")
                    return
                session.controls.append(str(kind))
                if kind == "ForceEndpoint":
                    await rec.end_turn()
                elif kind == "Terminate":
                    await rec.end_turn()
                    duration = time.monotonic() - session.opened_at
                    termination = {
                        "type": "Termination",
                        "audio_duration_seconds": int(rec.cursor_ms / 1000),
                        "session_duration_seconds": int(duration),
                    }
                    session.sent.append(termination)
                    if not rec.dropped:
                        await ws.send_str(json.dumps(termination))
                        session.close_code = 1000
                        await ws.close(code=1000)
                    return
            else:
                return
