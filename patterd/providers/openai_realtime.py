"""The `engine.openai_realtime` provider: one OpenAI Realtime (GA) websocket per call, speaking for the agent.

Followed: developers.openai.com/api/docs/guides/realtime-websocket and realtime-conversations
(connection, session.update, barge-in with conversation.item.truncate, function calling), the
client/server event reference, and openai-python `types/realtime/`. Connects to
`{base_url}?model=...` with `Authorization: Bearer` and no `OpenAI-Beta` header (that selects the
retired beta shapes). The wire format lives in `patterd.protocols.openai_realtime`; audio is
8 kHz μ-law toward the call and PCM16 24 kHz (default) or μ-law toward OpenAI.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import difflib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
from pydantic import Field, SecretStr, model_validator

from patterd.errors import ProviderAuthError, ProviderConnectionError, ProviderError
from patterd.protocols import openai_realtime as rt
from patterd.protocols.audio import Pcm24ToUlaw, UlawToPcm24, is_voiced
from patterd.protocols.events import BargeIn, CallFailed, TranscriptLine, TranscriptPartial, Usage
from patterd.providers.kinds import CallContext, UserTurnEnded
from patterd.providers.spec import BuildContext, Capabilities, ProviderOptions, ProviderSpec, env_secret
from patterd.tasks import being_cancelled, cancel_and_wait

log = logging.getLogger(__name__)

PROVIDER = "openai_realtime"
HISTORY_REPLAY_ITEMS = 40  # transcript lines replayed into a new connection after a reconnect
# Server errors after which the session is unusable: reconnect (with a fresh session.update).
RECONNECT_ERROR_TYPES = frozenset({"server_error"})
RECONNECT_ERROR_CODES = frozenset({"session_expired", "server_error", "internal_error"})
# Errors that are part of normal barge-in races, not problems.
BENIGN_ERROR_CODES = frozenset({"response_cancel_not_active", "conversation_already_has_active_response"})
PENDING = "(requested)"  # a response.create is on its way; its id comes with response.created
AUDIO_APPEND_PREFIX = rt.input_audio_append(b"")[:40]
SEND_QUEUE_LIMIT = 500  # 10 s of 20 ms frames; beyond that the link is dead and audio is dropped
CLOSE_TIMEOUT_SECS = 2.0  # how long a closing handshake may wait for the server's close frame


class OpenAIRealtimeOptions(ProviderOptions):
    """Options of `engine: {type: openai_realtime, ...}`."""

    api_key: SecretStr | None = Field(default_factory=env_secret("OPENAI_API_KEY"))
    model: str = "gpt-realtime"
    voice: str = Field(
        default="alloy",
        description=f"a Realtime voice ({', '.join(rt.VOICES)}) or a custom voice id voice_...; OpenAI "
        "refuses others (e.g. the TTS voice nova): `patterd check` warns, and calls then speak in the "
        "default voice",
    )
    temperature: float | None = Field(
        default=None, description="accepted for compatibility; the GA API has no temperature"
    )
    audio_format: Literal["pcm", "pcmu"] = "pcm"
    turn_detection: dict[str, Any] | None = Field(default_factory=lambda: dict(rt.DEFAULT_TURN_DETECTION))
    transcription_model: str | None = "gpt-4o-mini-transcribe"
    base_url: str = "wss://api.openai.com/v1/realtime"
    max_retries: int = Field(default=3, ge=0)
    retry_backoff_secs: float = Field(default=0.5, ge=0)
    connect_timeout_secs: float = Field(default=10.0, gt=0)
    keepalive_secs: float | None = Field(
        default=20.0,
        gt=0,
        description="ping the server this often; no pong within half of it counts as a lost connection (null: never)",
    )

    @model_validator(mode="after")
    def _require_key(self) -> OpenAIRealtimeOptions:
        if self.api_key is None or not self.api_key.get_secret_value():
            raise ValueError("OpenAI Realtime engine requires api_key (set OPENAI_API_KEY)")
        return self

    def config_warnings(self) -> list[str]:
        """Allowed but unwise settings: printed by `patterd check`, logged when the engine is built."""
        out: list[str] = []
        if self.voice not in rt.VOICES and not self.voice.startswith(rt.CUSTOM_VOICE_PREFIX):
            close = difflib.get_close_matches(self.voice, rt.VOICES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            out.append(
                f"voice {self.voice!r} is not a Realtime voice{hint}: OpenAI refuses it and calls speak in "
                f"its default voice. Realtime voices: {', '.join(rt.VOICES)}, or a custom voice id voice_..."
            )
        if self.temperature is not None:
            out.append(
                f"temperature {self.temperature} is ignored: the GA Realtime session has no temperature"
            )
        return out

    def url(self) -> str:
        sep = "&" if "?" in self.base_url else "?"
        return f"{self.base_url}{sep}model={quote(self.model)}"


@dataclass
class _Item:
    """What we know about one assistant item while it plays."""

    sent_ms: float = 0.0
    transcript: list[str] = field(default_factory=list)
    interrupted: bool = False
    reported: bool = False
    engine_ms: float | None = None  # the caller's last voiced frame → this item's first audio from the engine


class RealtimeSession:
    """One call's conversation over a Realtime websocket (implements kinds.EngineSession)."""

    def __init__(self, options: OpenAIRealtimeOptions, ctx: CallContext, http: aiohttp.ClientSession) -> None:
        self.options = options
        self.ctx = ctx
        self.http = http
        self.bad_frames = 0  # malformed server frames (logged, never fatal)
        self.unknown_events = 0  # server event types we do not know
        self.dropped_frames = 0  # caller audio dropped while disconnected or backlogged
        self.connects = 0
        self._pcm = options.audio_format == "pcm"
        self._up = UlawToPcm24() if self._pcm else None
        self._down = Pcm24ToUlaw() if self._pcm else None
        self._bytes_per_ms = rt.PCM24_BYTES_PER_MS if self._pcm else rt.PCMU_BYTES_PER_MS
        self._voice: str | None = options.voice  # None once the server refused it: its default voice
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._connected = False
        self._items: dict[str, _Item] = {}
        self._tool_names: dict[str, str] = {}  # call_id → function name
        self._active_response: str | None = None
        self._cancelled: set[str] = set()
        self._want_response = False
        self._tools: set[asyncio.Task[None]] = set()
        self._greeted = False
        self._last_voiced_at: float | None = None  # arrival of the newest loud caller frame
        self._turn_voiced_at: float | None = None  # the ended caller turn's last voiced frame, until answered
        self._say_next: str | None = None  # verbatim text to speak once the active response has ended
        self._cancel_created = False  # a response.cancel went out before the response's id was known
        # The conversation so far as text: a new connection starts empty, so it is replayed there.
        self._history: collections.deque[tuple[str, str]] = collections.deque(maxlen=HISTORY_REPLAY_ITEMS)

    # -------------------------------------------------------------- EngineSession

    def push_audio(self, ulaw: bytes) -> None:
        if not self._connected or self._queue.qsize() >= SEND_QUEUE_LIMIT:
            self.dropped_frames += 1
            return
        if is_voiced(ulaw):
            # The server's VAD decides the turn; our estimate of where its speech ended is the last frame
            # loud enough to be speech (speech_stopped's audio_end_ms includes its silence window).
            self._last_voiced_at = self.ctx.clock.monotonic()
        audio = self._up.process(ulaw) if self._up is not None else ulaw
        if audio:
            self._queue.put_nowait(rt.input_audio_append(audio))

    def push_dtmf(self, digit: str) -> None:
        self.push_text(f"caller pressed {digit}")

    def push_text(self, text: str) -> None:
        self._queue.put_nowait(rt.user_text(text))
        self._request_response()

    def say(self, text: str) -> None:
        """Speak `text` word for word now (voicemail drop): cancel the response in progress, then say it.

        The server allows one response at a time, so the verbatim response.create goes out right
        away only when nothing is active; otherwise it waits for the cancelled response's
        response.done (a create sent earlier would be refused as
        conversation_already_has_active_response, an error we treat as benign).
        """
        if self._down is not None:
            self._down.reset()
        if not self._connected:  # (re)connecting: said right after the session.update, instead of a greeting
            self._say_next = text
            return
        if self._active_response is None:
            self._queue.put_nowait(rt.response_create(rt.say_verbatim_instructions(text)))
            self._active_response = PENDING
            return
        if self._active_response == PENDING:
            self._cancel_created = True
        else:
            self._cancelled.add(self._active_response)
        self._queue.put_nowait(rt.response_cancel())
        self._say_next = text
        self._want_response = False  # the verbatim message replaces whatever was asked for

    async def run(self) -> None:
        failures = 0
        try:
            while True:
                try:
                    await self._run_connection()
                    failures = 0  # a healthy connection that ended: start counting afresh
                except ProviderAuthError:
                    raise
                except (OSError, TimeoutError, aiohttp.ClientError, ProviderConnectionError) as exc:
                    if being_cancelled():  # the call is ending: a lost link then is no reason to dial again
                        raise asyncio.CancelledError from exc
                    failures += 1
                    self._connected = False
                    if failures > self.options.max_retries:
                        raise ProviderConnectionError(
                            f"OpenAI Realtime at {self.options.base_url} unreachable after {failures} attempts: {exc}",
                            provider=PROVIDER,
                        ) from exc
                    log.warning(
                        "openai_realtime connection lost (%s); retry %d/%d",
                        exc,
                        failures,
                        self.options.max_retries,
                    )
                    await asyncio.sleep(self.options.retry_backoff_secs * 2 ** (failures - 1))
        finally:
            self._connected = False
            for task in self._tools:
                task.cancel()

    # -------------------------------------------------------------- connection

    async def _run_connection(self) -> None:
        ws = await open_socket(self.http, self.options)
        try:
            self.connects += 1
            self._reset_state()
            await ws.send_str(self._session_update())
            for role, text in self._history:  # a reconnect: give the new session the conversation so far
                await ws.send_str(rt.history_item(role, text))
            if not self._greeted:
                self._greeted = True
                if self.ctx.first_message and self._say_next is None:
                    await ws.send_str(
                        rt.response_create(rt.say_verbatim_instructions(self.ctx.first_message))
                    )
                    self._active_response = PENDING
            if self._say_next is not None and self._active_response is None:
                text, self._say_next = self._say_next, None
                self._queue.put_nowait(rt.response_create(rt.say_verbatim_instructions(text)))
                self._active_response = PENDING
            if self._want_response and self._active_response is None:
                self._want_response = False
                self._queue.put_nowait(rt.response_create())
                self._active_response = PENDING
            self._connected = True
            sender = asyncio.create_task(self._send_loop(ws))
            try:
                await self._receive_loop(ws)
            finally:
                # Not suppress(CancelledError): a hang-up that cancels us while the sender winds down
                # after a dropped link must still end this task, not lead to a reconnect.
                failed = await cancel_and_wait(sender)
                if failed is not None:  # the link broke under a send; the receive side says why
                    log.debug("openai_realtime: sender ended with %r", failed)
        finally:
            self._connected = False
            await ws.close()

    def _session_update(self) -> str:
        return rt.session_update(
            instructions=self.ctx.instructions,
            voice=self._voice,
            audio_format=self.options.audio_format,
            turn_detection=self.options.turn_detection,
            transcription_model=self.options.transcription_model,
            tools=self.ctx.tools,
        )

    def _reset_state(self) -> None:
        # Stale caller audio is dropped; text, DTMF and response requests queued before the
        # (re)connect still go out, after the session.update.
        kept: list[str] = []
        while not self._queue.empty():
            message = self._queue.get_nowait()
            if not message.startswith(AUDIO_APPEND_PREFIX):
                kept.append(message)
        # Response requests wait for the response in progress (the greeting, on a first connect).
        create = rt.response_create()
        self._want_response = create in kept
        for message in kept:
            if message != create:
                self._queue.put_nowait(message)
        self._active_response = None
        self._cancel_created = False
        self._cancelled.clear()
        if self._down is not None:
            self._down.reset()

    async def _send_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        send, get = ws.send_str, self._queue.get
        while True:
            await send(await get())

    async def _receive_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for frame in ws:  # ends at the server's close frame
            if frame.type is aiohttp.WSMsgType.ERROR:
                raise ProviderConnectionError(
                    f"OpenAI Realtime websocket failed: {frame.data}", provider=PROVIDER
                )
            try:
                event = rt.parse_server_event(frame.data)
            except rt.RealtimeProtocolError as exc:
                self.bad_frames += 1
                log.warning("openai_realtime: bad server frame (%s); %d so far", exc, self.bad_frames)
                continue
            await self._on_event(event)
        # The server closed the socket on us: a cut we retry, not an end of the call.
        raise ProviderConnectionError("OpenAI Realtime closed the connection", provider=PROVIDER)

    # -------------------------------------------------------------- server events

    async def _on_event(self, event: rt.ServerEvent) -> None:
        match event:
            case rt.OutputAudioDelta():
                await self._on_audio(event)
            case rt.SpeechStarted():
                await self._on_speech_started()
            case rt.SpeechStopped():
                self._on_speech_stopped()
            case rt.ResponseCreated():
                self._active_response = event.response_id
                if self._cancel_created:
                    self._cancel_created = False
                    self._cancelled.add(event.response_id)
            case rt.OutputItemAdded():
                if event.item_type == "function_call" and event.call_id and event.name:
                    self._tool_names[event.call_id] = event.name
            case rt.OutputTranscriptDelta():
                item = self._item(event.item_id)
                item.transcript.append(event.delta)
                if not item.reported and not item.interrupted:  # live views show the words as they stream
                    self.ctx.emit(
                        TranscriptPartial(
                            **self.ctx.new_event_fields(),
                            role="assistant",
                            text="".join(item.transcript),
                            turn=event.item_id,
                        )
                    )
            case rt.OutputTranscriptDone():
                self._report_assistant(event.item_id, event.transcript)
            case rt.OutputAudioDone():
                if self._down is not None and event.response_id not in self._cancelled:
                    tail = self._down.flush()
                    if tail:
                        await self.ctx.audio.play(tail, segment=event.item_id)
            case rt.InputTranscriptionCompleted():
                if event.transcript.strip():
                    self._history.append(("user", event.transcript.strip()))
                    self.ctx.emit(
                        TranscriptLine(
                            **self.ctx.new_event_fields(), role="user", text=event.transcript.strip()
                        )
                    )
            case rt.FunctionCallArgumentsDone():
                self._start_tool(event)
            case rt.ResponseDone():
                await self._on_response_done(event)
            case rt.ErrorEvent():
                self._on_error(event)
            case rt.UnknownEvent():
                self.unknown_events += 1
                log.info(
                    "openai_realtime: unknown server event %r (%d so far)", event.type, self.unknown_events
                )
            case _:
                pass

    def _item(self, item_id: str) -> _Item:
        item = self._items.get(item_id)
        if item is None:
            item = self._items[item_id] = _Item()
        return item

    def _on_speech_stopped(self) -> None:
        """The server ended the caller's turn: its latency runs from the turn's last voiced frame."""
        voiced_at, self._last_voiced_at = self._last_voiced_at, None  # a later turn never reuses it
        self._turn_voiced_at = voiced_at if voiced_at is not None else self.ctx.clock.monotonic()
        self.ctx.emit(UserTurnEnded(self._turn_voiced_at))

    async def _on_audio(self, event: rt.OutputAudioDelta) -> None:
        if event.response_id in self._cancelled:
            return  # in flight when we cancelled; the caller must not hear it
        if self._turn_voiced_at is not None:  # the answer's first audio: the engine's share of the turn
            self._item(event.item_id).engine_ms = (self.ctx.clock.monotonic() - self._turn_voiced_at) * 1000
            self._turn_voiced_at = None
        self._item(event.item_id).sent_ms += len(event.audio) / self._bytes_per_ms
        ulaw = self._down.process(event.audio) if self._down is not None else event.audio
        if ulaw:
            await self.ctx.audio.play(ulaw, segment=event.item_id)

    async def _on_speech_started(self) -> None:
        if not self.ctx.audio.speaking:
            return
        t0 = self.ctx.clock.monotonic()
        heard = await self.ctx.audio.interrupt()
        reaction_ms = (self.ctx.clock.monotonic() - t0) * 1000
        if self._active_response is not None:
            self._cancelled.add(self._active_response)
            self._queue.put_nowait(rt.response_cancel())
        if self._down is not None:
            self._down.reset()
        played_ms = 0
        if heard is not None:
            segment, played_ms = heard
            item = self._items.get(segment)
            if item is not None:
                item.interrupted = True
                # The server rejects audio_end_ms beyond what it sent for the item.
                end = min(played_ms, int(item.sent_ms))
                self._queue.put_nowait(rt.truncate(segment, 0, end))
        self.ctx.emit(BargeIn(**self.ctx.new_event_fields(), played_ms=played_ms, reaction_ms=reaction_ms))

    def _report_assistant(self, item_id: str, transcript: str) -> None:
        item = self._item(item_id)
        if item.reported:
            return
        item.reported = True
        text = transcript.strip()
        if text:
            self._history.append(("assistant", text))
            engine_ms = None if item.engine_ms is None else round(item.engine_ms, 1)
            self.ctx.emit(
                TranscriptLine(
                    **self.ctx.new_event_fields(),
                    role="assistant",
                    text=text,
                    interrupted=item.interrupted,
                    engine_ms=engine_ms,
                )
            )

    async def _on_response_done(self, event: rt.ResponseDone) -> None:
        self._active_response = None  # one response at a time in the default conversation
        # A cancelled response may end without transcript.done: report what was said so far.
        for item_id, item in self._items.items():
            if not item.reported and item.transcript and (item.interrupted or event.status != "completed"):
                item.interrupted = True
                self._report_assistant(item_id, "".join(item.transcript))
        if event.usage is not None:
            self.ctx.emit(
                Usage(
                    **self.ctx.new_event_fields(),
                    component="llm",
                    provider=PROVIDER,
                    quantities=event.usage.quantities(),
                )
            )
        if self._say_next is not None:
            text, self._say_next = self._say_next, None
            self._queue.put_nowait(rt.response_create(rt.say_verbatim_instructions(text)))
            self._active_response = PENDING
        elif self._want_response:
            self._want_response = False
            self._queue.put_nowait(rt.response_create())
            self._active_response = PENDING

    def _on_error(self, event: rt.ErrorEvent) -> None:
        if event.event_id == rt.SESSION_UPDATE_EVENT_ID:
            # The whole session.update was refused, so the session has no instructions, tools or
            # transcription. A refused voice (the contract's example names the TTS voice nova) is
            # dropped and the update sent again: the call goes on in the server's default voice.
            if rt.is_voice_param(event.param) and self._voice is not None:
                refused, self._voice = self._voice, None
                log.warning(
                    "openai_realtime: voice %r refused (%s); using the default voice", refused, event.message
                )
                self.ctx.emit(
                    CallFailed(
                        **self.ctx.new_event_fields(),
                        message=f"OpenAI Realtime refused voice {refused!r}; speaking with its default voice",
                        component="engine",
                        fatal=False,
                    )
                )
                self._queue.put_nowait(self._session_update())
                return
            # Anything else would fail the same way again: not retried.
            raise ProviderError(
                f"OpenAI Realtime refused the session configuration ({event.param or event.code}): {event.message}",
                provider=PROVIDER,
            )
        if event.code in BENIGN_ERROR_CODES:
            log.debug("openai_realtime: %s (%s)", event.code, event.message)
            return
        log.warning(
            "openai_realtime error %s/%s: %s (param %s)", event.type, event.code, event.message, event.param
        )
        self.ctx.emit(
            CallFailed(
                **self.ctx.new_event_fields(),
                message=f"OpenAI Realtime {event.type} {event.code or ''}: {event.message}".strip(),
                component="engine",
                fatal=False,
            )
        )
        if event.type in RECONNECT_ERROR_TYPES or event.code in RECONNECT_ERROR_CODES:
            raise ProviderConnectionError(f"OpenAI Realtime server error: {event.message}", provider=PROVIDER)

    # -------------------------------------------------------------- tools and responses

    def _request_response(self) -> None:
        """Ask for a response now, or right after the one in progress (the server allows one at a time)."""
        if self._active_response is None:
            self._queue.put_nowait(rt.response_create())
            self._active_response = PENDING
        else:
            self._want_response = True

    def _start_tool(self, event: rt.FunctionCallArgumentsDone) -> None:
        name = event.name or self._tool_names.get(event.call_id, "")
        task = asyncio.create_task(self._run_tool(name, event.call_id, event.arguments))
        self._tools.add(task)
        task.add_done_callback(self._tools.discard)

    async def _run_tool(self, name: str, call_id: str, arguments: str) -> None:
        try:
            parsed = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            parsed = None
        if not isinstance(parsed, Mapping):
            result = json.dumps(
                {"error": f"arguments for {name!r} are not a JSON object: {arguments[:200]!r}"}
            )
        else:
            result = await self.ctx.run_tool(name, parsed)
        self._queue.put_nowait(rt.function_call_output(call_id, result))
        self._request_response()


