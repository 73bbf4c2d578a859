"""`tts.cartesia`: Cartesia's streaming TTS (sonic) on one pre-opened websocket, a context per synthesis.

See `patterd.providers.cartesia` for the behaviour (pre-open, idle reconnect, cancel on barge-in).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from pydantic import Field

from patterd.errors import (
    ProviderAuthError,
    ProviderConnectionError,
    ProviderError,
    ProviderProtocolError,
    ProviderRateLimitError,
    error_for_status,
)
from patterd.protocols import cartesia as wire
from patterd.providers.cartesia_common import AUTH_HINT, NAME, CartesiaOptions, log, probe, ws_connect
from patterd.providers.spec import BuildContext

DEFAULT_VOICE = "f786b574-daa5-4673-aa0c-cbe3e8534c02"  # "Katie - Friendly Fixer", Cartesia's agent voice


class TTSOptions(CartesiaOptions):
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
                ws = await ws_connect(
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
        await probe(self._http, url, self.options, "tts.cartesia")


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
