"""A fake Deepgram live STT server (`/v1/listen` websocket + `GET /v1/projects`) on 127.0.0.1.

It checks what Deepgram checks at the handshake — `Authorization: Token <key>` (a `Bearer` key is a
401, as a key is not a temporary token), raw encodings need `sample_rate`, `utterance_end_ms` needs
`interim_results=true` and ≥ 1000, `keyterm` only on Nova-3 and `keywords` not on it — and answers
refusals with the HTTP status, a `dg-error` header and Deepgram's JSON error body.

After the handshake it decodes the audio (mulaw, alaw or linear16), runs an energy VAD over 20 ms
frames and speaks Deepgram's messages from the audio's own timeline (never the wall clock):
interim `Results` every `interim_every_ms` of speech, `is_final` segments after `segment_ms` of
speech, `is_final`+`speech_final` after `endpointing` ms of silence, `UtteranceEnd` when
`utterance_end_ms` of audio followed the last word, `from_finalize` after `Finalize`, `Metadata`
and a 1000 close after `CloseStream`, and 1011 (NET-0001) when neither audio nor a message came for
`idle_timeout_secs` (10 s at Deepgram). The words come from a script the test fills: one entry per
turn, a string or a list of segments.

Fault modes (`Fault`, one per connection in order): refuse the handshake with a status, drop the
TCP connection after N results without a close frame, or send malformed messages first.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from patterd.protocols.audio import (
    VOICED_RMS,
    alaw_to_ulaw,
    pcm16_to_ulaw,
    rms_pcm16,
    silence_ulaw,
    ulaw_to_pcm16,
)
from tests.fakes.speech_timeline import FRAME_MS, FaultQueue, FramedAudio, LoopbackServer

RAW_ENCODINGS = {"linear16", "linear32", "flac", "alaw", "mulaw", "amr-nb", "amr-wb", "opus", "speex", "g729"}
DECODABLE = {"mulaw", "alaw", "linear16"}
NET_0001 = (
    "Deepgram did not receive audio data or a text message within the timeout window. "
    "See https://dpgr.am/net0001"
)
MALFORMED = ("this is not json", '{"type": "Results"}', "[1, 2, 3]", '{"type": "Results", "start": "x"}')


def tone_ulaw(ms: int, hz: float = 440.0, amplitude: int = 8000) -> bytes:
    """`ms` of a loud sine as 8 kHz μ-law: "speech" to the fake's energy VAD."""
    n = 8 * ms
    pcm = b"".join(
        int(amplitude * math.sin(2 * math.pi * hz * i / 8000)).to_bytes(2, "little", signed=True)
        for i in range(n)
    )
    return pcm16_to_ulaw(pcm)


def silence(ms: int) -> bytes:
    """`ms` of μ-law silence."""
    return silence_ulaw(ms)


def frames(audio: bytes, size: int = 160) -> list[bytes]:
    """Audio cut in 20 ms frames, as a carrier delivers it."""
    return [audio[i : i + size] for i in range(0, len(audio), size)]


@dataclass(frozen=True)
class Fault:
    """One connection's misbehaviour."""

    status: int | None = None  # refuse the handshake with this HTTP status
    dg_error: str = "Internal server error."
    drop_after_results: int | None = None  # abort the TCP connection after this many Results
    malformed: bool = False  # send MALFORMED messages before anything else


@dataclass
class Session:
    """One accepted connection as the server saw it."""

    query: dict[str, list[str]]
    headers: dict[str, str]
    audio_bytes: int = 0
    controls: list[str] = field(default_factory=list)  # control message types, in order
    sent: list[dict[str, Any]] = field(default_factory=list)  # every JSON message sent
    close_code: int | None = None  # what the server closed with (None: the client closed or it dropped)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    def results(self) -> list[dict[str, Any]]:
        return [m for m in self.sent if m.get("type") == "Results"]

    def finals(self) -> list[str]:
        return [m["channel"]["alternatives"][0]["transcript"] for m in self.results() if m["is_final"]]


def error_response(status: int, message: str, code: str, request_id: str) -> web.Response:
    """A refusal as Deepgram sends it: the status, `dg-error`, `dg-request-id` and a JSON body."""
    body = {"err_code": code, "err_msg": message, "request_id": request_id}
    return web.json_response(body, status=status, headers={"dg-error": message, "dg-request-id": request_id})


