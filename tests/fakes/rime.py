"""A fake Rime streaming TTS server (`/ws3` JSON websocket) on 127.0.0.1.

It checks what Rime checks at the upgrade — `Authorization: Bearer <key>` (else 401 with a JSON
`message`), a `speaker`, `audioFormat` pcm|mulaw (mp3 is refused by this fake: it cannot make any),
a numeric `samplingRate` — and then behaves as the docs describe: text is buffered until `.`, `?`
or `!` (or `flush`/`eos`), only the most recent `contextId` is kept and each event carries the one
current when its audio was requested; `chunk` events hold base64 audio in the connection's format
(`ms_per_char` of a tone per character, sent in `chunk_ms` pieces at `speed` times real time, so a
`clear` can arrive mid-sentence); `timestamps` follow each piece of text; `done` {contextId} once a
flush's audio is all sent; `clear` drops the buffer and stops the speech at once; `eos` speaks what
is left and closes; an unreadable message gets an `error` event.

Faults (`Fault`, one per connection in order): refuse the upgrade with a status, drop the TCP
connection after N chunks, stall (accept, never answer), send malformed events first, or answer
text with an `error` event.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from patterd.protocols.audio import ulaw_to_pcm16
from patterd.testing.audio import voiced_ulaw
from tests.fakes.speech_timeline import FaultQueue, LoopbackServer

MALFORMED = (
    "not json at all",
    '{"type": "chunk"}',
    '{"type": "chunk", "data": "***not base64***", "contextId": "x"}',
    "[1, 2]",
    '{"type": "timestamps", "word_timestamps": 5}',
)
TONE = voiced_ulaw(1000)


@dataclass(frozen=True)
class Fault:
    """One connection's misbehaviour."""

    status: int | None = None
    drop_after_chunks: int | None = None
    stall: bool = False
    malformed: bool = False
    error: str | None = None  # answer the first text with this `error` event (and speak nothing)


@dataclass
class Connection:
    """One accepted websocket as the server saw it."""

    query: dict[str, str]
    headers: dict[str, str]
    received: list[dict[str, Any]] = field(default_factory=list)  # every client message, parsed
    chunks_sent: int = 0
    done_sent: list[str | None] = field(default_factory=list)
    cleared: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def operations(self) -> list[str]:
        return [str(m["operation"]) for m in self.received if "operation" in m]


