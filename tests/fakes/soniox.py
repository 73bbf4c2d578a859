"""A fake Soniox real-time STT server (`/transcribe-websocket` + `GET /v1/models`) on 127.0.0.1.

It checks what Soniox checks: the key in `Authorization: Bearer` on the upgrade (a wrong or missing
key, or a key also put in the config, is answered in-band with `{error_code: 401|400, error_message}`
and a close, as every Soniox error is), the config first and once (model; raw formats need
`sample_rate` and `num_channels`; `max_endpoint_delay_ms` in 500-3000), then binary audio.

It decodes the μ-law audio, runs an energy VAD over 20 ms frames and answers from the audio's own
timeline: non-final tokens every `interim_every_ms` of speech (revised, re-sent in each response),
final tokens plus `<end>` after `endpoint_ms` of silence (with `enable_endpoint_detection`), final
tokens plus `<fin>` after `finalize`, and after the empty frame the last finals and
`finished: true`, then a normal close. No audio nor keepalive for `idle_timeout_secs`: error 408.
The words come from a script the test fills, one string per turn.

Fault modes (`Fault`, one per connection in order): refuse the handshake with an HTTP status, an
in-band error code after the config, drop the TCP connection after N responses, malformed messages
first, or stall (take everything, answer nothing).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from patterd.protocols.audio import VOICED_RMS, rms_pcm16, ulaw_to_pcm16
from tests.fakes.speech_timeline import FRAME_MS, FaultQueue, FramedAudio, LoopbackServer, TurnScript

FRAME_BYTES = 160  # 20 ms of 8 kHz μ-law
RAW_FORMATS = {"mulaw", "alaw", "pcm_s16le", "pcm_s16be", "pcm_f32le", "pcm_u8", "pcm_s8"}
MALFORMED = ("this is not json", '{"tokens": 5}', "[1, 2]", '{"tokens": [{"text": 3}]}')
MESSAGES = {
    400: "Bad request.",
    401: "Invalid API key.",
    402: "Organization balance exhausted.",
    403: "Forbidden.",
    408: "Request timeout.",
    429: "Too many concurrent requests.",
    500: "Internal server error.",
    503: "Cannot continue request (code 1). Please restart the request.",
}


@dataclass(frozen=True)
class Fault:
    """One connection's misbehaviour."""

    status: int | None = None  # refuse the upgrade with this HTTP status (a gateway in front)
    error_code: int | None = None  # accept, read the config, answer this in-band error and close
    drop_after: int | None = None  # abort the TCP connection after this many responses
    malformed: bool = False
    stall: bool = False  # take the config and the audio, never answer anything


@dataclass
class Session:
    """One accepted connection as the server saw it."""

    headers: dict[str, str]
    config: dict[str, Any] | None = None
    audio_bytes: int = 0
    controls: list[str] = field(default_factory=list)  # control message types, in order ("<empty>": end)
    sent: list[dict[str, Any]] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def final_text(self) -> str:
        return "".join(
            t["text"] for m in self.sent for t in m.get("tokens", []) if t["is_final"] and t["text"][0] != "<"
        )


