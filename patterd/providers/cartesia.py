"""`stt.cartesia` and `tts.cartesia`: Cartesia's streaming STT (ink-whisper) and TTS (sonic) websockets, 8 kHz μ-law.

STT: one websocket per call's stream, the carrier's μ-law sent as is (`encoding=pcm_mulaw`,
`sample_rate=8000`), silence included (ink-whisper's endpointing counts it; Cartesia has no keepalive
message: audio is the keepalive). `flush()` sends `finalize` and returns once `flush_done` came; the
turn's text is its `is_final` transcripts joined verbatim (from 2026-03-01 each is a delta that
carries its own leading space). A final ink-whisper sends by itself (after `max_silence_duration_secs`
of silence) ends the turn when `endpointing` is on. Closing sends `close` and waits for `done`.

TTS: one websocket per provider, opened when it is built (pre-opened: no handshake in the first
turn) and re-opened when Cartesia closed it (idle sockets close after 5 minutes; we replace one
idle for `idle_reconnect_secs` before that). Every synthesis is a context (`context_id`) multiplexed
on it; closing a synthesis early (barge-in) sends `cancel` for its id, and chunks still in flight for
it are dropped; the next sentence gets a new id. `speak_stream()` feeds text pieces into one context
with `continue: true` (Cartesia joins them verbatim) for callers that stream LLM text.

Wire format and sources: `patterd.protocols.cartesia`. Billing: STT per audio second, TTS per
character (prices in `patterd.cost`, provider name `cartesia`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from pydantic import Field, SecretStr, model_validator

from patterd.errors import (
    ProviderAuthError,
    ProviderConnectionError,
    ProviderError,
    ProviderProtocolError,
    ProviderRateLimitError,
    error_for_status,
)
from patterd.protocols import cartesia as wire
from patterd.providers import ws_stt
from patterd.providers.kinds import Transcript
from patterd.providers.spec import BuildContext, Capabilities, ProviderOptions, ProviderSpec, env_secret

log = structlog.get_logger(__name__)

NAME = "cartesia"
KEY_ENV = "CARTESIA_API_KEY"
AUTH_HINT = f"check api_key or {KEY_ENV}"
DEFAULT_VOICE = "f786b574-daa5-4673-aa0c-cbe3e8534c02"  # "Katie - Friendly Fixer", Cartesia's agent voice


class _Common(ProviderOptions):
    """Options both Cartesia providers share."""

    api_key: SecretStr | None = Field(default_factory=env_secret(KEY_ENV), description="sent as `X-API-Key`")
    base_url: str = Field(
        default=wire.DEFAULT_BASE_URL, description="https:// (websockets use wss:// on the same host)"
    )
    cartesia_version: str = Field(
        default=wire.DEFAULT_VERSION,
        pattern=r"^\d{4}-\d{2}-\d{2}$",
        description="the `Cartesia-Version` header (2025-04-16 or 2026-03-01 are documented)",
    )
    connect_timeout_secs: float = Field(default=10.0, gt=0, description="the whole websocket handshake")
    connect_retries: int = Field(default=2, ge=0, le=10, description="retries on 429, 5xx and network errors")
    retry_backoff_ms: int = Field(default=250, ge=0, le=60000, description="first retry delay, then doubled")

    @model_validator(mode="after")
    def _check_common(self) -> _Common:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
            raise ValueError(f"cartesia base_url {self.base_url!r} is not an http(s):// or ws(s):// URL")
        if self.api_key is None and (parts.hostname or "").endswith("cartesia.ai"):
            raise ValueError(f"cartesia needs api_key (or the {KEY_ENV} environment variable)")
        return self

    def headers(self) -> dict[str, str]:
        key = self.api_key.get_secret_value() if self.api_key is not None else ""
        return wire.headers(key, self.cartesia_version)


class STTOptions(_Common):
    """Options of `stt.cartesia`."""

    model: str = "ink-whisper"
    language: str | None = "en"
    endpointing: bool = Field(
        default=True, description="a final Cartesia sends by itself (after silence) ends the turn"
    )
    max_silence_duration_secs: float | None = Field(
        default=None,
        gt=0,
        le=10,
        description="ink-whisper: silence before it finalizes by itself (null: its default)",
    )
    min_volume: float | None = Field(
        default=None, ge=0, le=1, description="ink-whisper: what counts as silence"
    )
    flush_timeout_secs: float = Field(
        default=2.0,
        gt=0,
        le=30,
        description="how long a flush waits for `flush_done` (then the stream is broken)",
    )
    close_timeout_secs: float = Field(default=2.0, gt=0, description="wait for `done` after `close`")

    def params(self) -> wire.STTParams:
        return wire.STTParams(
            model=self.model,
            language=self.language,
            max_silence_duration_secs=self.max_silence_duration_secs,
            min_volume=self.min_volume,
        )


class TTSOptions(_Common):
    """Options of `tts.cartesia`."""

    model_id: str = Field(default="sonic-3", description="sonic-3, sonic-3.5, sonic-2, sonic-latest, ...")
    voice_id: str = Field(default=DEFAULT_VOICE, min_length=1, description="a Cartesia voice id")
    language: str | None = "en"
    speed: str | None = Field(default=None, description='sonic-2 and older: "slow", "normal" or "fast"')
    max_buffer_delay_ms: int | None = Field(
        default=None,
        ge=0,
        le=5000,
        description="how long Cartesia may buffer streamed text (null: its default)",
    )
    timeout_secs: float = Field(default=10.0, gt=0, description="the longest wait for the next audio chunk")
    max_retries: int = Field(default=2, ge=0, le=5, description="429/5xx/connection retries before any audio")
    preconnect: bool = Field(default=True, description="open the websocket when the provider starts")
    idle_reconnect_secs: float = Field(
        default=280.0, gt=0, description="replace a socket idle this long (Cartesia closes them at 5 min)"
    )


# ================================================================== STT


class CartesiaSTTStream(ws_stt.Stream):
    """One call's live recognition (kinds.STTStream) over an open `/stt/websocket`."""

    task_prefix = "cartesia-stt"
    _log = log
    _owner: CartesiaSTT

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, options: STTOptions, owner: CartesiaSTT) -> None:
        super().__init__(ws, owner)
        self._options = options
        self._deltas = wire.finals_are_deltas(options.cartesia_version)
        self._segments: list[str] = []  # final texts of the open turn, as received
        self._flushes = asyncio.Condition()
        self._flush_asked = 0
        self._flush_done = 0
        self._done = False  # Cartesia sent `done`: the stream is over
        self._error: wire.ErrorMessage | None = None
        self.request_id = ""

    # -------- kinds.STTStream (push_audio: ws_stt.Stream)

    async def flush(self) -> None:
        """`finalize`; return once `flush_done` (and so the turn's final) came."""
        if self._closing or self._ended:
            return
        async with self._flushes:
            self._flush_asked += 1
            wanted = self._flush_asked
        self._send_q.put_nowait(ws_stt.Mark())
        answered = ws_stt.wait_answer(
            self._flushes, lambda: self._flush_done >= wanted or self._ended, self._options.flush_timeout_secs
        )
        if not await answered:
            # Cartesia always answers finalize: silence means the upstream hung. Give the turn what was
            # finalized, then end the stream with a retryable error so the pipeline reconnects.
            log.warning("cartesia finalize not answered", timeout_secs=self._options.flush_timeout_secs)
            self._end_turn()
            self._fail(
                ProviderConnectionError(
                    f"stt.cartesia did not answer finalize within {self._options.flush_timeout_secs} s",
                    provider=NAME,
                )
            )

    async def __aiter__(self) -> AsyncIterator[Transcript]:  # ends every reader, not just the first
        while True:
            item = await self._out.get()
            if item is None:
                self._out.put_nowait(None)  # a second reader (or a re-iteration) ends too
                return
            if isinstance(item, ProviderError):
                self._out.put_nowait(None)
                raise item
            yield item

    def _fail(self, error: ProviderError) -> None:
        if not self._ended:
            self._ended = True
            self._out.put_nowait(error)
            self._out.put_nowait(None)  # the socket goes when the pipeline leaves the stream (close())

    # -------- sending

    async def _sender(self) -> None:
        await ws_stt.send_loop(
            self._ws,
            self._send_q,
            end=lambda: wire.close_command(self._options.cartesia_version),
            mark=lambda: wire.FINALIZE,
            sent=self._sent,
            log=log,
            event="cartesia stt send stopped",
        )

    # -------- receiving

    async def _receiver(self) -> None:
        ws = self._ws
        error, _ = await ws_stt.read_loop(ws, self._on_text, label="stt.cartesia", provider=NAME)
        if error is None and not self._done and not self._closing:
            error = self._close_error(ws.close_code)
        self._end_turn()  # what was finalized is still what the caller said
        if not self._ended:
            self._ended = True
            if error is not None:
                self._out.put_nowait(error)
            self._out.put_nowait(None)
        async with self._flushes:
            self._flushes.notify_all()

    def _close_error(self, code: int | None) -> ProviderError:
        said = "dropped the connection" if code in (None, 1006) else f"closed the stream with {code}"
        if self._error is not None:
            said += f" after an error: {self._error.message[:200]}"
            if self._error.status_code is not None:
                return error_for_status(
                    self._error.status_code, f"stt.cartesia {said}", provider=NAME, auth_hint=AUTH_HINT
                )
        return ProviderConnectionError(f"stt.cartesia {said}", provider=NAME)

    async def _on_text(self, data: str) -> bool:
        """Handle one message; True once `done` came (the stream is over)."""
        try:
            message = wire.parse(data)
        except wire.CartesiaProtocolError as exc:
            ws_stt.count_malformed(log, "cartesia stt message skipped", exc, self, self._owner)
            return False
        if isinstance(message, wire.Transcript):
            self.request_id = message.request_id or self.request_id
            if message.is_final:
                if message.text.strip():
                    self._segments.append(message.text)
                async with self._flushes:
                    flushing = self._flush_done < self._flush_asked
                if self._options.endpointing and not flushing and not self._closing:
                    self._end_turn()  # ink-whisper finalized on silence by itself
                elif message.text.strip():
                    self._out.put_nowait(
                        Transcript(self._joined(), is_final=False, audio_ms=self._audio_ms())
                    )
            elif message.text.strip():
                shown = self._joined([*self._segments, message.text])
                self._out.put_nowait(Transcript(shown, is_final=False, audio_ms=self._audio_ms()))
        elif isinstance(message, wire.FlushDone):
            self._end_turn()
            async with self._flushes:
                self._flush_done += 1
                self._flushes.notify_all()
        elif isinstance(message, wire.Done):
            self._done = True
            return True
        elif isinstance(message, wire.ErrorMessage):
            self._error = message
            log.warning(
                "cartesia stt error message", message=message.message[:200], status=message.status_code
            )
        return False

    def _audio_ms(self) -> float:
        return self.audio_bytes / 8

    def _joined(self, parts: list[str] | None = None) -> str:
        parts = self._segments if parts is None else parts
        if self._deltas:
            return "".join(parts).strip()  # deltas carry their own spacing: never strip them one by one
        return " ".join(p.strip() for p in parts if p.strip())

    def _end_turn(self) -> None:
        if not self._segments:
            return
        text = self._joined()
        self._segments = []
        if text:
            self._out.put_nowait(
                Transcript(text, is_final=True, end_of_utterance=True, audio_ms=self._audio_ms())
            )

    # -------- closing

    async def close(self) -> None:
        """`close` after the audio already pushed, wait briefly for `done`, close the socket."""
        try:
            await self._end(
                self._options.close_timeout_secs,
                "cartesia stt stream did not close in time; closing our side",
                wait_receiver=lambda: not self._ended,
            )
        finally:
            self._owner.audio_seconds += self.audio_seconds


