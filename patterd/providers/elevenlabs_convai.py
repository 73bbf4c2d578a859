"""The `engine.elevenlabs_convai` provider: one ElevenLabs Agents conversation websocket per call.

The agent (its LLM, voice, turn-taking and client tools) is configured at ElevenLabs; patterd
sends the call's overrides and variables in the first frame, streams the caller's audio, plays the
agent's audio, clears the carrier on `interruption`, answers `ping`, and runs `client_tool_call`s
with the agent's patterd tools. Wire format: `patterd.protocols.elevenlabs_convai`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp

from patterd.errors import ProviderConnectionError, ProviderError
from patterd.protocols import elevenlabs_convai as ev
from patterd.protocols.audio import is_voiced
from patterd.protocols.elevenlabs_convai_audio import Transcoder
from patterd.protocols.events import BargeIn
from patterd.protocols.jsontext import JSONError, loads
from patterd.providers.elevenlabs_convai_link import PROVIDER, ElevenLabsConvAIOptions, check, open_socket
from patterd.providers.elevenlabs_convai_turns import AgentTurns
from patterd.providers.engine_link import ToolTasks, keep_connected
from patterd.providers.kinds import CallContext
from patterd.providers.spec import (
    BuildContext,
    Capabilities,
    ProviderSpec,
)
from patterd.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# Options, socket and probe live in elevenlabs_convai_link; importers of this module still find them here.
__all__ = ["SPEC", "ConvAIEngine", "ConvAISession", "ElevenLabsConvAIOptions", "build", "check"]

SEND_QUEUE_LIMIT = 500  # 10 s of 20 ms frames; beyond that the link is dead and audio is dropped


class ConvAISession:
    """One call's conversation with an ElevenLabs agent (implements kinds.EngineSession)."""

    def __init__(
        self, options: ElevenLabsConvAIOptions, ctx: CallContext, http: aiohttp.ClientSession
    ) -> None:
        self.options = options
        self.ctx = ctx
        self.http = http
        self.bad_frames = 0  # malformed server frames (logged, never fatal)
        self.unknown_events = 0
        self.dropped_frames = 0  # caller audio dropped while disconnected or backlogged
        self.pongs = 0
        self.connects = 0
        self.conversation_ids: list[str] = []
        self.formats: tuple[str, str] | None = None  # (input, output) of the live conversation
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._connected = False
        self._codec: Transcoder | None = None
        self._last_interrupt_id = 0
        self._last_audio_id = 0
        self.turns = AgentTurns(ctx, PROVIDER)  # the replies as heard, turn timing, billing, replay history
        self.tools = ToolTasks()
        self._greeted = False

    # -------------------------------------------------------------- EngineSession

    def push_audio(self, ulaw: bytes) -> None:
        if not self._connected or self._codec is None or self._queue.qsize() >= SEND_QUEUE_LIMIT:
            self.dropped_frames += 1
            return
        if is_voiced(ulaw):
            # The agent's own VAD ends the turn; the last loud frame is our estimate of where speech ended.
            self.turns.last_voiced_at = self.ctx.clock.monotonic()
        audio = self._codec.up(ulaw)
        if audio:
            self._queue.put_nowait(ev.user_audio_chunk(audio))

    def push_dtmf(self, digit: str) -> None:
        self.push_text(f"caller pressed {digit}")

    def push_text(self, text: str) -> None:
        self._queue.put_nowait(ev.user_message(text))

    def say(self, text: str) -> None:
        """Speak `text` now (voicemail): the reply in progress is dropped and the agent asked to say it.

        The conversation API has no verbatim speech: the agent's LLM is asked to say the text word
        for word, which it normally does.
        """
        self._last_interrupt_id = max(self._last_interrupt_id, self._last_audio_id)
        if self.ctx.audio.speaking:
            self.tools.spawn(self._clear_carrier())
            self.turns.interrupted(self.turns.current)
        self._queue.put_nowait(
            ev.user_message(f"Say exactly the following, word for word, and nothing else: {text}")
        )

    async def run(self) -> None:
        try:
            await keep_connected(
                self._run_connection,
                provider=PROVIDER,
                where=f"ElevenLabs Agents at {self.options.base_url}",
                max_retries=self.options.max_retries,
                backoff_secs=self.options.retry_backoff_secs,
                log=log,
            )
        finally:
            self._connected = False
            self.turns.close()
            self.tools.cancel()

    # -------------------------------------------------------------- connection

    def _initiation(self) -> str:
        variables = getattr(self.ctx, "variables", None)
        first: str | None = None
        if self.options.override_first_message:
            # A reconnect continues the conversation: the new one must not greet again.
            first = (self.ctx.first_message or "") if not self._greeted else ""
        return ev.initiation(
            prompt=self.ctx.instructions if self.options.override_prompt else None,
            first_message=first,
            language=self.options.language,
            voice_id=self.options.voice_id,
            dynamic_variables=dict(variables) if self.options.send_variables and variables else None,
        )

    async def _run_connection(self) -> None:
        ws = await open_socket(self.http, self.options)
        try:
            self.connects += 1
            await ws.send_str(self._initiation())
            metadata = await self._await_metadata(ws)
            self._start_conversation(metadata)
            if self.turns.history:  # a reconnect: the new conversation learns what was said
                lines = "\n".join(f"{role}: {text}" for role, text in self.turns.history)
                await ws.send_str(ev.contextual_update(f"The conversation so far:\n{lines}"))
            self._greeted = True
            self._connected = True
            sender = asyncio.create_task(self._send_loop(ws))
            try:
                await self._receive_loop(ws)
            finally:
                failed = await cancel_and_wait(sender)
                if failed is not None:
                    log.debug("elevenlabs_convai: sender ended with %r", failed)
        finally:
            self._connected = False
            self.turns.bill(connected=False)
            await ws.close()

    async def _await_metadata(self, ws: aiohttp.ClientWebSocketResponse) -> ev.Metadata:
        """The first server message names the conversation and its audio formats."""
        async with asyncio.timeout(self.options.connect_timeout_secs):
            async for frame in ws:
                if frame.type is not aiohttp.WSMsgType.TEXT:
                    break
                try:
                    event = ev.parse_server_event(frame.data)
                except ev.ConvAIProtocolError as exc:
                    self.bad_frames += 1
                    log.warning("elevenlabs_convai: bad server frame (%s)", exc)
                    continue
                if isinstance(event, ev.Metadata):
                    return event
                if isinstance(event, ev.Ping):
                    await ws.send_str(ev.pong(event.event_id))
        raise ProviderConnectionError(
            f"ElevenLabs Agents closed the conversation before it started ({_close_reason(ws)})",
            provider=PROVIDER,
        )

    def _start_conversation(self, metadata: ev.Metadata) -> None:
        try:
            self._codec = Transcoder(metadata.user_input_audio_format, metadata.agent_output_audio_format)
        except ValueError as exc:
            raise ProviderError(f"ElevenLabs agent audio: {exc}", provider=PROVIDER) from exc
        formats = (metadata.user_input_audio_format, metadata.agent_output_audio_format)
        if formats != (ev.ULAW_8000, ev.ULAW_8000) and self.formats != formats:
            log.info(
                "elevenlabs_convai: agent audio is %s in / %s out; transcoding from and to ulaw_8000",
                *formats,
            )
        self.formats = formats
        self.conversation_ids.append(metadata.conversation_id)
        # Stale caller audio of a dead link is dropped; text still goes out.
        kept = []
        while not self._queue.empty():
            message = self._queue.get_nowait()
            if not message.startswith(ev.USER_AUDIO_PREFIX):
                kept.append(message)
        for message in kept:
            self._queue.put_nowait(message)
        # event_ids count from the start of each conversation.
        self._last_interrupt_id = 0
        self._last_audio_id = 0
        self.turns.start_billing()

    async def _send_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        send, get = ws.send_str, self._queue.get
        while True:
            await send(await get())

    async def _receive_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for frame in ws:
            if frame.type is aiohttp.WSMsgType.ERROR:
                raise ProviderConnectionError(
                    f"ElevenLabs Agents websocket failed: {frame.data}", provider=PROVIDER
                )
            if frame.type is not aiohttp.WSMsgType.TEXT:
                self.bad_frames += 1
                continue
            try:
                event = ev.parse_server_event(frame.data)
            except ev.ConvAIProtocolError as exc:
                self.bad_frames += 1
                log.warning("elevenlabs_convai: bad server frame (%s); %d so far", exc, self.bad_frames)
                continue
            if isinstance(event, ev.Ping):
                # Answered at once, ahead of queued audio: the server ends conversations that stop answering.
                await ws.send_str(ev.pong(event.event_id))
                self.pongs += 1
                continue
            await self._on_event(event)
        raise ProviderConnectionError(
            f"ElevenLabs Agents closed the conversation ({_close_reason(ws)})", provider=PROVIDER
        )

    # -------------------------------------------------------------- server events

    async def _on_event(self, event: ev.ServerEvent) -> None:
        match event:
            case ev.Audio():
                await self._on_audio(event)
            case ev.Interruption():
                await self._on_interruption(event)
            case ev.AgentResponse():
                self.turns.agent_response(event.text, connected=self._connected)
            case ev.AgentResponseCorrection():
                self.turns.corrected(event.corrected)
            case ev.UserTranscript():
                self.turns.user_transcript(event.text)
            case ev.ClientToolCall():
                # What the agent said before calling the tool is a reply of its own: the next audio is new.
                self.turns.report()
                self.tools.spawn(self._run_tool(event))
            case ev.Metadata():
                pass  # only the first frame carries it
            case ev.UnknownEvent():
                self.unknown_events += 1
                log.info(
                    "elevenlabs_convai: unknown server event %r (%d so far)", event.type, self.unknown_events
                )
            case _:
                pass

    async def _on_audio(self, event: ev.Audio) -> None:
        self._last_audio_id = max(self._last_audio_id, event.event_id)
        if event.event_id <= self._last_interrupt_id or self._codec is None:
            return  # generated before the caller cut in: never played
        ulaw = self._codec.down(event.audio)
        self.turns.audio(ulaw, self.ctx.clock.monotonic())
        if ulaw:
            await self.ctx.audio.play(ulaw, segment=self.turns.segment)

    async def _on_interruption(self, event: ev.Interruption) -> None:
        self._last_interrupt_id = max(self._last_interrupt_id, event.event_id)
        if self._codec is not None:
            self._codec.reset()
        turn = self.turns.current
        if not self.ctx.audio.speaking:
            return
        t0 = self.ctx.clock.monotonic()
        heard = await self.ctx.audio.interrupt()
        reaction_ms = (self.ctx.clock.monotonic() - t0) * 1000
        self.turns.interrupted(turn)
        played_ms = heard[1] if heard is not None else 0
        self.ctx.emit(BargeIn(**self.ctx.new_event_fields(), played_ms=played_ms, reaction_ms=reaction_ms))

    # -------------------------------------------------------------- tools

    async def _clear_carrier(self) -> None:
        await self.ctx.audio.interrupt()

    async def _run_tool(self, call: ev.ClientToolCall) -> None:
        names = {tool.name for tool in self.ctx.tools}
        if call.tool_name not in names:
            result, is_error = json.dumps({"error": f"no client tool {call.tool_name!r} on this agent"}), True
        else:
            result = await self.ctx.run_tool(call.tool_name, call.parameters)
            is_error = _is_error(result)
        self._queue.put_nowait(ev.client_tool_result(call.tool_call_id, result, is_error=is_error))