class _Recognizer(FramedAudio):
    """One stream's state, advanced frame by frame on the audio's timeline."""

    def __init__(
        self, server: FakeSonioxServer, session: Session, ws: web.WebSocketResponse, fault: Fault | None
    ) -> None:
        super().__init__(ws, FRAME_BYTES)
        self.server = server
        self.session = session
        self.fault = fault
        config = session.config or {}
        self.endpointing = config.get("enable_endpoint_detection") is True
        self.words: list[str] | None = None  # the open turn's words
        self.spoken = 0  # how many of them have been "heard" (shown as non-final)
        self.turn_start_ms = 0
        self.speech_ms = 0
        self.since_interim_ms = 0
        self.silence_ms = 0
        self.final_ms = 0
        self.responses = 0

    def tokens(self, words: list[str], first: int, *, final: bool) -> list[dict[str, Any]]:
        span = max(self.cursor_ms - self.silence_ms - self.turn_start_ms, FRAME_MS)
        step = span / max(len(self.words or words), 1)
        return [
            {
                "text": (" " if first + i else "") + word,
                "start_ms": int(self.turn_start_ms + (first + i) * step),
                "end_ms": int(self.turn_start_ms + (first + i + 1) * step),
                "confidence": 0.97,
                "is_final": final,
            }
            for i, word in enumerate(words)
        ]

    async def send(self, tokens: list[dict[str, Any]], *, finished: bool = False) -> None:
        if self.dropped or self.ws.closed:
            return
        fault = self.fault
        if fault is not None and fault.drop_after is not None and self.responses >= fault.drop_after:
            self.drop()
            return
        message: dict[str, Any] = {
            "tokens": tokens,
            "final_audio_proc_ms": self.final_ms,
            "total_audio_proc_ms": self.cursor_ms,
        }
        if finished:
            message["finished"] = True
        self.responses += 1
        self.session.sent.append(message)
        await self.ws.send_str(json.dumps(message))

    async def frame(self, frame: bytes) -> None:
        self.cursor_ms += FRAME_MS
        if rms_pcm16(ulaw_to_pcm16(frame)) >= self.server.vad_threshold:
            if self.words is None:
                self.words = self.server.next_turn().split()
                self.spoken = 0
                self.turn_start_ms = self.cursor_ms - FRAME_MS
                self.speech_ms = self.since_interim_ms = 0
            self.silence_ms = 0
            self.speech_ms += FRAME_MS
            self.since_interim_ms += FRAME_MS
            if self.since_interim_ms >= self.server.interim_every_ms and self.spoken < len(self.words):
                self.since_interim_ms = 0
                self.spoken += 1
                await self.send(self.tokens(self.words[: self.spoken], 0, final=False))
        elif self.words is not None:
            self.silence_ms += FRAME_MS
            if self.endpointing and self.silence_ms >= self.server.endpoint_ms:
                await self.finalize("<end>")

    async def finalize(self, marker: str | None) -> None:
        """Every word of the open turn as final (the fake hears the whole turn), then the marker."""
        words = self.words or []
        self.final_ms = self.cursor_ms
        tokens = self.tokens(words, 0, final=True) if words else []
        if marker is not None and (words or marker == "<fin>"):
            tokens.append({"text": marker, "is_final": True})
        self.words = None
        self.silence_ms = 0
        if tokens or marker is None:
            await self.send(tokens, finished=marker is None)