class OpenAIRealtimeEngine:
    """The built provider: opens one RealtimeSession per call (implements kinds.Engine)."""

    def __init__(
        self, options: OpenAIRealtimeOptions, build: BuildContext, http: aiohttp.ClientSession
    ) -> None:
        self.options = options
        self.build = build
        self.http = http  # every call's websocket goes through this one session
        self.warnings = options.config_warnings()  # logged by the daemon at start and reload

    @asynccontextmanager
    async def _session(self, call: CallContext) -> AsyncIterator[RealtimeSession]:
        session = RealtimeSession(self.options, call, self.http)
        try:
            yield session
        finally:
            for task in list(
                session._tools
            ):  # a tool still running when the call ends is stopped, not left behind
                await cancel_and_wait(task)

    def session(self, call: CallContext) -> contextlib.AbstractAsyncContextManager[RealtimeSession]:
        return self._session(call)


@asynccontextmanager
async def build(options: OpenAIRealtimeOptions, ctx: BuildContext) -> AsyncIterator[OpenAIRealtimeEngine]:
    async with aiohttp.ClientSession(connector=_connector()) as http:
        yield OpenAIRealtimeEngine(options, ctx, http)


def _connector() -> aiohttp.TCPConnector:
    # One websocket per call holds its connection for the whole call: no pool limit.
    return aiohttp.TCPConnector(limit=0)