def audio_for(text: str, ms_per_char: int, pcm: bool) -> bytes:
    """`ms_per_char` of tone per character, as μ-law (or 16-bit PCM)."""
    n = 8 * ms_per_char * len(text)
    ulaw = (TONE * (n // len(TONE) + 1))[:n]
    return ulaw_to_pcm16(ulaw) if pcm else ulaw


class _Speaker:
    """One connection's buffer, context and speech, as Rime keeps them."""

    def __init__(
        self, server: FakeRimeServer, conn: Connection, ws: web.WebSocketResponse, fault: Fault | None
    ):
        self.server = server
        self.conn = conn
        self.ws = ws
        self.fault = fault
        self.pcm = conn.query.get("audioFormat") == "pcm"
        self.buffer = ""
        self.context: str | None = None
        self.queue: asyncio.Queue[tuple[str, str | None, bool]] = asyncio.Queue()  # (text, ctx, done after)
        self.task = asyncio.create_task(self._speak())
        self.busy = False
        self.dropped = False
        self.malformed_sent = False

    async def send(self, message: dict[str, Any]) -> None:
        if not self.ws.closed and not self.dropped:
            await self.ws.send_str(json.dumps(message))

    def enqueue_ready(self) -> None:
        """Move buffered text up to its last terminal punctuation into the speech queue."""
        cut = max(self.buffer.rfind(p) for p in ".?!")
        if cut >= 0:
            text, self.buffer = self.buffer[: cut + 1], self.buffer[cut + 1 :]
            if text.strip():
                self.queue.put_nowait((text, self.context, False))

    def flush(self) -> None:
        text, self.buffer = self.buffer, ""
        self.queue.put_nowait((text, self.context, True))

    async def clear(self) -> None:
        self.buffer = ""
        self.conn.cleared += 1
        while not self.queue.empty():
            self.queue.get_nowait()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.busy = False
        self.task = asyncio.create_task(self._speak())

    async def _speak(self) -> None:
        server = self.server
        while True:
            text, context, done_after = await self.queue.get()
            self.busy = True
            if self.fault is not None and self.fault.malformed and not self.malformed_sent:
                self.malformed_sent = True
                for raw in MALFORMED:
                    await self.ws.send_str(raw)
            audio = audio_for(text.strip(), server.ms_per_char, self.pcm)
            step = 8 * server.chunk_ms * (2 if self.pcm else 1)
            for at in range(0, len(audio), step):
                drop = self.fault.drop_after_chunks if self.fault is not None else None
                if drop is not None and self.conn.chunks_sent >= drop:
                    self.dropped = True
                    transport = self.ws._req.transport if self.ws._req is not None else None
                    if transport is not None:
                        transport.abort()
                    return
                piece = audio[at : at + step]
                await self.send(
                    {"type": "chunk", "data": base64.b64encode(piece).decode(), "contextId": context}
                )
                self.conn.chunks_sent += 1
                await asyncio.sleep(
                    server.chunk_ms / 1000 / server.speed
                )  # faster than real time, not instant
            if text.strip():
                words = text.split()
                step_s = server.ms_per_char * len(text) / 1000 / max(len(words), 1)
                await self.send(
                    {
                        "type": "timestamps",
                        "word_timestamps": {
                            "words": words,
                            "start": [round(i * step_s, 3) for i in range(len(words))],
                            "end": [round((i + 1) * step_s, 3) for i in range(len(words))],
                        },
                        "contextId": context,
                    }
                )
            if done_after:
                await self.send({"type": "done", "contextId": context})
                self.conn.done_sent.append(context)
                server.completed += 1
            self.busy = self.queue.qsize() > 0


class FakeRimeServer(LoopbackServer, FaultQueue[Fault]):
    """The fake; `async with FakeRimeServer("key") as rime:` then point a client at `rime.base_url`."""

    def __init__(
        self, api_key: str = "rime-test-key", *, ms_per_char: int = 60, chunk_ms: int = 100, speed: float = 50
    ):
        self.api_key = api_key
        self.ms_per_char = ms_per_char
        self.chunk_ms = chunk_ms
        self.speed = speed
        LoopbackServer.__init__(self)
        FaultQueue.__init__(self)
        self.connections: list[Connection] = []
        self.refused: list[int] = []
        self.completed = 0  # flushes whose audio was all sent (`done`)
        self._speakers: list[_Speaker] = []
        self._open = 0

    # -------- control

    def texts(self) -> list[str]:
        return [str(m["text"]) for c in self.connections for m in c.received if "text" in m]

    def open_sockets(self) -> int:
        return self._open

    def speaking(self) -> int:
        """Connections with speech in progress or queued."""
        return sum(1 for s in self._speakers if not s.ws.closed and (s.busy or s.queue.qsize() > 0))

    @property
    def base_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    # -------- lifecycle

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/ws3", self._ws)

    async def __aexit__(self, *exc: object) -> None:
        for speaker in self._speakers:
            speaker.task.cancel()
        await super().__aexit__(*exc)

    # -------- handshake

    def _problem(self, request: web.Request) -> web.Response | None:
        fault = self.faults[0] if self.faults else None
        if fault is not None and fault.status is not None:
            self.faults.popleft()
            self.refused.append(fault.status)
            return web.json_response({"message": f"fault {fault.status}"}, status=fault.status)
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            self.refused.append(401)
            return web.json_response({"message": "Unauthorized: invalid API key"}, status=401)
        q = request.query
        if not q.get("speaker"):
            return web.json_response({"message": "speaker is required"}, status=400)
        if q.get("audioFormat", "mp3") not in ("pcm", "mulaw"):
            return web.json_response(
                {"message": f"audioFormat {q.get('audioFormat', 'mp3')} not served here"}, status=400
            )
        if not q.get("samplingRate", "24000").isdigit():
            return web.json_response({"message": "samplingRate must be an integer"}, status=400)
        return None

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        problem = self._problem(request)
        if problem is not None:
            return problem
        fault = self.next_fault()
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn = Connection({k: request.query[k] for k in request.query}, dict(request.headers))
        self.connections.append(conn)
        self._open += 1
        speaker = _Speaker(self, conn, ws, fault)
        self._speakers.append(speaker)
        try:
            await self._serve(ws, conn, speaker, fault)
        finally:
            speaker.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await speaker.task
            self._open -= 1
            conn.closed.set()
        return ws

    async def _serve(
        self, ws: web.WebSocketResponse, conn: Connection, speaker: _Speaker, fault: Fault | None
    ) -> None:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                await speaker.send({"type": "error", "message": "messages must be JSON text"})
                continue
            try:
                obj = json.loads(msg.data)
            except ValueError:
                obj = None
            if not isinstance(obj, dict):
                await speaker.send({"type": "error", "message": "invalid JSON message"})
                continue
            conn.received.append(obj)
            if fault is not None and fault.stall:
                continue  # heard, never answered
            if "text" in obj:
                if not isinstance(obj["text"], str) or not isinstance(obj.get("contextId", ""), str | None):
                    await speaker.send({"type": "error", "message": "text must be a string"})
                    continue
                if fault is not None and fault.error is not None:
                    await speaker.send({"type": "error", "message": fault.error})
                    continue
                speaker.buffer += obj["text"]
                if "contextId" in obj:
                    speaker.context = obj["contextId"]
                speaker.enqueue_ready()
            elif obj.get("operation") == "flush":
                speaker.flush()
            elif obj.get("operation") == "clear":
                await speaker.clear()
            elif obj.get("operation") == "eos":
                speaker.flush()
                while speaker.busy or speaker.queue.qsize() > 0:
                    await asyncio.sleep(0.005)
                await ws.close()
                return
            else:
                await speaker.send({"type": "error", "message": f"unknown message {sorted(obj)}"})
