"""A fake Speechmatics real-time v2 server (`/v2` websocket + `GET /v2/jobs`) on 127.0.0.1.

It checks what Speechmatics checks: `Authorization: Bearer <key>` at the handshake (else HTTP 401),
`StartRecognition` first and once (raw audio needs an encoding and a sample rate; `max_delay`
0.7-4; `end_of_utterance_silence_trigger` 0-2; a language), no audio before it, then answers
`RecognitionStarted`. Protocol misuse is an `Error {type, reason}` and a close, as Speechmatics does.

It decodes the μ-law audio, runs an energy VAD over 20 ms frames and answers from the audio's own
timeline: `AudioAdded {seq_no}` per frame, `AddPartialTranscript` every `interim_every_ms` of speech
(with `enable_partials`), `AddTranscript` + `EndOfUtterance` after `end_of_utterance_silence_trigger`
of silence (or, without it, `AddTranscript` after `max_delay`), `AddTranscript` + `EndOfUtterance`
after `ForceEndOfUtterance`, and after `EndOfStream` the rest, `EndOfTranscript` and a normal close.
No audio for `idle_timeout_secs`: `Error idle_timeout` and close 1008. Words come from a script.

Fault modes (`Fault`, one per connection in order): refuse the handshake with an HTTP status, an
in-band Error of a type (with its close code) instead of RecognitionStarted, never answer
StartRecognition (stall), drop the TCP connection after N transcripts, malformed messages first.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from patterd.protocols.audio import VOICED_RMS, rms_pcm16, ulaw_to_pcm16
from tests.fakes.speech_timeline import FRAME_MS, FaultQueue, FramedAudio, LoopbackServer, TurnScript

ENCODING_WIDTH = {"mulaw": 1, "pcm_s16le": 2, "pcm_f32le": 4}
MALFORMED = (
    "this is not json",
    '{"message": "AddTranscript"}',
    "[1]",
    '{"message": "AudioAdded", "seq_no": "x"}',
)
CLOSE_CODES = {
    "not_authorised": 4001,
    "insufficient_funds": 4002,
    "not_allowed": 4003,
    "quota_exceeded": 4005,
    "job_error": 4013,
    "internal_error": 1011,
    "idle_timeout": 1008,
}


@dataclass(frozen=True)
class Fault:
    status: int | None = None  # refuse the handshake with this HTTP status
    error_type: str | None = None  # answer StartRecognition with this Error and close
    stall: bool = False  # never answer StartRecognition
    drop_after: int | None = None  # abort the TCP connection after this many transcripts
    malformed: bool = False


@dataclass
class Session:
    headers: dict[str, str]
    query: dict[str, str]
    start: dict[str, Any] | None = None
    audio_bytes: int = 0
    frames: int = 0
    controls: list[dict[str, Any]] = field(default_factory=list)  # JSON messages after StartRecognition
    sent: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def names(self) -> list[str]:
        return [str(c.get("message")) for c in self.controls]


def transcript(kind: str, words: list[str], start: float, end: float) -> dict[str, Any]:
    step = (end - start) / max(len(words), 1)
    results = [
        {
            "type": "word",
            "start_time": round(start + i * step, 3),
            "end_time": round(start + (i + 1) * step, 3),
            "alternatives": [{"content": w, "confidence": 0.96, "language": "en"}],
        }
        for i, w in enumerate(words)
    ]
    text = " ".join(words)
    return {
        "message": kind,
        "format": "2.9",
        "metadata": {
            "transcript": text + " " if text and kind == "AddTranscript" else text,
            "start_time": start,
            "end_time": end,
        },
        "results": results,
    }


class _Recognizer(FramedAudio):
    def __init__(
        self, server: FakeSpeechmaticsServer, session: Session, ws: web.WebSocketResponse, fault: Fault | None
    ) -> None:
        config = (session.start or {}).get("transcription_config", {})
        audio = (session.start or {}).get("audio_format", {})
        self.width = ENCODING_WIDTH[audio["encoding"]]
        super().__init__(ws, int(audio["sample_rate"]) * FRAME_MS // 1000 * self.width)
        self.server = server
        self.session = session
        self.fault = fault
        self.partials = config.get("enable_partials") is True
        trigger = config.get("conversation_config", {}).get("end_of_utterance_silence_trigger")
        self.eou_ms = int(trigger * 1000) if trigger else None
        self.max_delay_ms = int(config.get("max_delay", 4.0) * 1000)
        self.words: list[str] | None = None
        self.heard = 0
        self.start_ms = 0
        self.last_voice_ms = 0
        self.since_partial_ms = 0
        self.silence_ms = 0
        self.transcripts = 0

    async def send(self, message: dict[str, Any]) -> None:
        if self.dropped or self.ws.closed:
            return
        fault = self.fault
        if message["message"] in ("AddTranscript", "AddPartialTranscript"):
            if fault is not None and fault.drop_after is not None and self.transcripts >= fault.drop_after:
                self.drop()
                return
            self.transcripts += 1
        self.session.sent.append(message)
        await self.ws.send_str(json.dumps(message))

    async def frame(self, frame: bytes) -> None:
        self.cursor_ms += FRAME_MS
        voiced = self.width == 1 and rms_pcm16(ulaw_to_pcm16(frame)) >= self.server.vad_threshold
        if voiced:
            if self.words is None:
                self.words = self.server.next_turn().split()
                self.heard = 0
                self.start_ms = self.cursor_ms - FRAME_MS
                self.since_partial_ms = 0
            self.silence_ms = 0
            self.last_voice_ms = self.cursor_ms
            self.since_partial_ms += FRAME_MS
            if (
                self.partials
                and self.since_partial_ms >= self.server.interim_every_ms
                and self.heard < len(self.words)
            ):
                self.since_partial_ms = 0
                self.heard += 1
                await self.send(
                    transcript(
                        "AddPartialTranscript",
                        self.words[: self.heard],
                        self.start_ms / 1000,
                        self.cursor_ms / 1000,
                    )
                )
        elif self.words is not None:
            self.silence_ms += FRAME_MS
            if self.eou_ms is not None and self.silence_ms >= self.eou_ms:
                await self.finalize(eou=True)
            elif self.eou_ms is None and self.silence_ms >= self.max_delay_ms:
                await self.finalize(eou=False)

    async def finalize(self, *, eou: bool) -> None:
        words, self.words = self.words, None
        self.silence_ms = 0
        if not words:
            return
        await self.send(transcript("AddTranscript", words, self.start_ms / 1000, self.last_voice_ms / 1000))
        if eou:
            end = self.cursor_ms / 1000
            await self.send(
                {
                    "message": "EndOfUtterance",
                    "format": "2.9",
                    "metadata": {"start_time": end, "end_time": end},
                }
            )


class FakeSpeechmaticsServer(LoopbackServer, TurnScript, FaultQueue[Fault]):
    """The fake; `async with FakeSpeechmaticsServer() as sm:` then point a client at `sm.url`."""

    def __init__(
        self,
        api_key: str = "sm-test-key",
        *,
        idle_timeout_secs: float = 30.0,
        interim_every_ms: int = 200,
        vad_threshold: int = VOICED_RMS,
    ) -> None:
        self.api_key = api_key
        self.idle_timeout_secs = idle_timeout_secs
        self.interim_every_ms = interim_every_ms
        self.vad_threshold = vad_threshold
        LoopbackServer.__init__(self)
        TurnScript.__init__(self)
        FaultQueue.__init__(self)
        self.sessions: list[Session] = []
        self.refused: list[int] = []  # handshake statuses refused
        self.errors: list[str] = []  # Error types sent
        self.probes = 0
        self.open_connections = 0
        self._stalled: list[asyncio.Event] = []

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v2"

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v2", self._realtime)
        app.router.add_get("/v2/", self._realtime)
        app.router.add_get("/v2/jobs", self._jobs)

    async def __aexit__(self, *exc: object) -> None:
        for event in self._stalled:  # let stalled handlers return before the runner waits for them
            event.set()
        await super().__aexit__(*exc)

    def _key_ok(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    def _refuse(self, status: int) -> web.Response:
        self.refused.append(status)
        reason = {401: "Unauthorized", 403: "Forbidden", 429: "Too Many Requests"}.get(status, "Server Error")
        return web.json_response({"code": status, "error": reason}, status=status)

    async def _jobs(self, request: web.Request) -> web.StreamResponse:
        fault = self.next_fault()
        if not self._key_ok(request):
            return self._refuse(401)
        if fault is not None and fault.status is not None:
            return self._refuse(fault.status)
        self.probes += 1
        return web.json_response({"jobs": []})

    async def _realtime(self, request: web.Request) -> web.StreamResponse:
        fault = self.next_fault()
        if not self._key_ok(request):
            return self._refuse(401)
        if fault is not None and fault.status is not None:
            return self._refuse(fault.status)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        session = Session(dict(request.headers), dict(request.query))
        self.sessions.append(session)
        self.open_connections += 1
        try:
            await self._serve(ws, session, fault)
        finally:
            self.open_connections -= 1
            session.ended.set()
        return ws

    async def _error(self, ws: web.WebSocketResponse, session: Session, kind: str, reason: str) -> None:
        self.errors.append(kind)
        await ws.send_str(json.dumps({"message": "Error", "type": kind, "reason": reason}))
        session.close_code = CLOSE_CODES.get(kind, 1003)
        await ws.close(code=session.close_code, message=kind.encode())

    def _start_problem(self, start: object) -> str | None:
        if not isinstance(start, dict) or start.get("message") != "StartRecognition":
            return "The first message must be StartRecognition."
        audio = start.get("audio_format")
        if not isinstance(audio, dict) or audio.get("type") != "raw":
            return "audio_format.type must be raw (the fake takes raw audio only)."
        if audio.get("encoding") not in ENCODING_WIDTH or not isinstance(audio.get("sample_rate"), int):
            return "raw audio needs encoding (pcm_f32le, pcm_s16le, mulaw) and an integer sample_rate."
        config = start.get("transcription_config")
        if not isinstance(config, dict) or not isinstance(config.get("language"), str):
            return "transcription_config.language is required."
        delay = config.get("max_delay")
        if delay is not None and not (isinstance(delay, int | float) and 0.7 <= delay <= 4):
            return "max_delay must be between 0.7 and 4."
        trigger = config.get("conversation_config", {}).get("end_of_utterance_silence_trigger")
        if trigger is not None and not (isinstance(trigger, int | float) and 0 <= trigger <= 2):
            return "end_of_utterance_silence_trigger must be between 0 and 2."
        return None

    async def _serve(self, ws: web.WebSocketResponse, session: Session, fault: Fault | None) -> None:
        first = await ws.receive()
        if first.type == WSMsgType.BINARY:
            await self._error(ws, session, "protocol_error", "Audio before StartRecognition.")
            return
        if first.type != WSMsgType.TEXT:
            return
        try:
            start = json.loads(first.data)
        except ValueError:
            start = None
        problem = self._start_problem(start)
        if problem is not None:
            kind = "invalid_message" if "first message" in problem else "invalid_config"
            await self._error(ws, session, kind, problem)
            return
        session.start = start
        if fault is not None and fault.stall:
            stalled = asyncio.Event()
            self._stalled.append(stalled)
            await stalled.wait()
            return
        if fault is not None and fault.error_type is not None:
            await self._error(ws, session, fault.error_type, f"fake {fault.error_type}")
            return
        if fault is not None and fault.malformed:
            for text in MALFORMED:
                await ws.send_str(text)
        await ws.send_str(
            json.dumps(
                {
                    "message": "RecognitionStarted",
                    "id": str(uuid.uuid4()),
                    "orchestrator_version": "fake",
                    "language_pack_info": {"language_description": "English", "word_delimiter": " "},
                }
            )
        )
        rec = _Recognizer(self, session, ws, fault)
        while not rec.dropped:
            try:
                msg = await ws.receive(timeout=self.idle_timeout_secs)
            except TimeoutError:
                await self._error(ws, session, "idle_timeout", "No audio received for too long.")
                return
            if msg.type == WSMsgType.BINARY:
                session.audio_bytes += len(msg.data)
                session.frames += 1
                await rec.audio(msg.data)
                await rec.send({"message": "AudioAdded", "seq_no": session.frames})
            elif msg.type == WSMsgType.TEXT:
                try:
                    control = json.loads(msg.data)
                except ValueError:
                    control = None
                if not isinstance(control, dict):
                    await self._error(ws, session, "invalid_message", "Messages must be JSON objects.")
                    return
                session.controls.append(control)
                name = control.get("message")
                if name == "ForceEndOfUtterance":
                    await rec.finalize(eou=True)
                elif name == "EndOfStream":
                    if control.get("last_seq_no") != session.frames:
                        await self._error(
                            ws, session, "protocol_error", "last_seq_no does not match the audio sent."
                        )
                        return
                    await rec.finalize(eou=False)
                    await rec.send({"message": "EndOfTranscript"})
                    session.close_code = 1000
                    await ws.close()
                    return
                else:
                    await self._error(ws, session, "invalid_message", f"Unexpected message {name!r}.")
                    return
            else:
                return