def _is_error(result: str) -> bool:
    """patterd tools report failure as {"error": ...}."""
    try:
        data = loads(result)
    except JSONError:
        return False
    return isinstance(data, dict) and set(data) == {"error"}


def _close_reason(ws: aiohttp.ClientWebSocketResponse) -> str:
    code = ws.close_code
    reason = ws.close_reason if hasattr(ws, "close_reason") else None
    return f"close code {code}{': ' + str(reason) if reason else ''}"


class ConvAIEngine:
    """The built provider: one ConvAISession per call (implements kinds.Engine)."""

    def __init__(
        self, options: ElevenLabsConvAIOptions, build: BuildContext, http: aiohttp.ClientSession
    ) -> None:
        self.options = options
        self.build = build
        self.http = http
        self.warnings = options.config_warnings()

    @asynccontextmanager
    async def _session(self, call: CallContext) -> AsyncIterator[ConvAISession]:
        session = ConvAISession(self.options, call, self.http)
        try:
            yield session
        finally:
            await session.tools.stop()  # a tool still running when the call ends is stopped, not left behind

    def session(self, call: CallContext) -> contextlib.AbstractAsyncContextManager[ConvAISession]:
        return self._session(call)


@asynccontextmanager
async def build(options: ElevenLabsConvAIOptions, ctx: BuildContext) -> AsyncIterator[ConvAIEngine]:
    # One websocket per call holds its connection for the whole call: no pool limit.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        yield ConvAIEngine(options, ctx, http)


SPEC = ProviderSpec(
    kind="engine",
    name="elevenlabs_convai",
    options=ElevenLabsConvAIOptions,
    build=build,
    summary="ElevenLabs Agents (Conversational AI) speech-to-speech engine (ulaw_8000 or transcoded PCM)",
    check=check,
    capabilities=Capabilities(
        streaming=True,
        tools=True,
        sample_rates=(8000, 16000, 22050, 24000, 44100, 48000),
        notes="client tools",
    ),
)