async def _ws_connect(
    http: aiohttp.ClientSession, url: str, options: _Common, what: str
) -> aiohttp.ClientWebSocketResponse:
    """The handshake, retried with doubling backoff while the refusal is retryable."""
    return await ws_stt.connect_with_retries(
        lambda: ws_stt.open_websocket(
            http,
            url,
            headers=options.headers(),
            connect_timeout=options.connect_timeout_secs,
            close_timeout=2.0,
            refused=lambda exc: f"{what} refused the websocket: HTTP {exc.status}",
            unreachable=f"{what} cannot connect to {options.base_url}",
            provider=NAME,
            auth_hint=AUTH_HINT,
        ),
        retries=options.connect_retries,
        backoff_ms=options.retry_backoff_ms,
        log=log,
        event="cartesia handshake failed; retrying",
        what=what,
    )


async def _probe(http: aiohttp.ClientSession, url: str, options: _Common, what: str) -> None:
    try:
        async with http.get(url, headers=options.headers()) as response:
            body = await response.read()
            if response.status != 200:
                detail = wire.error_detail(body, response.status)
                raise error_for_status(
                    response.status,
                    f"{what} {url}: HTTP {response.status}: {detail}",
                    provider=NAME,
                    auth_hint=AUTH_HINT,
                )
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ProviderConnectionError(
            f"{what} {url}: {type(exc).__name__}: {exc or 'timed out'}", provider=NAME
        ) from exc


