"""The `engine.elevenlabs_convai` provider: one ElevenLabs Agents conversation websocket per call.

The agent (its LLM, voice, turn-taking and client tools) is configured at ElevenLabs; patterd
sends the call's overrides and variables in the first frame, streams the caller's audio, plays the
agent's audio, clears the carrier on `interruption`, answers `ping`, and runs `client_tool_call`s
with the agent's patterd tools. Wire format: `patterd.protocols.elevenlabs_convai`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from pydantic import Field, SecretStr, model_validator

from patterd.errors import ProviderAuthError, ProviderConnectionError, ProviderError
from patterd.protocols import elevenlabs_convai as ev
from patterd.protocols.audio import Resampler, is_voiced, pcm16_to_ulaw, ulaw_to_pcm16
from patterd.protocols.events import BargeIn, TranscriptLine, Usage
from patterd.protocols.jsontext import JSONError, loads
from patterd.providers.kinds import CallContext, UserTurnEnded
from patterd.providers.spec import (
    BuildContext,
    Capabilities,
    ProviderOptions,
    ProviderSpec,
    env_secret,
    env_str,
)
from patterd.tasks import being_cancelled, cancel_and_wait

log = logging.getLogger(__name__)

PROVIDER = ev.PROVIDER
KEY_VARIABLE = "ELEVENLABS_API_KEY"
SEND_QUEUE_LIMIT = 500  # 10 s of 20 ms frames; beyond that the link is dead and audio is dropped
CLOSE_TIMEOUT_SECS = 2.0
HISTORY_LINES = 40  # transcript lines handed to a new conversation after a reconnect


class ElevenLabsConvAIOptions(ProviderOptions):
    """Options of `engine: {type: elevenlabs_convai, ...}`."""

    agent_id: str | None = Field(
        default_factory=env_str("ELEVENLABS_AGENT_ID"),
        description="the ElevenLabs agent to talk to (default $ELEVENLABS_AGENT_ID)",
    )
    api_key: SecretStr | None = Field(
        default_factory=env_secret(KEY_VARIABLE),
        description="fetches a signed conversation URL for a private agent (default $ELEVENLABS_API_KEY)",
    )
    private: bool = Field(
        default=True,
        description="the agent requires authentication: each connection first GETs a signed URL with "
        "api_key (false: a public agent, connected to directly)",
    )
    base_url: str = "https://api.elevenlabs.io"
    override_prompt: bool = Field(
        default=True, description="send the agent's system_prompt as the prompt override (when not empty)"
    )
    override_first_message: bool = Field(
        default=True, description="send the agent's first_message as the first-message override"
    )
    voice_id: str | None = Field(default=None, description="voice override (null: the agent's voice)")
    language: str | None = Field(default=None, description="language override (null: the agent's language)")
    send_variables: bool = Field(
        default=True, description="send the agent's variables as the conversation's dynamic_variables"
    )
    max_retries: int = Field(default=3, ge=0)
    retry_backoff_secs: float = Field(default=0.5, ge=0)
    connect_timeout_secs: float = Field(default=10.0, gt=0)
    keepalive_secs: float | None = Field(
        default=20.0, gt=0, description="websocket ping interval; no pong within half of it is a lost link"
    )

    @model_validator(mode="after")
    def _require(self) -> ElevenLabsConvAIOptions:
        if not self.agent_id:
            raise ValueError("ElevenLabs Agents engine requires agent_id (set ELEVENLABS_AGENT_ID)")
        if self.private and (self.api_key is None or not self.api_key.get_secret_value()):
            raise ValueError(
                f"a private ElevenLabs agent requires api_key (set {KEY_VARIABLE}), or set private: false"
            )
        return self

    def config_warnings(self) -> list[str]:
        """Printed by `patterd check`: what the agent's own settings at ElevenLabs must allow."""
        return [
            "elevenlabs_convai: the agent's audio formats are set at ElevenLabs; set both "
            "asr.user_input_audio_format and tts.agent_output_audio_format to ulaw_8000, otherwise every "
            "frame is transcoded (`patterd check --probe` reads them); overrides sent (prompt, "
            "first_message, voice, language) must be enabled in the agent's security settings, and "
            "patterd tools must exist on the agent as client tools of the same name"
        ]

    def agent(self) -> str:
        assert self.agent_id is not None  # the validator made sure
        return self.agent_id

    def key(self) -> str:
        return self.api_key.get_secret_value() if self.api_key else ""


@dataclass
class _Turn:
    """One agent reply while it plays."""

    text: str
    engine_ms: float | None = None
    audio_bytes: int = 0
    interrupted: bool = False
    reported: bool = False


