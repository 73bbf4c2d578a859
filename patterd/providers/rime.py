"""`tts.rime`: Rime streaming speech over the `/ws3` JSON websocket, asked for 8 kHz μ-law so no transcoding is needed.

Each sentence the pipeline speaks is one context on a websocket: `{"text", "contextId"}` then
`flush` (Rime would otherwise wait for `.?!` before speaking), and its `chunk` events are yielded
as they come until `done` for that context. Connections are kept open between sentences and calls
(a small idle pool: a handshake per sentence would add a round trip or two before the first audio);
Rime speaks one context at a time per connection, so concurrent calls each take their own.

Barge-in: closing the generator sends `clear` (Rime drops what it buffered and stops speaking) and
the connection goes back to the pool; chunks of the cleared context that were already on the way
are skipped by contextId. A connection that closed while idle is replaced at once, without backoff.

Errors: a refused handshake by HTTP status (401/403 fatal naming RIME_API_KEY; 429/5xx retried
with doubling backoff, then retryable); no audio within `first_audio_timeout_secs` or a drop is a
retryable connection error (nothing is replayed after audio went out); an `error` event is a
non-retryable ProviderError. Malformed events are logged, counted and skipped. Rime's `done` is
taken as a synthesis' end; should it not come, a silence of `idle_timeout_secs` after audio ends the
sentence and that connection is not reused. Wire format and sources: `patterd.protocols.rime`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from pydantic import Field, SecretStr, model_validator

from patterd.errors import ProviderConnectionError, ProviderError, error_for_status
from patterd.protocols import rime as wire
from patterd.protocols.jsontext import clean_text
from patterd.providers.spec import BuildContext, Capabilities, ProviderOptions, ProviderSpec, env_secret

log = structlog.get_logger(__name__)

NAME = "rime"
KEY_ENV = "RIME_API_KEY"
AUTH_HINT = f"check api_key or {KEY_ENV}"
_SEND_ERRORS = (aiohttp.ClientError, ConnectionError, RuntimeError)


class Options(ProviderOptions):
    """Options of `tts.rime` (`speaker` and `modelId` as Rime names them)."""

    api_key: SecretStr | None = Field(
        default_factory=env_secret(KEY_ENV), description="sent as `Authorization: Bearer <key>`"
    )
    base_url: str = Field(
        default=wire.DEFAULT_BASE_URL, description="the websocket host (`/ws3` is appended)"
    )
    speaker: str = Field(default="astra", description="a Rime voice of the model (docs.rime.ai voices list)")
    modelId: str = Field(
        default="arcana", description="arcana, mistv2, ... (Rime falls back to mistv2 if unset)"
    )
    lang: str | None = Field(default=None, description="language code; must match the speaker's language")
    connect_timeout_secs: float = Field(default=10.0, gt=0, description="the websocket handshake")
    first_audio_timeout_secs: float = Field(
        default=5.0, gt=0, description="a sentence's first chunk must come within this (else retryable error)"
    )
    idle_timeout_secs: float = Field(
        default=3.0, gt=0, description="a silence this long after audio, without `done`, ends the sentence"
    )
    connect_retries: int = Field(
        default=2, ge=0, le=10, description="handshake retries on 429, 5xx, network errors"
    )
    retry_backoff_ms: int = Field(
        default=250, ge=0, le=60000, description="first retry delay, doubled each time"
    )
    pool_size: int = Field(
        default=4, ge=0, le=64, description="idle connections kept open for the next sentence"
    )
    pool_idle_secs: float = Field(
        default=60.0, gt=0, description="an idle connection older than this is closed instead of reused"
    )

    @model_validator(mode="after")
    def _check(self) -> Options:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
            raise ValueError(f"tts.rime base_url {self.base_url!r} is not a ws(s):// or http(s):// URL")
        if self.api_key is None and parts.hostname.endswith("rime.ai"):
            raise ValueError(f"tts.rime needs api_key (or the {KEY_ENV} environment variable)")
        if not self.speaker.strip() or not self.modelId.strip():
            raise ValueError("tts.rime speaker and modelId must not be empty")
        return self

    def params(self) -> wire.SynthesisParams:
        return wire.SynthesisParams(
            speaker=self.speaker,
            model_id=self.modelId,
            audio_format="mulaw",
            sampling_rate=8000,
            lang=self.lang,
        )


class RimeTTS:
    """The live `tts.rime` provider (kinds.TTS): one HTTP session, a pool of idle websockets."""

    name = NAME

    def __init__(self, options: Options, http: aiohttp.ClientSession) -> None:
        self.options = options
        self._http = http
        self._idle: list[tuple[aiohttp.ClientWebSocketResponse, float]] = []
        self._url = wire.ws_url(options.base_url, options.params())
        self.malformed = 0  # events skipped over all syntheses
        self.connections_opened = 0
        self.cancelled = 0  # syntheses cleared mid-stream (barge-in)

    def __repr__(self) -> str:
        return f"RimeTTS(speaker={self.options.speaker!r}, modelId={self.options.modelId!r})"

    def _headers(self) -> dict[str, str]:
        key = self.options.api_key
        return wire.auth_headers(key.get_secret_value()) if key is not None else {}

    # -------- connections

    async def _handshake(self) -> aiohttp.ClientWebSocketResponse:
        opts = self.options
        try:
            async with asyncio.timeout(opts.connect_timeout_secs):
                ws = await self._http.ws_connect(
                    self._url,
                    headers=self._headers(),
                    autoping=True,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=1.0),
                )
        except aiohttp.WSServerHandshakeError as exc:
            raise error_for_status(
                exc.status,
                f"tts.rime refused the connection: HTTP {exc.status}: {str(exc.message)[:200]}",
                provider=NAME,
                auth_hint=AUTH_HINT,
            ) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ProviderConnectionError(
                f"tts.rime cannot connect to {opts.base_url}: {type(exc).__name__}: {exc or 'timed out'}",
                provider=NAME,
            ) from None
        self.connections_opened += 1
        return ws

    async def _open(self) -> aiohttp.ClientWebSocketResponse:
        """A new connection, retried with doubling backoff while the refusal is retryable."""
        attempt = 0
        while True:
            try:
                return await self._handshake()
            except ProviderError as error:
                if not error.retryable or attempt >= self.options.connect_retries:
                    raise
                delay = self.options.retry_backoff_ms / 1000 * 2**attempt
                log.warning("rime handshake failed; retrying", error=str(error), delay_secs=delay)
                await asyncio.sleep(delay)
                attempt += 1

    async def _take(self) -> tuple[aiohttp.ClientWebSocketResponse, bool]:
        """An idle connection still open (reused: False) or a new one (True)."""
        now = time.monotonic()
        while self._idle:
            ws, since = self._idle.pop()
            if not ws.closed and now - since < self.options.pool_idle_secs:
                return ws, False
            await ws.close()
        return await self._open(), True

    async def _give(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        if ws.closed:
            return
        if len(self._idle) < self.options.pool_size:
            self._idle.append((ws, time.monotonic()))
        else:
            await ws.close()

    async def aclose(self) -> None:
        """Close every idle connection."""
        idle, self._idle = self._idle, []
        await asyncio.gather(*(ws.close() for ws, _ in idle), return_exceptions=True)

    # -------- kinds.TTS

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """Speak `text`: 8 kHz μ-law chunks as Rime sends them; closing early sends `clear` (barge-in)."""
        text = clean_text(text).strip()
        if not text:
            return
        while True:
            ws, fresh = await self._take()
            context = uuid.uuid4().hex
            try:
                await ws.send_str(wire.text_message(text, context))
                await ws.send_str(wire.FLUSH)  # speak now: do not wait for more text after the sentence
            except _SEND_ERRORS:
                await ws.close()
                if fresh:
                    raise ProviderConnectionError(
                        "tts.rime connection lost while sending", provider=NAME
                    ) from None
                continue  # an idle connection the server had closed: take a new one at once
            stale = False
            # aclosing: a barge-in closes this generator at its yield; the receiver must hear it too.
            receiver = self._receive(ws, context, fresh)
            async with contextlib.aclosing(receiver):
                async for audio in receiver:
                    if audio is None:
                        stale = True  # closed before any audio on a reused connection
                        break
                    yield audio
            if not stale:
                return

    async def _receive(
        self, ws: aiohttp.ClientWebSocketResponse, context: str, fresh: bool
    ) -> AsyncGenerator[bytes | None, None]:
        """The context's audio until `done`; None once if a reused connection turns out to be closed."""
        opts = self.options
        yielded = False
        finished = False  # done seen: the connection is clean for the next sentence
        try:
            while True:
                timeout = opts.idle_timeout_secs if yielded else opts.first_audio_timeout_secs
                try:
                    async with asyncio.timeout(timeout):
                        msg = await ws.receive()
                except TimeoutError:
                    if yielded:
                        log.warning(
                            "rime sent no done after the audio; ending the sentence", timeout_secs=timeout
                        )
                        await ws.close()
                        return
                    raise ProviderConnectionError(
                        f"tts.rime sent no audio within {timeout} s", provider=NAME
                    ) from None
                if msg.type == aiohttp.WSMsgType.TEXT:
                    event = self._parse(msg.data)
                    if isinstance(event, wire.Chunk) and event.context_id == context:
                        if event.audio:
                            yielded = True
                            yield event.audio
                    elif isinstance(event, wire.Done) and event.context_id == context:
                        finished = True
                        return
                    elif isinstance(event, wire.ErrorMessage):
                        await ws.close()  # the connection's state is unknown: never reuse it
                        raise ProviderError(f"tts.rime error: {event.message}", provider=NAME)
                    continue  # timestamps, a cleared context's late events, unknown types
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                    if not yielded and not fresh:
                        yield None
                        return
                    code = ws.close_code
                    raise ProviderConnectionError(
                        f"tts.rime closed the connection (code {code}) before the sentence was done",
                        provider=NAME,
                    )
                if msg.type == aiohttp.WSMsgType.ERROR:
                    raise ProviderConnectionError(f"tts.rime websocket error: {msg.data}", provider=NAME)
        finally:
            if finished:
                await self._give(ws)
            elif not ws.closed and yielded:
                await self._cancel(ws)
            elif not ws.closed:
                await ws.close()

    async def _cancel(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Barge-in: `clear` stops the speech; the connection stays for the next sentence."""
        self.cancelled += 1
        try:
            async with asyncio.timeout(1.0):
                await ws.send_str(wire.CLEAR)
        except (*_SEND_ERRORS, TimeoutError):
            await ws.close()
            return
        await self._give(ws)

    def _parse(self, data: str) -> wire.ServerMessage | None:
        try:
            return wire.parse(data)
        except wire.RimeProtocolError as exc:
            self.malformed += 1
            log.warning("rime event skipped", error=str(exc)[:200], count=self.malformed)
            return None

    async def check(self) -> None:
        """Probe the key and voice settings: open a websocket (authenticated, nothing spoken, not billed), close it."""
        ws = await self._handshake()
        await ws.close()


@asynccontextmanager
async def build(options: Options, ctx: BuildContext) -> AsyncIterator[RimeTTS]:
    """One aiohttp session for the provider's lifetime; idle connections are closed with it."""
    timeout = aiohttp.ClientTimeout(total=None, connect=options.connect_timeout_secs)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        tts = RimeTTS(options, http)
        try:
            yield tts
        finally:
            await tts.aclose()


async def check(provider: Any) -> None:
    """`patterd check --probe`: an authenticated websocket handshake with the configured voice."""
    await provider.check()


SPEC = ProviderSpec(
    kind="tts",
    name=NAME,
    options=Options,
    build=build,
    summary="Rime streaming TTS (ws3 JSON websocket, μ-law 8 kHz, contexts, clear on barge-in)",
    check=check,
    capabilities=Capabilities(streaming=True, needs_network=True, sample_rates=(8000,)),
)