class _Listener(FramedAudio):
    """The transcription state of one stream, advanced frame by frame on the audio's timeline."""

    def __init__(
        self, server: FakeDeepgramServer, session: Session, ws: web.WebSocketResponse, fault: Fault | None
    ) -> None:
        q = session.param
        self.encoding = q("encoding") or ""
        self.rate = int(q("sample_rate") or 8000)
        self.width = 2 if self.encoding == "linear16" else 1
        super().__init__(ws, self.rate * FRAME_MS // 1000 * self.width)
        self.server = server
        self.server_fault = fault
        self.session = session
        self.request_id = str(uuid.uuid4())
        self.interim = q("interim_results") == "true"
        endpointing = q("endpointing")
        self.endpointing_ms: int | None = (
            None if endpointing == "false" else int(endpointing) if endpointing not in (None, "true") else 10
        )
        self.utterance_end_ms = int(q("utterance_end_ms") or 0) or None
        self.turn: list[str] | None = None  # segments of the open turn
        self.segment = 0  # index of the segment being spoken
        self.seg_start_ms = 0
        self.seg_speech_ms = 0
        self.since_interim_ms = 0
        self.interims_in_segment = 0
        self.in_speech = False
        self.silence_ms = 0
        self.last_word_end_ms: int | None = None
        self.final_since_utterance_end = False
        self.results_sent = 0

    async def send(self, message: dict[str, Any]) -> None:
        fault = self.server_fault
        if (
            message["type"] == "Results"
            and fault is not None
            and fault.drop_after_results is not None
            and self.results_sent >= fault.drop_after_results
        ):
            self.drop()
            return
        if self.dropped or self.ws.closed:
            return
        self.session.sent.append(message)
        if message["type"] == "Results":
            self.results_sent += 1
        await self.ws.send_str(json.dumps(message))

    # -------- audio

    def voiced(self, frame: bytes) -> bool:
        if self.encoding == "mulaw":
            pcm = ulaw_to_pcm16(frame)
        elif self.encoding == "alaw":
            pcm = ulaw_to_pcm16(alaw_to_ulaw(frame))
        else:
            pcm = frame
        return rms_pcm16(pcm) >= self.server.vad_threshold

    async def frame(self, frame: bytes) -> None:
        self.cursor_ms += FRAME_MS
        if self.voiced(frame):
            if self.turn is None:
                self.turn = self.server.next_turn()
                self.segment = 0
                self.seg_start_ms = self.cursor_ms - FRAME_MS
                self.seg_speech_ms = self.since_interim_ms = self.interims_in_segment = 0
            self.in_speech = True
            self.silence_ms = 0
            self.last_word_end_ms = self.cursor_ms
            self.seg_speech_ms += FRAME_MS
            self.since_interim_ms += FRAME_MS
            if self.seg_speech_ms >= self.server.segment_ms and self.segment < len(self.turn) - 1:
                await self.final(self.turn[self.segment], speech_final=False)
                self.segment += 1
                self.seg_start_ms, self.seg_speech_ms, self.interims_in_segment = self.cursor_ms, 0, 0
                self.since_interim_ms = 0
            elif self.interim and self.since_interim_ms >= self.server.interim_every_ms:
                self.since_interim_ms = 0
                self.interims_in_segment += 1
                words = self.turn[self.segment].split()
                await self.result(" ".join(words[: self.interims_in_segment]), is_final=False)
        elif self.in_speech:
            self.silence_ms += FRAME_MS
            # Without endpointing Deepgram still finalizes segments on its own; the fake does so after 500 ms.
            limit = self.endpointing_ms if self.endpointing_ms is not None else 500
            if self.silence_ms >= limit:
                await self.close_turn(speech_final=self.endpointing_ms is not None)
        if (
            self.utterance_end_ms is not None
            and self.final_since_utterance_end
            and self.last_word_end_ms is not None
            and self.cursor_ms - self.last_word_end_ms >= self.utterance_end_ms
        ):
            self.final_since_utterance_end = False
            await self.send(
                {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": self.last_word_end_ms / 1000}
            )

    async def close_turn(self, *, speech_final: bool, from_finalize: bool = False) -> None:
        """Finalize everything heard of the open turn (the rest of its segments)."""
        text = " ".join(self.turn[self.segment :]) if self.turn is not None else ""
        await self.final(text, speech_final=speech_final, from_finalize=from_finalize)
        self.turn = None
        self.in_speech = False
        self.silence_ms = 0

    async def final(self, text: str, *, speech_final: bool, from_finalize: bool = False) -> None:
        await self.result(text, is_final=True, speech_final=speech_final, from_finalize=from_finalize)
        self.seg_start_ms = self.cursor_ms
        if text:
            self.final_since_utterance_end = True

    async def result(
        self, text: str, *, is_final: bool, speech_final: bool = False, from_finalize: bool = False
    ) -> None:
        start = self.seg_start_ms / 1000
        duration = (self.cursor_ms - self.seg_start_ms) / 1000
        words = text.split()
        end = (self.last_word_end_ms or self.cursor_ms) / 1000
        step = max(end - start, 0.0) / max(len(words), 1)
        await self.send(
            {
                "type": "Results",
                "channel_index": [0, 1],
                "duration": round(duration, 3),
                "start": round(start, 3),
                "is_final": is_final,
                "speech_final": speech_final,
                "from_finalize": from_finalize,
                "channel": {
                    "alternatives": [
                        {
                            "transcript": text,
                            "confidence": 0.98 if text else 0.0,
                            "words": [
                                {
                                    "word": w.strip(".,?!").lower(),
                                    "start": round(start + i * step, 3),
                                    "end": round(start + (i + 1) * step, 3),
                                    "confidence": 0.98,
                                    "punctuated_word": w,
                                }
                                for i, w in enumerate(words)
                            ],
                        }
                    ]
                },
                "metadata": {
                    "request_id": self.request_id,
                    "model_info": {"name": "general-nova-3", "version": "2025-01-01.0", "arch": "nova-3"},
                    "model_uuid": "00000000-0000-0000-0000-000000000003",
                },
            }
        )

    async def metadata(self) -> None:
        await self.send(
            {
                "type": "Metadata",
                "transaction_key": "deprecated",
                "request_id": self.request_id,
                "sha256": "0" * 64,
                "created": datetime.datetime.now(datetime.UTC).isoformat(),
                "duration": self.cursor_ms / 1000,
                "channels": 1,
            }
        )


class FakeDeepgramServer(LoopbackServer, FaultQueue[Fault]):
    """The fake; `async with FakeDeepgramServer() as dg:` then point a client at `dg.base_url`."""

    def __init__(
        self,
        api_key: str = "dg-test-key",
        *,
        idle_timeout_secs: float = 10.0,
        interim_every_ms: int = 200,
        segment_ms: int = 2000,
        vad_threshold: int = VOICED_RMS,
        answer_finalize: bool = True,
    ) -> None:
        self.api_key = api_key
        self.idle_timeout_secs = idle_timeout_secs
        self.interim_every_ms = interim_every_ms
        self.segment_ms = segment_ms
        self.vad_threshold = vad_threshold
        # False: Finalize is taken but never answered (Deepgram documents that the answer can be missing)
        self.answer_finalize = answer_finalize
        LoopbackServer.__init__(self)
        FaultQueue.__init__(self)
        # segments per turn (unlike TurnScript's one string), finalized one by one
        self.script: collections.deque[list[str]] = collections.deque()
        self.sessions: list[Session] = []
        self.refused: list[tuple[int, str]] = []  # (status, dg-error) of refused handshakes
        self.probes = 0
        self.open_connections = 0
        self.new_session = asyncio.Event()

    # -------- scripting

    def say(self, *turns: str | Sequence[str]) -> None:
        """Queue what the next turns say: a string, or a list of segments finalized one by one."""
        for turn in turns:
            self.script.append([turn] if isinstance(turn, str) else list(turn))

    def next_turn(self) -> list[str]:
        return self.script.popleft() if self.script else [""]

    @property
    def base_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    # -------- lifecycle

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/listen", self._listen)
        app.router.add_get("/v1/projects", self._projects)

    # -------- handshake

    def _refuse(self, status: int, message: str, code: str) -> web.Response:
        self.refused.append((status, message))
        return error_response(status, message, code, str(uuid.uuid4()))

    def _auth_problem(self, request: web.Request) -> web.Response | None:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "token" and key == self.api_key:
            return None
        return self._refuse(401, "Invalid credentials.", "INVALID_AUTH")

    def _fault_problem(self) -> tuple[Fault | None, web.Response | None]:
        fault = self.next_fault()
        if fault is not None and fault.status is not None:
            code = "TOO_MANY_REQUESTS" if fault.status == 429 else "INTERNAL_SERVER_ERROR"
            return fault, self._refuse(fault.status, fault.dg_error, code)
        return fault, None

    def _param_problem(self, request: web.Request) -> web.Response | None:
        q = request.query
        encoding = q.get("encoding")
        if encoding is None:
            return self._refuse(400, "The fake accepts raw audio only: set encoding.", "Bad Request")
        if encoding not in RAW_ENCODINGS:
            return self._refuse(400, f"Unsupported encoding: {encoding}.", "Bad Request")
        if "sample_rate" not in q:
            return self._refuse(
                400, "sample_rate is required when encoding is set for raw audio.", "Bad Request"
            )
        if not q["sample_rate"].isdigit() or encoding not in DECODABLE:
            return self._refuse(400, f"Cannot decode {encoding} at {q['sample_rate']} Hz.", "Bad Request")
        model = q.get("model", "base")
        if "keyterm" in q and not model.startswith("nova-3"):
            return self._refuse(400, "Keyterm prompting is only available with Nova-3.", "Bad Request")
        if "keywords" in q and model.startswith("nova-3"):
            return self._refuse(400, "Keywords are not supported with Nova-3; use keyterm.", "Bad Request")
        if "utterance_end_ms" in q:
            value = q["utterance_end_ms"]
            if q.get("interim_results") != "true":
                return self._refuse(400, "utterance_end_ms requires interim_results=true.", "Bad Request")
            if not value.isdigit() or int(value) < 1000:
                return self._refuse(400, "utterance_end_ms must be an integer >= 1000.", "Bad Request")
        endpointing = q.get("endpointing")
        if endpointing is not None and endpointing not in ("true", "false") and not endpointing.isdigit():
            return self._refuse(400, f"Invalid endpointing value: {endpointing}.", "Bad Request")
        return None

    async def _projects(self, request: web.Request) -> web.StreamResponse:
        problem = self._auth_problem(request) or self._fault_problem()[1]
        if problem is not None:
            return problem
        self.probes += 1
        return web.json_response({"projects": [{"project_id": str(uuid.uuid4()), "name": "fake"}]})

    async def _listen(self, request: web.Request) -> web.StreamResponse:
        problem = self._auth_problem(request)
        if problem is not None:
            return problem
        fault, refusal = self._fault_problem()
        if refusal is not None:
            return refusal
        problem = self._param_problem(request)
        if problem is not None:
            return problem
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        session = Session({k: request.query.getall(k) for k in request.query}, dict(request.headers))
        self.sessions.append(session)
        self.new_session.set()
        self.open_connections += 1
        listener = _Listener(self, session, ws, fault)
        try:
            await self._serve(listener, fault)
        finally:
            self.open_connections -= 1
            session.ended.set()
        return ws

    async def _serve(self, listener: _Listener, fault: Fault | None) -> None:
        ws, session = listener.ws, listener.session
        if fault is not None and fault.malformed:
            for text in MALFORMED:
                await ws.send_str(text)
        while not listener.dropped:
            try:
                msg = await ws.receive(timeout=self.idle_timeout_secs)
            except TimeoutError:
                session.close_code = 1011
                await ws.close(code=1011, message=NET_0001.encode())
                return
            if msg.type == WSMsgType.BINARY:
                if not msg.data:  # the deprecated way to close: an empty binary frame
                    await self._close_stream(listener)
                    return
                session.audio_bytes += len(msg.data)
                await listener.audio(msg.data)
            elif msg.type == WSMsgType.TEXT:
                try:
                    kind = json.loads(msg.data).get("type")
                except (ValueError, AttributeError):
                    kind = "(invalid)"
                session.controls.append(str(kind))
                if kind == "Finalize" and self.answer_finalize:
                    await listener.close_turn(speech_final=False, from_finalize=True)
                elif kind == "CloseStream":
                    await self._close_stream(listener)
                    return
            else:  # CLOSE, CLOSING, CLOSED, ERROR: the client went away
                return

    async def _close_stream(self, listener: _Listener) -> None:
        """Finalize what is open, send Metadata, close normally."""
        if listener.turn is not None:
            await listener.close_turn(speech_final=False)
        await listener.metadata()
        ws = listener.ws
        if not listener.dropped and not ws.closed:
            listener.session.close_code = 1000
            await ws.close(code=1000)
