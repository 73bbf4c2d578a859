"""A protocol-faithful fake of ElevenLabs Conversational AI (Agents) on 127.0.0.1: REST and the conversation socket.

Follows elevenlabs-python `conversational_ai/conversation.py` and its REST client: `GET
/v1/convai/conversation/get-signed-url?agent_id=` and `GET /v1/convai/agents/{id}` with `xi-api-key`
(401 with the vendor's `detail` body otherwise, 404 for an unknown agent); the websocket
`/v1/convai/conversation?agent_id=` is open for a public agent and needs a one-time
`conversation_signature` (or `xi-api-key`) for a private one (403). The first client frame must be
`conversation_initiation_client_data`; an override the agent does not allow closes the socket
with 1008 as the server does. It answers with `conversation_initiation_metadata` in the agent's
formats, speaks the first message, runs an energy VAD on decoded `user_audio_chunk`s (a caller
turn ends in `user_transcript` and a scripted reply: paced `audio` with one event_id per reply and
the full text as `agent_response` sent with its first chunk (before it: `response_first`), or a
`client_tool_call` whose `client_tool_result` it waits for), interrupts a
reply the caller talks over (`interruption` with the reply's event_id, then
`agent_response_correction`), and pings, checking that each `pong` names its event_id.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from patterd.protocols.audio import Resampler, pcm16_to_ulaw, rms_pcm16, ulaw_to_pcm16
from tests.fakes.openai_realtime import speak_pcm24

AGENT_ID = "agent_test_0001"
API_KEY = "xi-test-key"
FORMATS = ("ulaw_8000", "pcm_8000", "pcm_16000", "pcm_22050", "pcm_24000", "pcm_44100", "pcm_48000")
# Keys of conversation_initiation_client_data (the SDK sends the last three too).
INITIATION_KEYS = frozenset(
    {
        "type",
        "conversation_config_override",
        "dynamic_variables",
        "custom_llm_extra_body",
        "source_info",
        "user_id",
    }
)


@dataclass(frozen=True)
class Say:
    """An agent reply: `text` spoken (espeak-ng) in the agent's output format."""

    text: str


@dataclass(frozen=True)
class CallTool:
    """The agent calls a client tool, waits for its result, then goes on with the next reply."""

    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


Reply = Say | CallTool


@dataclass
class Agent:
    """The agent's configuration at ElevenLabs."""

    agent_id: str = AGENT_ID
    private: bool = True
    first_message: str = ""
    input_format: str = "ulaw_8000"
    output_format: str = "ulaw_8000"
    # Security → overrides the agent allows (the server refuses others).
    allowed_overrides: frozenset[str] = frozenset({"prompt", "first_message", "language", "voice_id"})


def _rate(fmt: str) -> int:
    return int(fmt.rsplit("_", 1)[1])


def render(text: str, fmt: str) -> bytes:
    """`text` spoken, in an agent output format."""
    pcm24 = speak_pcm24(text)
    rate = _rate(fmt)
    pcm = pcm24 if rate == 24000 else Resampler(24000, rate, quality="HQ").process(pcm24, last=True)
    return pcm16_to_ulaw(pcm) if fmt == "ulaw_8000" else pcm