async def open_socket(
    http: aiohttp.ClientSession, opts: OpenAIRealtimeOptions
) -> aiohttp.ClientWebSocketResponse:
    """Open the Realtime websocket (the handshake bounded by connect_timeout_secs).

    A refused handshake raises ProviderAuthError for a bad key (not worth retrying) and
    ProviderConnectionError otherwise.
    """
    key = opts.api_key.get_secret_value() if opts.api_key else ""
    try:
        async with asyncio.timeout(opts.connect_timeout_secs):
            return await http.ws_connect(
                opts.url(),
                headers={"Authorization": f"Bearer {key}"},
                compress=0,  # audio does not compress; deflate would only burn CPU
                max_msg_size=0,  # audio deltas have no size bound in the API
                autoping=True,
                heartbeat=opts.keepalive_secs,  # a link that hangs silently is found and reconnected
                timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT_SECS),
            )
    except aiohttp.WSServerHandshakeError as exc:
        if exc.status in (401, 403):
            raise ProviderAuthError(
                f"OpenAI Realtime refused the api_key (HTTP {exc.status} at {opts.base_url}; "
                "check api_key / OPENAI_API_KEY)",
                provider=PROVIDER,
            ) from exc
        raise ProviderConnectionError(
            f"OpenAI Realtime handshake at {opts.base_url} failed with HTTP {exc.status}", provider=PROVIDER
        ) from exc