class _Transcoder:
    """Caller μ-law 8 kHz → the agent's input format, and its output format → μ-law 8 kHz."""

    def __init__(self, input_format: str, output_format: str) -> None:
        self.in_rate = ev.sample_rate(input_format)
        self.out_rate = ev.sample_rate(output_format)
        self.in_ulaw = input_format == ev.ULAW_8000
        self.out_ulaw = output_format == ev.ULAW_8000
        self._up = Resampler(8000, self.in_rate) if not self.in_ulaw and self.in_rate != 8000 else None
        self._down: Resampler | None = None
        self._odd = b""  # a PCM byte split across chunks
        self.reset()

    def reset(self) -> None:
        """Forget the output filter's state (after an interruption, audio restarts elsewhere)."""
        self._odd = b""
        if not self.out_ulaw and self.out_rate != 8000:
            self._down = Resampler(self.out_rate, 8000)

    def up(self, ulaw: bytes) -> bytes:
        if self.in_ulaw:
            return ulaw
        pcm = ulaw_to_pcm16(ulaw)
        return self._up.process(pcm) if self._up is not None else pcm

    def down(self, audio: bytes) -> bytes:
        if self.out_ulaw:
            return audio
        pcm = self._odd + audio
        cut = len(pcm) - len(pcm) % 2
        pcm, self._odd = pcm[:cut], pcm[cut:]
        if self._down is not None:
            pcm = self._down.process(pcm)
        return pcm16_to_ulaw(pcm)


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
        self._codec: _Transcoder | None = None
        self._last_interrupt_id = 0
        self._last_audio_id = 0
        self._turn: _Turn | None = None
        self._turn_seq = 0
        self._finisher: asyncio.Task[None] | None = None
        self._audio_came = asyncio.Event()
        self._tools: set[asyncio.Task[None]] = set()
        self._greeted = False
        self._last_voiced_at: float | None = None
        self._turn_voiced_at: float | None = None
        self._billed_at: float | None = None  # conversation time up to here is reported as Usage
        self._history: collections.deque[tuple[str, str]] = collections.deque(maxlen=HISTORY_LINES)

    # -------------------------------------------------------------- EngineSession

    def push_audio(self, ulaw: bytes) -> None:
        if not self._connected or self._codec is None or self._queue.qsize() >= SEND_QUEUE_LIMIT:
            self.dropped_frames += 1
            return
        if is_voiced(ulaw):
            # The agent's own VAD ends the turn; the last loud frame is our estimate of where speech ended.
            self._last_voiced_at = self.ctx.clock.monotonic()
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
            self._spawn(self._clear_carrier())
            turn = self._turn
            if turn is not None and not turn.reported:
                turn.interrupted = True
                if self._finisher is not None:
                    self._finisher.cancel()
        self._queue.put_nowait(
            ev.user_message(f"Say exactly the following, word for word, and nothing else: {text}")
        )

    async def run(self) -> None:
        failures = 0
        try:
            while True:
                try:
                    await self._run_connection()
                    failures = 0
                except ProviderAuthError:
                    raise
                except (OSError, TimeoutError, aiohttp.ClientError, ProviderConnectionError) as exc:
                    if being_cancelled():
                        raise asyncio.CancelledError from exc
                    failures += 1
                    if failures > self.options.max_retries:
                        raise ProviderConnectionError(
                            f"ElevenLabs Agents at {self.options.base_url} unreachable after {failures} "
                            f"attempts: {exc}",
                            provider=PROVIDER,
                        ) from exc
                    log.warning(
                        "elevenlabs_convai connection lost (%s); retry %d/%d",
                        exc,
                        failures,
                        self.options.max_retries,
                    )
                    await asyncio.sleep(self.options.retry_backoff_secs * 2 ** (failures - 1))
        finally:
            self._connected = False
            self._report_turn()
            for task in list(self._tools):
                task.cancel()
            if self._finisher is not None:
                self._finisher.cancel()

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
            if self._history:  # a reconnect: the new conversation learns what was said
                lines = "\n".join(f"{role}: {text}" for role, text in self._history)
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
            self._bill()
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
            self._codec = _Transcoder(metadata.user_input_audio_format, metadata.agent_output_audio_format)
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
        self._billed_at = self.ctx.clock.monotonic()

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
                self._on_agent_response(event.text)
            case ev.AgentResponseCorrection():
                # The interrupted reply cut to what was said: the line the record keeps.
                turn = self._turn
                if turn is not None and not turn.reported and event.corrected.strip():
                    turn.text = event.corrected.strip()
                    if turn.interrupted:
                        self._report_turn()
            case ev.UserTranscript():
                self._on_user_transcript(event.text)
            case ev.ClientToolCall():
                # What the agent said before calling the tool is a reply of its own: the next audio is new.
                self._report_turn()
                self._spawn(self._run_tool(event))
            case ev.Metadata():
                pass  # only the first frame carries it
            case ev.UnknownEvent():
                self.unknown_events += 1
                log.info(
                    "elevenlabs_convai: unknown server event %r (%d so far)", event.type, self.unknown_events
                )
            case _:
                pass

    def _on_user_transcript(self, text: str) -> None:
        """The agent ended the caller's turn: its latency runs from the turn's last voiced frame."""
        self._report_turn()
        voiced_at, self._last_voiced_at = self._last_voiced_at, None
        if voiced_at is not None:
            self._turn_voiced_at = voiced_at
            self.ctx.emit(UserTurnEnded(voiced_at))
        text = text.strip()
        if text:
            self._history.append(("user", text))
            self.ctx.emit(TranscriptLine(**self.ctx.new_event_fields(), role="user", text=text))

    def _on_agent_response(self, text: str) -> None:
        turn = self._turn
        if turn is not None and not turn.reported and not turn.text and not turn.interrupted:
            # "Sent with the first audio chunk": the reply whose audio already started gets its text.
            turn.text = text.strip()
            self._bill()
            return
        self._report_turn()
        self._turn_seq += 1
        self._turn = _Turn(text=text.strip())
        self._audio_came.clear()
        self._finisher = asyncio.create_task(self._finish_when_played(self._turn))
        self._bill()  # conversation time so far, so a long call shows its cost as it goes

    def _segment(self) -> str:
        return f"el_{self._turn_seq}"

    async def _on_audio(self, event: ev.Audio) -> None:
        self._last_audio_id = max(self._last_audio_id, event.event_id)
        if event.event_id <= self._last_interrupt_id or self._codec is None:
            return  # generated before the caller cut in: never played
        turn = self._turn
        if turn is None or turn.reported or turn.interrupted:
            # A new reply's first audio, before (or with) its agent_response.
            self._report_turn()
            self._turn_seq += 1
            turn = self._turn = _Turn(text="")
            self._finisher = asyncio.create_task(self._finish_when_played(turn))
        if self._turn_voiced_at is not None:  # the answer's first audio: the engine's share of the turn
            turn.engine_ms = (self.ctx.clock.monotonic() - self._turn_voiced_at) * 1000
            self._turn_voiced_at = None
        ulaw = self._codec.down(event.audio)
        turn.audio_bytes += len(ulaw)
        self._audio_came.set()
        if ulaw:
            await self.ctx.audio.play(ulaw, segment=self._segment())

    async def _finish_when_played(self, turn: _Turn) -> None:
        """Report a reply once its audio stopped coming and the caller has heard all of it."""
        while True:
            await self._audio_came.wait()
            self._audio_came.clear()
            await self.ctx.audio.drained()
            if not self._audio_came.is_set():
                break
        if self._turn is turn:
            self._report_turn()

    async def _on_interruption(self, event: ev.Interruption) -> None:
        self._last_interrupt_id = max(self._last_interrupt_id, event.event_id)
        if self._codec is not None:
            self._codec.reset()
        turn = self._turn
        if not self.ctx.audio.speaking:
            return
        t0 = self.ctx.clock.monotonic()
        heard = await self.ctx.audio.interrupt()
        reaction_ms = (self.ctx.clock.monotonic() - t0) * 1000
        if turn is not None and not turn.reported:
            # Reported when agent_response_correction says what was said (or at the next turn's start).
            turn.interrupted = True
            if self._finisher is not None:
                self._finisher.cancel()
        played_ms = heard[1] if heard is not None else 0
        self.ctx.emit(BargeIn(**self.ctx.new_event_fields(), played_ms=played_ms, reaction_ms=reaction_ms))

    def _report_turn(self) -> None:
        turn = self._turn
        if turn is None or turn.reported:
            return
        turn.reported = True
        if self._finisher is not None and self._finisher is not asyncio.current_task():
            self._finisher.cancel()
        if turn.text:
            self._history.append(("assistant", turn.text))
            engine_ms = None if turn.engine_ms is None else round(turn.engine_ms, 1)
            self.ctx.emit(
                TranscriptLine(
                    **self.ctx.new_event_fields(),
                    role="assistant",
                    text=turn.text,
                    interrupted=turn.interrupted,
                    engine_ms=engine_ms,
                )
            )

    def _bill(self) -> None:
        """Usage for the conversation time since the last report (ElevenLabs bills call minutes)."""
        if self._billed_at is None:
            return
        now = self.ctx.clock.monotonic()
        seconds, self._billed_at = now - self._billed_at, (now if self._connected else None)
        if seconds > 0:
            self.ctx.emit(
                Usage(
                    **self.ctx.new_event_fields(),
                    component="llm",
                    provider=PROVIDER,
                    quantities={"audio_seconds": round(seconds, 3)},
                )
            )

    # -------------------------------------------------------------- tools

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tools.add(task)
        task.add_done_callback(self._tools.discard)

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
            for task in list(session._tools):
                await cancel_and_wait(task)

    def session(self, call: CallContext) -> contextlib.AbstractAsyncContextManager[ConvAISession]:
        return self._session(call)