class _Conversation:
    """One websocket conversation."""

    def __init__(self, fake: FakeConvAIServer, ws: web.WebSocketResponse, agent: Agent) -> None:
        self.fake = fake
        self.ws = ws
        self.agent = agent
        self.id = f"conv_{secrets.token_hex(6)}"
        self.event_ids = itertools.count(1)
        self.pending = b""
        self.speech_frames = 0
        self.silence_ms = 0.0
        self.in_speech = False
        self.reply_task: asyncio.Task[None] | None = None
        self.reply_event_id = 0
        self.reply_words: list[str] = []
        self.sent_words = 0
        self.cancelled = False
        self.tool_results: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.pings: dict[int, float] = {}  # event_id → sent at
        self.variables: dict[str, Any] = {}
        self.override: dict[str, Any] = {}

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message))
        self.fake.sent.append(message)

    # -------------------------------------------------------------- start

    async def start(self, first: dict[str, Any]) -> bool:
        """Check the initiation frame; False when the socket was closed for it."""
        if first.get("type") != "conversation_initiation_client_data" or set(first) - INITIATION_KEYS:
            await self.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"Invalid message received")
            return False
        override = first.get("conversation_config_override") or {}
        agent_part = override.get("agent") or {}
        asked = set()
        if "prompt" in agent_part:
            asked.add("prompt")
        asked |= {k for k in ("first_message", "language") if k in agent_part}
        if "voice_id" in (override.get("tts") or {}):
            asked.add("voice_id")
        refused = sorted(asked - self.agent.allowed_overrides)
        if refused:
            await self.ws.close(
                code=WSCloseCode.POLICY_VIOLATION,
                message=f"Override for field '{refused[0]}' is not allowed by config.".encode(),
            )
            return False
        self.override = override
        self.variables = dict(first.get("dynamic_variables") or {})
        self.fake.initiations.append(first)
        await self.send(
            {
                "type": "conversation_initiation_metadata",
                "conversation_initiation_metadata_event": {
                    "conversation_id": self.id,
                    "agent_output_audio_format": self.agent.output_format,
                    "user_input_audio_format": self.agent.input_format,
                },
            }
        )
        greeting = agent_part.get("first_message", self.agent.first_message)
        if greeting:
            self.start_reply(Say(greeting))
        return True

    # -------------------------------------------------------------- client frames

    async def handle(self, raw: str) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            await self.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"Invalid message received")
            return
        self.fake.received.append(message)
        self.fake.notify()
        if not isinstance(message, dict):
            return
        if "user_audio_chunk" in message:
            await self.on_audio(message["user_audio_chunk"])
            return
        kind = message.get("type")
        if kind == "pong":
            sent = self.pings.pop(message.get("event_id"), None)  # type: ignore[arg-type]
            if sent is None:
                self.fake.bad_pongs += 1
            else:
                self.fake.pong_ms.append((asyncio.get_running_loop().time() - sent) * 1000)
        elif kind == "client_tool_result":
            future = self.tool_results.pop(str(message.get("tool_call_id")), None)
            if future is None or not isinstance(message.get("result"), str):
                self.fake.bad_tool_results += 1
            else:
                self.fake.tool_results.append(message)
                future.set_result(message)
        elif kind == "user_message":
            self.fake.user_messages.append(str(message.get("text")))
            if self.reply_task is None or self.reply_task.done():
                self.start_reply(self.fake.next_reply())
        elif kind == "contextual_update":
            self.fake.contextual_updates.append(str(message.get("text")))
        elif kind != "user_activity":
            self.fake.unknown_client.append(message)

    async def on_audio(self, chunk: Any) -> None:
        try:
            audio = base64.b64decode(chunk, validate=True)
        except (binascii.Error, ValueError, TypeError):
            self.fake.bad_audio += 1
            return
        self.fake.audio_bytes_in += len(audio)
        fmt = self.agent.input_format
        ulaw = fmt == "ulaw_8000"
        frame = 160 if ulaw else _rate(fmt) // 50 * 2
        buf = self.pending + audio
        n = len(buf) - len(buf) % frame
        self.pending = buf[n:]
        for i in range(0, n, frame):
            piece = buf[i : i + frame]
            await self.vad(rms_pcm16(ulaw_to_pcm16(piece) if ulaw else piece))

    async def vad(self, rms: int) -> None:
        loud = rms > self.fake.vad_rms
        if not self.in_speech:
            self.speech_frames = self.speech_frames + 1 if loud else 0
            if self.speech_frames >= 3:
                self.in_speech, self.silence_ms = True, 0.0
                if self.reply_task is not None and not self.reply_task.done():
                    await self.interrupt()
            return
        self.silence_ms = 0.0 if loud else self.silence_ms + 20
        if self.silence_ms >= self.fake.silence_ms:
            self.in_speech, self.speech_frames = False, 0
            transcript = self.fake.next_transcript()
            self.fake.user_turns.append(transcript)
            await self.send(
                {"type": "user_transcript", "user_transcription_event": {"user_transcript": transcript}}
            )
            if self.reply_task is None or self.reply_task.done():
                self.start_reply(self.fake.next_reply())

    async def interrupt(self) -> None:
        self.cancelled = True
        self.fake.interruptions += 1
        await self.send({"type": "interruption", "interruption_event": {"event_id": self.reply_event_id}})
        if self.reply_words:
            await self.send(
                {
                    "type": "agent_response_correction",
                    "agent_response_correction_event": {
                        "original_agent_response": " ".join(self.reply_words),
                        "corrected_agent_response": " ".join(self.reply_words[: self.sent_words]) + "...",
                    },
                }
            )

    # -------------------------------------------------------------- replies

    def start_reply(self, reply: Reply | None) -> None:
        if reply is None:
            return
        self.reply_task = asyncio.create_task(self.run_reply(reply))

    async def run_reply(self, reply: Reply) -> None:
        with contextlib.suppress(ConnectionResetError, asyncio.CancelledError):
            while reply is not None:
                self.cancelled = False
                if isinstance(reply, Say):
                    await self.speak(reply.text)
                    break
                call_id = f"toolu_{secrets.token_hex(6)}"
                future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
                self.tool_results[call_id] = future
                await self.send(
                    {
                        "type": "client_tool_call",
                        "client_tool_call": {
                            "tool_name": reply.name,
                            "tool_call_id": call_id,
                            "parameters": reply.parameters,
                            "expects_response": True,
                        },
                    }
                )
                await future
                reply = self.fake.next_reply()  # type: ignore[assignment]

    async def speak(self, text: str) -> None:
        self.reply_event_id = next(self.event_ids)
        self.reply_words, self.sent_words = text.split(), 0
        response = {"type": "agent_response", "agent_response_event": {"agent_response": text}}
        if self.fake.response_first:
            await self.send(response)
        audio = await asyncio.to_thread(render, text, self.agent.output_format)
        bytes_per_ms = (
            8 if self.agent.output_format == "ulaw_8000" else _rate(self.agent.output_format) // 500
        )
        chunk = self.fake.chunk_ms * bytes_per_ms
        n_chunks = max(1, -(-len(audio) // chunk))
        for k in range(n_chunks):
            if self.cancelled:
                return
            piece = audio[k * chunk : (k + 1) * chunk]
            self.sent_words = len(self.reply_words) * (k + 1) // n_chunks
            await self.send(
                {
                    "type": "audio",
                    "audio_event": {
                        "audio_base_64": base64.b64encode(piece).decode(),
                        "event_id": self.reply_event_id,
                    },
                }
            )
            self.fake.audio_chunks_out += 1
            if k == 0 and not self.fake.response_first:
                await self.send(response)  # the full text goes with the first audio chunk
            await asyncio.sleep(self.fake.chunk_ms / 1000 / self.fake.pace)
        self.fake.replies_done += 1
        self.fake.notify()

    async def ping_loop(self) -> None:
        while self.fake.ping_secs:
            await asyncio.sleep(self.fake.ping_secs)
            event_id = next(self.event_ids)
            self.pings[event_id] = asyncio.get_running_loop().time()
            await self.send({"type": "ping", "ping_event": {"event_id": event_id, "ping_ms": 42}})


class FakeConvAIServer:
    """`async with FakeConvAIServer(replies=[...]) as fake:`; point base_url at `fake.http_url`."""

    def __init__(
        self,
        *,
        agent: Agent | None = None,
        replies: Sequence[Reply] = (),
        transcripts: Sequence[str] = (),
        api_key: str = API_KEY,
        pace: float = 4.0,
        chunk_ms: int = 100,
        vad_rms: int = 300,
        silence_ms: int = 400,
        ping_secs: float = 0.0,
        response_first: bool = False,
    ) -> None:
        self.agent = agent or Agent()
        self.replies = list(replies)
        self.transcripts = list(transcripts)
        self.api_key = api_key
        self.pace = pace
        self.chunk_ms = chunk_ms
        self.vad_rms = vad_rms
        self.silence_ms = silence_ms
        self.ping_secs = ping_secs
        self.response_first = (
            response_first  # agent_response before the reply's audio, not after its first chunk
        )
        self.refuse_next: list[int] = []  # the next HTTP requests or handshakes get these statuses
        self.requests: list[tuple[str, str]] = []  # (method, path) of every HTTP request and handshake
        self.connections = 0
        self.received: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self.initiations: list[dict[str, Any]] = []
        self.user_messages: list[str] = []
        self.contextual_updates: list[str] = []
        self.tool_results: list[dict[str, Any]] = []
        self.unknown_client: list[dict[str, Any]] = []
        self.user_turns: list[str] = []
        self.pong_ms: list[float] = []
        self.bad_pongs = 0
        self.bad_tool_results = 0
        self.bad_audio = 0
        self.interruptions = 0
        self.replies_done = 0
        self.audio_bytes_in = 0
        self.audio_chunks_out = 0
        self.signatures: set[str] = set()
        self._live: set[web.WebSocketResponse] = set()
        self._transports: dict[web.WebSocketResponse, asyncio.Transport] = {}
        self._frozen: list[asyncio.Transport] = []  # cut at exit, without a closing handshake
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def live(self) -> int:
        return len(self._live)

    def next_reply(self) -> Reply | None:
        return self.replies.pop(0) if self.replies else None

    def next_transcript(self) -> str:
        return self.transcripts.pop(0) if self.transcripts else ""

    def notify(self) -> None:
        self._changed.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until `predicate()` holds (re-checked whenever the fake's state changes)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await self._changed.wait()

    def drop_all(self) -> None:
        """Cut every live conversation without a close frame, like a network failure."""
        for transport in list(self._transports.values()):
            transport.abort()

    def freeze_all(self) -> None:
        """Stop reading every live conversation: the link stays up but nothing answers, pings included."""
        for transport in list(self._transports.values()):
            transport.pause_reading()
            self._frozen.append(transport)

    async def inject(self, raw: str) -> None:
        """Send a raw frame (garbage, an unknown type) to every live conversation."""
        for ws in list(self._live):
            await ws.send_str(raw)

    # -------------------------------------------------------------- HTTP

    def _refused(self) -> web.Response | None:
        if not self.refuse_next:
            return None
        status = self.refuse_next.pop(0)
        if status in (401, 403):
            body = {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}
        elif status == 429:
            body = {"detail": {"status": "too_many_concurrent_requests", "message": "Too many requests"}}
        else:
            body = {"detail": {"status": "internal_error", "message": "Internal server error"}}
        return web.json_response(body, status=status)

    def _key_error(self, request: web.Request) -> web.Response | None:
        if request.headers.get("xi-api-key") != self.api_key:
            return web.json_response(
                {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}, status=401
            )
        return None

    def _unknown_agent(self, agent_id: str | None) -> web.Response | None:
        if agent_id != self.agent.agent_id:
            return web.json_response(
                {"detail": {"status": "agent_not_found", "message": f"Agent {agent_id} not found"}},
                status=404,
            )
        return None

    async def _signed_url(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(("GET", request.path))
        error = (
            self._refused() or self._key_error(request) or self._unknown_agent(request.query.get("agent_id"))
        )
        if error is not None:
            return error
        signature = secrets.token_urlsafe(16)
        self.signatures.add(signature)
        url = (
            f"ws://127.0.0.1:{self.port}/v1/convai/conversation?agent_id={self.agent.agent_id}"
            f"&conversation_signature={signature}"
        )
        return web.json_response({"signed_url": url})

    async def _agent(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(("GET", request.path))
        error = (
            self._refused() or self._key_error(request) or self._unknown_agent(request.match_info["agent_id"])
        )
        if error is not None:
            return error
        return web.json_response(
            {
                "agent_id": self.agent.agent_id,
                "name": "test agent",
                "conversation_config": {
                    "asr": {"user_input_audio_format": self.agent.input_format},
                    "tts": {"agent_output_audio_format": self.agent.output_format, "voice_id": "voice_1"},
                    "agent": {"first_message": self.agent.first_message, "language": "en"},
                },
            }
        )

    # -------------------------------------------------------------- conversation socket

    async def _conversation(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(("WS", request.path))
        error = self._refused() or self._unknown_agent(request.query.get("agent_id"))
        if error is not None:
            return error
        if self.agent.private:
            signature = request.query.get("conversation_signature")
            if signature is not None:
                if signature not in self.signatures:
                    return web.json_response(
                        {"detail": {"status": "invalid_signature", "message": "Invalid signature"}},
                        status=403,
                    )
                self.signatures.discard(signature)  # one conversation per signed URL
            elif request.headers.get("xi-api-key") != self.api_key:
                return web.json_response(
                    {"detail": {"status": "auth_required", "message": "This agent requires authentication"}},
                    status=403,
                )
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.connections += 1
        self._live.add(ws)
        conversation = _Conversation(self, ws, self.agent)
        if isinstance(request.transport, asyncio.Transport):
            self._transports[ws] = request.transport
        self.notify()
        pinger: asyncio.Task[None] | None = None
        try:
            first = await ws.receive()
            if first.type is not WSMsgType.TEXT:
                return ws
            try:
                initiation = json.loads(first.data)
            except ValueError:
                initiation = None
            if not isinstance(initiation, dict) or not await conversation.start(initiation):
                if not ws.closed:
                    await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"Invalid message received")
                return ws
            pinger = asyncio.create_task(conversation.ping_loop())
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    await conversation.handle(message.data)
                if ws.closed:
                    break
        finally:
            self._live.discard(ws)
            self._transports.pop(ws, None)
            for task in (pinger, conversation.reply_task):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
                        await task
            self.notify()
        return ws

    async def __aenter__(self) -> FakeConvAIServer:
        app = web.Application()
        app.router.add_get("/v1/convai/conversation/get-signed-url", self._signed_url)
        app.router.add_get("/v1/convai/agents/{agent_id}", self._agent)
        app.router.add_get("/v1/convai/conversation", self._conversation)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for transport in self._frozen:
            transport.abort()
        for ws in list(self._live):
            with contextlib.suppress(Exception):
                await ws.close()
        assert self._runner is not None
        await self._runner.cleanup()