class FakeSonioxServer(LoopbackServer, TurnScript, FaultQueue[Fault]):
    """The fake; `async with FakeSonioxServer() as sx:` then point a client at `sx.base_url`."""

    def __init__(
        self,
        api_key: str = "soniox-test-key",
        *,
        idle_timeout_secs: float = 20.0,
        interim_every_ms: int = 200,
        endpoint_ms: int = 500,
        vad_threshold: int = VOICED_RMS,
    ) -> None:
        self.api_key = api_key
        self.idle_timeout_secs = idle_timeout_secs
        self.interim_every_ms = interim_every_ms
        self.endpoint_ms = endpoint_ms
        self.vad_threshold = vad_threshold
        LoopbackServer.__init__(self)
        TurnScript.__init__(self)
        FaultQueue.__init__(self)
        self.sessions: list[Session] = []
        self.errors: list[tuple[int, str]] = []  # (error_code, error_message) sent or refused
        self.probes = 0
        self.open_connections = 0

    @property
    def base_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/transcribe-websocket", self._transcribe)
        app.router.add_get("/v1/models", self._models)

    def _key_ok(self, request: web.Request) -> bool:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        return scheme == "Bearer" and key == self.api_key

    def _api_error(self, status: int, error_type: str, message: str) -> web.Response:
        self.errors.append((status, message))
        body = {"status_code": status, "error_type": error_type, "message": message, "validation_errors": []}
        return web.json_response(body, status=status)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        fault = self.next_fault()
        status = fault.status or fault.error_code if fault is not None else None
        if not self._key_ok(request):
            return self._api_error(401, "unauthenticated", MESSAGES[401])
        if status is not None:
            return self._api_error(status, "error", MESSAGES.get(status, "Error."))
        self.probes += 1
        model = {
            "id": "stt-rt-v4",
            "aliased_model_id": None,
            "name": "Speech-to-Text Real-time v4",
            "context_version": 2,
            "transcription_mode": "real_time",
            "languages": [{"code": "en", "name": "English"}],
            "supports_language_hints_strict": True,
            "supports_max_endpoint_delay": True,
            "translation_targets": [],
            "two_way_translation_pairs": [],
            "one_way_translation": "all_languages",
            "two_way_translation": "all_languages",
        }
        return web.json_response({"models": [model]})

    def _config_problem(self, config: object, key_ok: bool) -> tuple[int, str] | None:
        if not isinstance(config, dict):
            return 400, "The first message must be a JSON config."
        if "api_key" in config:
            return 400, "The API key must not be sent both in the header and in the config."
        if not key_ok:
            return 401, MESSAGES[401]
        if not isinstance(config.get("model"), str):
            return 400, "Missing model."
        audio_format = config.get("audio_format", "auto")
        has_rate = isinstance(config.get("sample_rate"), int) and isinstance(config.get("num_channels"), int)
        if audio_format in RAW_FORMATS and not has_rate:
            return 400, f"audio_format {audio_format} requires sample_rate and num_channels."
        if audio_format != "mulaw":
            return 400, f"The fake decodes mulaw only, not {audio_format}."
        delay = config.get("max_endpoint_delay_ms")
        if delay is not None and (not isinstance(delay, int) or not 500 <= delay <= 3000):
            return 400, "max_endpoint_delay_ms must be between 500 and 3000."
        return None

    async def _error(self, ws: web.WebSocketResponse, code: int, message: str) -> None:
        self.errors.append((code, message))
        await ws.send_str(json.dumps({"error_code": code, "error_type": "error", "error_message": message}))
        await ws.close()

    async def _transcribe(self, request: web.Request) -> web.StreamResponse:
        fault = self.next_fault()
        if fault is not None and fault.status is not None:
            self.errors.append((fault.status, MESSAGES.get(fault.status, "Error.")))
            return web.json_response({"error": MESSAGES.get(fault.status, "Error.")}, status=fault.status)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        session = Session(dict(request.headers))
        self.sessions.append(session)
        self.open_connections += 1
        try:
            await self._serve(ws, session, fault, self._key_ok(request))
        finally:
            self.open_connections -= 1
            session.ended.set()
        return ws

    async def _serve(
        self, ws: web.WebSocketResponse, session: Session, fault: Fault | None, key_ok: bool
    ) -> None:
        try:
            first = await ws.receive(timeout=self.idle_timeout_secs)
        except TimeoutError:
            await self._error(ws, 408, MESSAGES[408])
            return
        if first.type != WSMsgType.TEXT:
            return
        try:
            config = json.loads(first.data)
        except ValueError:
            config = None
        problem = self._config_problem(config, key_ok)
        if problem is not None:
            await self._error(ws, *problem)
            return
        session.config = config
        if fault is not None and fault.error_code is not None:
            await self._error(ws, fault.error_code, MESSAGES.get(fault.error_code, "Error."))
            return
        if fault is not None and fault.stall:
            async for _ in ws:  # until the client goes away
                pass
            return
        if fault is not None and fault.malformed:
            for text in MALFORMED:
                await ws.send_str(text)
        rec = _Recognizer(self, session, ws, fault)
        while not rec.dropped:
            try:
                msg = await ws.receive(timeout=self.idle_timeout_secs)
            except TimeoutError:
                await self._error(ws, 408, MESSAGES[408])
                return
            if msg.type in (WSMsgType.BINARY, WSMsgType.TEXT) and not msg.data:
                session.controls.append("<empty>")  # end of audio: last finals, finished, close
                await rec.finalize(None)
                await ws.close()
                return
            if msg.type == WSMsgType.BINARY:
                session.audio_bytes += len(msg.data)
                await rec.audio(msg.data)
            elif msg.type == WSMsgType.TEXT:
                try:
                    kind = json.loads(msg.data).get("type")
                except (ValueError, AttributeError):
                    kind = None
                session.controls.append(str(kind))
                if kind == "finalize":
                    await rec.finalize("<fin>")
                elif kind != "keepalive":
                    await self._error(ws, 400, f"Unknown control message: {str(msg.data)[:50]}")
                    return
            else:
                return