async def check(engine: OpenAIRealtimeEngine) -> None:
    """Open a websocket and wait for session.created (proves the key and the endpoint)."""
    opts = engine.options
    try:
        ws = await open_socket(engine.http, opts)
        try:
            async with asyncio.timeout(opts.connect_timeout_secs):
                async for frame in ws:
                    if frame.type is not aiohttp.WSMsgType.TEXT:
                        break
                    event = rt.parse_server_event(frame.data)
                    if isinstance(event, rt.SessionCreated):
                        return
                    if isinstance(event, rt.ErrorEvent):
                        raise ProviderError(
                            f"OpenAI Realtime error on connect: {event.message}", provider=PROVIDER
                        )
            raise ProviderConnectionError(
                "OpenAI Realtime closed the connection before session.created", provider=PROVIDER
            )
        finally:
            await ws.close()
    except (OSError, TimeoutError, aiohttp.ClientError) as exc:
        raise ProviderConnectionError(
            f"OpenAI Realtime at {opts.base_url} unreachable: {exc}", provider=PROVIDER
        ) from exc


SPEC = ProviderSpec(
    kind="engine",
    name="openai_realtime",
    options=OpenAIRealtimeOptions,
    build=build,
    summary="OpenAI Realtime speech-to-speech engine (GA websocket, PCM24 or μ-law)",
    check=check,
    capabilities=Capabilities(
        streaming=True, tools=True, sample_rates=(8000, 24000), notes="GA Realtime API"
    ),
)