@asynccontextmanager
async def build(options: ElevenLabsConvAIOptions, ctx: BuildContext) -> AsyncIterator[ConvAIEngine]:
    # One websocket per call holds its connection for the whole call: no pool limit.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        yield ConvAIEngine(options, ctx, http)


def _auth_error(status: int, opts: ElevenLabsConvAIOptions, what: str) -> ProviderError:
    if status in (401, 403):
        return ProviderAuthError(
            f"ElevenLabs refused the api_key at {what} (HTTP {status}; check api_key / {KEY_VARIABLE})",
            provider=PROVIDER,
        )
    if status == 404:
        return ProviderError(
            f"ElevenLabs has no agent {opts.agent()!r} (HTTP 404 at {what}; check agent_id / ELEVENLABS_AGENT_ID)",
            provider=PROVIDER,
        )
    return ProviderConnectionError(f"ElevenLabs {what} failed with HTTP {status}", provider=PROVIDER)


async def _get_json(http: aiohttp.ClientSession, url: str, opts: ElevenLabsConvAIOptions, what: str) -> str:
    async with asyncio.timeout(opts.connect_timeout_secs):
        async with http.get(url, headers={"xi-api-key": opts.key()}) as response:
            body = await response.text()
            if response.status != 200:
                raise _auth_error(response.status, opts, what)
            return body