class CartesiaSTT(ws_stt.Provider[STTOptions, CartesiaSTTStream]):
    """The live `stt.cartesia` (kinds.STT): one HTTP session, one websocket per stream."""

    name = NAME

    def __init__(self, options: STTOptions, http: aiohttp.ClientSession) -> None:
        super().__init__(options, http)
        self.audio_seconds = 0.0  # over closed streams

    def __repr__(self) -> str:
        return f"CartesiaSTT(model={self.options.model!r}, base_url={self.options.base_url!r})"

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        url = wire.stt_url(self.options.base_url, self.options.params())
        return await _ws_connect(self._http, url, self.options, "stt.cartesia")

    def _new_stream(self, ws: aiohttp.ClientWebSocketResponse) -> CartesiaSTTStream:
        return CartesiaSTTStream(ws, self.options, self)

    async def check(self) -> None:
        """`GET /voices?limit=1`: authenticated, cheap, not billed."""
        url = wire.http_url(self.options.base_url, wire.VOICES_PATH) + "?limit=1"
        await _probe(self._http, url, self.options, "stt.cartesia")


# ================================================================== TTS


class _Socket:
    """One TTS websocket and the reader that routes its messages to contexts by id."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, owner: CartesiaTTS) -> None:
        self.ws = ws
        self.owner = owner
        self.contexts: dict[str, asyncio.Queue[bytes | wire.Done | wire.ErrorMessage | ProviderError]] = {}
        self.last_used = time.monotonic()
        self.dead = False
        self.reader = asyncio.create_task(self._read(), name="cartesia-tts-read")

    async def _read(self) -> None:
        error: ProviderError | None = None
        try:
            while True:
                msg = await self.ws.receive()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._route(msg.data)
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    error = ProviderConnectionError(
                        f"tts.cartesia websocket error: {msg.data}", provider=NAME
                    )
                    break
                elif msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                ):
                    break
        except (aiohttp.ClientError, ConnectionError) as exc:
            error = ProviderConnectionError(f"tts.cartesia connection lost: {exc}", provider=NAME)
        self.dead = True
        if error is None:
            code = self.ws.close_code
            said = "dropped the connection" if code in (None, 1006) else f"closed the socket with {code}"
            error = ProviderConnectionError(f"tts.cartesia {said}", provider=NAME)
        for queue in self.contexts.values():
            queue.put_nowait(error)

    def _route(self, data: str) -> None:
        try:
            message = wire.parse(data)
        except wire.CartesiaProtocolError as exc:
            self.owner.malformed += 1
            log.warning("cartesia tts message skipped", error=str(exc)[:200], count=self.owner.malformed)
            return
        if isinstance(message, wire.Chunk | wire.Done | wire.ErrorMessage):
            queue = self.contexts.get(message.context_id)
            if queue is None:
                if isinstance(message, wire.ErrorMessage) and not message.context_id:
                    for q in self.contexts.values():  # a socket-wide error reaches every context
                        q.put_nowait(message)
                elif isinstance(message, wire.Chunk):
                    self.owner.late_chunks += 1  # a cancelled context's audio still in flight: dropped
                return
            queue.put_nowait(message.audio if isinstance(message, wire.Chunk) else message)

    async def close(self) -> None:
        self.dead = True
        await self.ws.close()
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)


class _Stalled(ProviderConnectionError):
    """Cartesia accepted a context and sent nothing for `timeout_secs`."""


class CartesiaTTS:
    """The live `tts.cartesia` (kinds.TTS): one pre-opened websocket, one context per synthesis."""

    name = NAME

    def __init__(self, options: TTSOptions, http: aiohttp.ClientSession) -> None:
        self.options = options
        self._http = http
        self._socket: _Socket | None = None
        self._lock = asyncio.Lock()
        self._preopen: asyncio.Task[None] | None = None
        self._preopen_error: ProviderError | None = None
        self.characters = 0  # sent for synthesis: what Cartesia bills
        self.connects = 0
        self.cancels = 0
        self.late_chunks = 0
        self.malformed = 0

    def __repr__(self) -> str:
        return f"CartesiaTTS(model_id={self.options.model_id!r}, voice_id={self.options.voice_id!r})"

    # -------- the socket

    def start(self) -> None:
        if self.options.preconnect:
            self._preopen = asyncio.create_task(self._pre_open(), name="cartesia-tts-preopen")

    async def _pre_open(self) -> None:
        try:
            await self._connected()
        except ProviderError as exc:
            # Reported on first use for a refused key; anything else is retried then.
            log.warning("cartesia tts could not pre-open its websocket", error=str(exc))
            if isinstance(exc, ProviderAuthError):
                self._preopen_error = exc

    async def _wait_preopen(self) -> None:
        task, self._preopen = self._preopen, None
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def _connected(self) -> _Socket:
        """The live socket, (re)opened when missing, closed by Cartesia, or idle near its 5 minutes."""
        async with self._lock:
            sock = self._socket
            idle = sock is not None and time.monotonic() - sock.last_used > self.options.idle_reconnect_secs
            if sock is not None and (sock.dead or sock.ws.closed or (idle and not sock.contexts)):
                self._socket = None
                await sock.close()
                sock = None
            if sock is None:
                ws = await _ws_connect(
                    self._http, wire.tts_url(self.options.base_url), self.options, "tts.cartesia"
                )
                self.connects += 1
                sock = self._socket = _Socket(ws, self)
            sock.last_used = time.monotonic()
            return sock

    async def close(self) -> None:
        if self._preopen is not None:
            self._preopen.cancel()
        await self._wait_preopen()
        if self._socket is not None:
            sock, self._socket = self._socket, None
            await sock.close()

    # -------- synthesis

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """Speak `text` as 8 kHz μ-law chunks; closing the generator cancels the context (barge-in)."""
        if not text.strip():
            return

        async for chunk in self._run(text, None):
            yield chunk

    async def speak_stream(self, pieces: AsyncIterable[str]) -> AsyncIterator[bytes]:
        """Speak text as it is produced: each piece goes into one context with `continue: true`.

        Retried (with backoff, on a new context) only while no audio was yielded and no piece beyond the
        first was read, so a retry never repeats audio nor loses text.
        """
        iterator = aiter(pieces)
        first = await anext(iterator, None)
        if first is None:
            return
        async for chunk in self._run(first, iterator):
            yield chunk

    async def _run(self, first: str, rest: AsyncIterator[str] | None) -> AsyncIterator[bytes]:
        """One context: `first`, then `rest` (None: `first` is all, sent with `continue: false`)."""
        await self._wait_preopen()
        if self._preopen_error is not None:
            error, self._preopen_error = self._preopen_error, None
            raise error
        o = self.options
        attempt = 0
        while True:
            sent = 0
            context_id = f"patterd-{uuid.uuid4().hex}"
            sock: _Socket | None = None
            queue: asyncio.Queue[bytes | wire.Done | wire.ErrorMessage | ProviderError] = asyncio.Queue()
            finished = False
            feeder: asyncio.Task[None] | None = None
            try:
                sock = await self._connected()
                sock.contexts[context_id] = queue
                await self._send(sock, context_id, first, more=rest is not None)
                if rest is not None:
                    feeder = asyncio.create_task(self._feed(sock, context_id, rest, queue))
                while True:
                    try:
                        async with asyncio.timeout(o.timeout_secs):
                            item = await queue.get()
                    except TimeoutError:
                        raise _Stalled(
                            f"tts.cartesia sent no audio for {o.timeout_secs} s", provider=NAME
                        ) from None
                    if isinstance(item, bytes):
                        if item:
                            sent += len(item)
                            sock.last_used = time.monotonic()
                            yield item
                    elif isinstance(item, wire.Done):
                        finished = True
                        return
                    elif isinstance(item, wire.ErrorMessage):
                        finished = True  # the context is over at Cartesia's end
                        raise self._error(item)
                    else:
                        raise item
            except ProviderError as exc:
                # A stall already cost the caller timeout_secs of silence: the pipeline decides on
                # another try, not a second hidden wait here.
                stalled = isinstance(exc, _Stalled)
                if not exc.retryable or sent or attempt >= o.max_retries or feeder is not None or stalled:
                    raise
                attempt += 1
                if (
                    attempt == 1
                    and sock is not None
                    and sock.dead
                    and not isinstance(exc, ProviderRateLimitError)
                ):
                    continue  # a socket Cartesia had closed while idle: a new one at once, no backoff
                await asyncio.sleep(o.retry_backoff_ms / 1000 * 2 ** (attempt - 1))
            finally:
                if feeder is not None:
                    feeder.cancel()
                    await asyncio.gather(feeder, return_exceptions=True)
                if sock is not None:
                    sock.contexts.pop(context_id, None)  # late chunks for this id are dropped
                    if not finished and not sock.dead:
                        self.cancels += 1
                        with contextlib.suppress(aiohttp.ClientError, ConnectionError, RuntimeError):
                            await sock.ws.send_str(wire.cancel(context_id))

    async def _send(self, sock: _Socket, context_id: str, text: str, *, more: bool) -> None:
        o = self.options
        message = wire.generation(
            context_id=context_id,
            transcript=text,
            model_id=o.model_id,
            voice_id=o.voice_id,
            language=o.language,
            more=more,
            max_buffer_delay_ms=o.max_buffer_delay_ms,
            speed=o.speed,
        )
        try:
            await sock.ws.send_str(message)
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            sock.dead = True
            raise ProviderConnectionError(f"tts.cartesia send failed: {exc}", provider=NAME) from exc
        self.characters += len(text)

    async def _feed(
        self,
        sock: _Socket,
        context_id: str,
        pieces: AsyncIterator[str],
        queue: asyncio.Queue[bytes | wire.Done | wire.ErrorMessage | ProviderError],
    ) -> None:
        """The rest of a streamed text, then `continue: false` (an empty transcript ends the context)."""
        try:
            async for piece in pieces:
                if piece:
                    await self._send(sock, context_id, piece, more=True)
            await self._send(sock, context_id, "", more=False)
        except ProviderError as exc:
            queue.put_nowait(exc)

    @staticmethod
    def _error(message: wire.ErrorMessage) -> ProviderError:
        text = f"tts.cartesia error{f' {message.error_code}' if message.error_code else ''}: {message.message[:200]}"
        if message.status_code is None:
            return ProviderProtocolError(text, provider=NAME)
        return error_for_status(message.status_code, text, provider=NAME, auth_hint=AUTH_HINT)

    async def check(self) -> None:
        """`GET /voices/{voice_id}`: the key works and the voice exists."""
        await self._wait_preopen()
        url = wire.voice_url(self.options.base_url, self.options.voice_id)
        await _probe(self._http, url, self.options, "tts.cartesia")


# ================================================================== specs


@asynccontextmanager
async def build_stt(options: STTOptions, ctx: BuildContext) -> AsyncIterator[CartesiaSTT]:
    async with ws_stt.http_session(options.connect_timeout_secs) as http:
        yield CartesiaSTT(options, http)


@asynccontextmanager
async def build_tts(options: TTSOptions, ctx: BuildContext) -> AsyncIterator[CartesiaTTS]:
    timeout = aiohttp.ClientTimeout(
        total=None, connect=options.connect_timeout_secs, sock_read=options.timeout_secs
    )
    async with aiohttp.ClientSession(timeout=timeout) as http:
        tts = CartesiaTTS(options, http)
        tts.start()
        try:
            yield tts
        finally:
            await tts.close()


async def check(provider: Any) -> None:
    """`patterd check --probe`: an authenticated GET (voices)."""
    await provider.check()


STT_SPEC = ProviderSpec(
    kind="stt",
    name=NAME,
    options=STTOptions,
    build=build_stt,
    summary="Cartesia streaming STT (ink-whisper websocket, μ-law 8 kHz, finalize on flush)",
    check=check,
    capabilities=Capabilities(streaming=True, interim_results=True, needs_network=True, sample_rates=(8000,)),
)

TTS_SPEC = ProviderSpec(
    kind="tts",
    name=NAME,
    options=TTSOptions,
    build=build_tts,
    summary="Cartesia streaming TTS (sonic websocket, one pre-opened socket, a context per sentence, cancel)",
    check=check,
    capabilities=Capabilities(streaming=True, needs_network=True, sample_rates=(8000,)),
)
