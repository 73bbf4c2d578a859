"""One call's conversation over an OpenAI Realtime websocket: audio both ways, barge-in, tools, reconnects."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping

import aiohttp

from patterd.errors import ProviderConnectionError, ProviderError
from patterd.protocols import openai_realtime as rt
from patterd.protocols.audio import Pcm24ToUlaw, UlawToPcm24, is_voiced
from patterd.protocols.events import BargeIn, CallFailed, TranscriptLine, TranscriptPartial, Usage
from patterd.protocols.openai_realtime_conversation import Conversation, Line
from patterd.providers.engine_link import ToolTasks, keep_connected
from patterd.providers.kinds import CallContext, UserTurnEnded
from patterd.providers.openai_realtime_link import PROVIDER, OpenAIRealtimeOptions, open_socket
from patterd.tasks import cancel_and_wait

# The provider module's logger name, as before the session moved here.
log = logging.getLogger("patterd.providers.openai_realtime")

AUDIO_APPEND_PREFIX = rt.input_audio_append(b"")[:40]
SEND_QUEUE_LIMIT = 500  # 10 s of 20 ms frames; beyond that the link is dead and audio is dropped


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
        self._conv = Conversation()  # responses, items, tool names and replay history: the wire's state
        self.tools = ToolTasks()
        self._last_voiced_at: float | None = None  # arrival of the newest loud caller frame
        self._turn_voiced_at: float | None = None  # the ended caller turn's last voiced frame, until answered

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
        """Speak `text` word for word now (voicemail drop); the Conversation decides when it can go out."""
        if self._down is not None:
            self._down.reset()
        self._send(self._conv.say(text, connected=self._connected))

    async def run(self) -> None:
        try:
            await keep_connected(
                self._run_connection,
                provider=PROVIDER,
                where=f"OpenAI Realtime at {self.options.base_url}",
                max_retries=self.options.max_retries,
                backoff_secs=self.options.retry_backoff_secs,
                log=log,
                lost=self._lost,
            )
        finally:
            self._connected = False
            self.tools.cancel()

    def _lost(self) -> None:
        self._connected = False

    # -------------------------------------------------------------- connection

    async def _run_connection(self) -> None:
        ws = await open_socket(self.http, self.options)
        try:
            self.connects += 1
            self._reset_state()
            await ws.send_str(self._session_update())
            for role, text in self._conv.history:  # a reconnect: give the new session the conversation so far
                await ws.send_str(rt.history_item(role, text))
            greeting = self._conv.greeting(self.ctx.first_message)
            if greeting is not None:
                await ws.send_str(greeting)
            self._send(self._conv.resume())
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
        self._conv.reconnected(response_wanted=create in kept)
        for message in kept:
            if message != create:
                self._queue.put_nowait(message)
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
                self._conv.created(event.response_id)
            case rt.OutputItemAdded():
                if event.item_type == "function_call" and event.call_id and event.name:
                    self._conv.tool_added(event.call_id, event.name)
            case rt.OutputTranscriptDelta():
                shown = self._conv.transcript_delta(event.item_id, event.delta)
                if shown is not None:  # live views show the words as they stream
                    self.ctx.emit(
                        TranscriptPartial(
                            **self.ctx.new_event_fields(), role="assistant", text=shown, turn=event.item_id
                        )
                    )
            case rt.OutputTranscriptDone():
                self._report(self._conv.transcript_done(event.item_id, event.transcript))
            case rt.OutputAudioDone():
                if not self._conv.cancelled(event.response_id):
                    tail = self._down.flush() if self._down is not None else b""
                    if tail:
                        await self.ctx.audio.play(tail, segment=event.item_id)
                    self.ctx.audio.finish_segment()  # the leg's partial frame goes now, not with the next reply
            case rt.InputTranscriptionCompleted():
                if event.transcript.strip():
                    self._conv.user_said(event.transcript.strip())
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

    def _on_speech_stopped(self) -> None:
        """The server ended the caller's turn: its latency runs from the turn's last voiced frame."""
        voiced_at, self._last_voiced_at = self._last_voiced_at, None  # a later turn never reuses it
        self._turn_voiced_at = voiced_at if voiced_at is not None else self.ctx.clock.monotonic()
        self.ctx.emit(UserTurnEnded(self._turn_voiced_at))

    async def _on_audio(self, event: rt.OutputAudioDelta) -> None:
        if self._conv.cancelled(event.response_id):
            return  # in flight when we cancelled; the caller must not hear it
        item = self._conv.item(event.item_id)
        if self._turn_voiced_at is not None:  # the answer's first audio: the engine's share of the turn
            item.engine_ms = (self.ctx.clock.monotonic() - self._turn_voiced_at) * 1000
            self._turn_voiced_at = None
        item.sent_ms += len(event.audio) / self._bytes_per_ms
        ulaw = self._down.process(event.audio) if self._down is not None else event.audio
        if ulaw:
            await self.ctx.audio.play(ulaw, segment=event.item_id)

    async def _on_speech_started(self) -> None:
        if not self.ctx.audio.speaking:
            return
        t0 = self.ctx.clock.monotonic()
        heard = await self.ctx.audio.interrupt()
        reaction_ms = (self.ctx.clock.monotonic() - t0) * 1000
        messages, played_ms = self._conv.barge_in(heard)
        if self._down is not None:
            self._down.reset()
        self._send(messages)
        self.ctx.emit(BargeIn(**self.ctx.new_event_fields(), played_ms=played_ms, reaction_ms=reaction_ms))

    def _report(self, line: Line | None) -> None:
        if line is not None:
            self.ctx.emit(
                TranscriptLine(
                    **self.ctx.new_event_fields(),
                    role="assistant",
                    text=line.text,
                    interrupted=line.interrupted,
                    engine_ms=line.engine_ms,
                )
            )

    async def _on_response_done(self, event: rt.ResponseDone) -> None:
        # A cancelled response may end without transcript.done: report what was said so far.
        lines, messages = self._conv.done(event.status)
        for line in lines:
            self._report(line)
        if event.usage is not None:
            self.ctx.emit(
                Usage(
                    **self.ctx.new_event_fields(),
                    component="llm",
                    provider=PROVIDER,
                    quantities=event.usage.quantities(),
                )
            )
        self._send(messages)

    def _on_error(self, event: rt.ErrorEvent) -> None:
        kind = rt.error_kind(event)
        if kind == "voice_refused" and self._voice is not None:
            # The whole session.update was refused, so the session has no instructions, tools or
            # transcription. A refused voice (the contract's example names the TTS voice nova) is
            # dropped and the update sent again: the call goes on in the server's default voice.
            refused, self._voice = self._voice, None
            log.warning(
                "openai_realtime: voice %r refused (%s); using the default voice", refused, event.message
            )
            self._fail(f"OpenAI Realtime refused voice {refused!r}; speaking with its default voice")
            self._queue.put_nowait(self._session_update())
        elif kind in ("voice_refused", "session_refused"):  # anything else would fail the same way again
            raise ProviderError(
                f"OpenAI Realtime refused the session configuration ({event.param or event.code}): {event.message}",
                provider=PROVIDER,
            )
        elif kind == "benign":
            log.debug("openai_realtime: %s (%s)", event.code, event.message)
        else:
            log.warning(
                "openai_realtime error %s/%s: %s (param %s)",
                event.type,
                event.code,
                event.message,
                event.param,
            )
            self._fail(f"OpenAI Realtime {event.type} {event.code or ''}: {event.message}".strip())
            if kind == "reconnect":
                raise ProviderConnectionError(
                    f"OpenAI Realtime server error: {event.message}", provider=PROVIDER
                )

    def _fail(self, message: str) -> None:
        self.ctx.emit(
            CallFailed(**self.ctx.new_event_fields(), message=message, component="engine", fatal=False)
        )

    # -------------------------------------------------------------- tools and responses

    def _request_response(self) -> None:
        """Ask for a response now, or right after the one in progress (the server allows one at a time)."""
        self._send(self._conv.request_response())

    def _send(self, messages: list[str]) -> None:
        for message in messages:
            self._queue.put_nowait(message)

    def _start_tool(self, event: rt.FunctionCallArgumentsDone) -> None:
        name = self._conv.tool_name(event.call_id, event.name)
        self.tools.spawn(self._run_tool(name, event.call_id, event.arguments))

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