async def conversation_url(http: aiohttp.ClientSession, opts: ElevenLabsConvAIOptions) -> str:
    """Where to connect: a fresh signed URL for a private agent (they expire), else the public URL."""
    if not opts.private:
        return ev.conversation_url(opts.base_url, opts.agent())
    body = await _get_json(http, ev.signed_url_request(opts.base_url, opts.agent()), opts, "get-signed-url")
    try:
        return ev.parse_signed_url(body)
    except ev.ConvAIProtocolError as exc:
        raise ProviderConnectionError(str(exc), provider=PROVIDER) from exc


async def open_socket(
    http: aiohttp.ClientSession, opts: ElevenLabsConvAIOptions
) -> aiohttp.ClientWebSocketResponse:
    """Open the conversation websocket (signed URL first for a private agent), bounded by connect_timeout_secs."""
    try:
        url = await conversation_url(http, opts)
        # A signed URL carries its own credential; a public agent gets the key in the header when we have one.
        headers = {"xi-api-key": opts.key()} if not opts.private and opts.key() else {}
        async with asyncio.timeout(opts.connect_timeout_secs):
            return await http.ws_connect(
                url,
                headers=headers,
                compress=0,
                max_msg_size=0,
                autoping=True,
                heartbeat=opts.keepalive_secs,
                timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT_SECS),
            )
    except aiohttp.WSServerHandshakeError as exc:
        raise _auth_error(exc.status, opts, "the conversation handshake") from exc
    except TimeoutError as exc:
        raise ProviderConnectionError(
            f"ElevenLabs Agents at {opts.base_url} did not answer within {opts.connect_timeout_secs} s",
            provider=PROVIDER,
        ) from exc


async def check(engine: ConvAIEngine) -> None:
    """GET the agent's configuration with the key (or, keyless, open a conversation); warn about formats."""
    opts = engine.options
    try:
        if not opts.key():
            ws = await open_socket(engine.http, opts)
            await ws.close()
            return
        body = await _get_json(engine.http, ev.agent_request(opts.base_url, opts.agent()), opts, "the agent")
    except (OSError, TimeoutError, aiohttp.ClientError) as exc:
        raise ProviderConnectionError(
            f"ElevenLabs at {opts.base_url} unreachable: {exc}", provider=PROVIDER
        ) from exc
    try:
        formats = ev.parse_agent_formats(body)
    except ev.ConvAIProtocolError as exc:
        raise ProviderError(f"ElevenLabs agent configuration unreadable: {exc}", provider=PROVIDER) from exc
    problems = formats.problems()
    if problems:
        warning = (
            f"elevenlabs_convai agent {opts.agent()}: {'; '.join(problems)}; patterd transcodes every "
            "frame to and from ulaw_8000 (set both to ulaw_8000 at ElevenLabs to avoid it)"
        )
        engine.warnings = [*engine.warnings, warning]
        log.warning("%s", warning)
        print(f"warning: {warning}")  # `patterd check --probe` shows warnings on stdout


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
