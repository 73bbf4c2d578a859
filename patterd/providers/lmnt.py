"""`tts.lmnt`: LMNT streaming speech sessions (websocket), kept open and reused sentence after sentence, as 8 kHz μ-law.

One websocket per synthesis would pay a handshake plus the init frame in every turn; LMNT's session
is built for a stream of text (`text` + `flush` {nonce} → audio → `flush_complete` {nonce}), and
`reset` {nonce} drops its pending speech (barge-in). So a synthesis borrows an idle session from a
small pool (opening one when none is idle, so concurrent calls never share one), and gives it back
when done; a cancelled synthesis sends `reset` and gives the session back marked: the next borrower
drops every audio frame until `reset_complete` with that nonce (audio of the cancelled text still in
flight). An error frame, a timeout or a broken socket discards the session.

Wire format: `patterd.protocols.lmnt` (format `ulaw`, sample_rate 8000; the WAV header is stripped).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
from pydantic import Field, SecretStr, model_validator

from patterd.errors import ProviderConnectionError, ProviderError, error_for_status
from patterd.protocols import lmnt as wire
from patterd.providers.spec import BuildContext, Capabilities, ProviderOptions, ProviderSpec, env_secret

NAME = "lmnt"  # ProviderError.provider and the cost-table name
KEY_VARIABLE = "LMNT_API_KEY"
AUTH_HINT = f"check api_key / {KEY_VARIABLE}"
MAX_IDLE_SESSIONS = 8  # idle sessions kept for reuse; more concurrent syntheses open (and then close) more
log = logging.getLogger(__name__)

Language = Literal[
    "auto", "ar", "as", "bn", "cs", "da", "de", "en", "es", "fi", "fr", "hi", "id", "it", "ja", "ko", "ml",
    "mr", "nl", "pl", "pt", "ru", "sk", "sv", "ta", "te", "th", "tr", "uk", "ur", "vi", "zh",
]  # fmt: skip


class Options(ProviderOptions):
    """Options of `tts.lmnt`."""

    api_key: SecretStr | None = Field(
        default_factory=env_secret(KEY_VARIABLE),
        description="sent as `X-API-Key` in the session's first frame (LMNT has no auth header)",
    )
    voice: str = Field(default="lily", min_length=1, description="an LMNT voice id (GET /v1/ai/voice/list)")
    model: str | None = Field(
        default=None, description="sent in the session's first frame only when set (e.g. blizzard)"
    )
    language: Language = Field(
        default="en", description="two-letter code or auto; a fixed language is faster than auto"
    )
    speed: float | None = Field(
        default=None, ge=0.25, le=2.0, description="speech rate 0.25-2; sent only when set"
    )
    base_url: str = wire.DEFAULT_BASE_URL
    timeout_secs: float = Field(
        default=10.0, gt=0, description="connect, and the longest wait for the next audio"
    )
    max_retries: int = Field(
        default=2, ge=0, le=5, description="rate-limit/server/connection retries before any audio"
    )
    retry_backoff_secs: float = Field(
        default=0.25, ge=0, description="first retry delay, doubled for each next one"
    )

    @model_validator(mode="after")
    def _key_when_needed(self) -> Options:
        if (
            self.api_key is None
            and urlsplit(self.base_url).hostname == urlsplit(wire.DEFAULT_BASE_URL).hostname
        ):
            raise ValueError(f"tts.lmnt needs api_key (or the {KEY_VARIABLE} environment variable)")
        return self


class _Session:
    """One open LMNT websocket and what this client knows of its state."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.nonce = 0
        self.reset_pending: int | None = None  # drop audio until reset_complete with this nonce
        self.stripper = wire.WavHeaderStripper()

    def next_nonce(self) -> int:
        self.nonce += 1
        return self.nonce


class _Reconnect(Exception):
    """A reused idle session turned out dead before anything was heard: open a fresh one at once."""


class _Stalled(ProviderConnectionError):
    """LMNT took the text and said nothing for timeout_secs (retryable, but not retried here)."""


class LMNTTTS:
    """A live `tts.lmnt`: one aiohttp session, a pool of open LMNT speech sessions."""

    name = NAME

    def __init__(self, options: Options, http: aiohttp.ClientSession) -> None:
        self.options = options
        self._http = http
        self._idle: list[_Session] = []
        self._open: set[_Session] = set()
        self._closed = False
        self.characters = 0  # characters sent for synthesis (what LMNT bills)
        self.sessions_opened = 0
        self.malformed = 0  # server frames that did not follow the protocol (logged, skipped)

    def __repr__(self) -> str:
        return f"LMNTTTS(voice={self.options.voice!r}, language={self.options.language!r})"

    def _key(self) -> str:
        return self.options.api_key.get_secret_value() if self.options.api_key is not None else ""

    # -------- sessions

    async def _open_session(self) -> _Session:
        o = self.options
        try:
            async with asyncio.timeout(o.timeout_secs):
                # ws_close bounds the wait for LMNT's close reply when a broken session is discarded.
                ws = await self._http.ws_connect(
                    wire.stream_url(o.base_url),
                    autoping=True,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=min(2.0, o.timeout_secs)),
                )
        except aiohttp.WSServerHandshakeError as exc:
            raise error_for_status(
                exc.status, f"LMNT refused the session: HTTP {exc.status}", provider=NAME, auth_hint=AUTH_HINT
            ) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ProviderConnectionError(
                f"LMNT cannot connect to {o.base_url}: {type(exc).__name__}: {exc or 'timed out'}",
                provider=NAME,
            ) from exc
        session = _Session(ws)
        self._open.add(session)
        self.sessions_opened += 1
        try:
            # No waiting for `ready`: the text goes right behind the init frame (a refusal comes as `error`).
            await ws.send_str(
                wire.init_message(self._key(), o.voice, language=o.language, model=o.model, speed=o.speed)
            )
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            await self._discard(session)
            raise ProviderConnectionError(f"LMNT session lost: {exc}", provider=NAME) from exc
        return session

    async def _borrow(self) -> tuple[_Session, bool]:
        while self._idle:
            session = self._idle.pop()
            if not session.ws.closed:
                return session, True
            await self._discard(session)
        return await self._open_session(), False

    async def _give_back(self, session: _Session) -> None:
        if self._closed or session.ws.closed or len(self._idle) >= MAX_IDLE_SESSIONS:
            await self._discard(session)
        else:
            self._idle.append(session)

    async def _discard(self, session: _Session) -> None:
        self._open.discard(session)
        if session in self._idle:
            self._idle.remove(session)
        await session.ws.close()

    async def aclose(self) -> None:
        """Close every session (the pool's and any still in use)."""
        self._closed = True
        for session in list(self._open):
            await self._discard(session)

    # -------- synthesis

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """Speak `text` as 8 kHz μ-law chunks; closing the generator sends `reset` (barge-in)."""
        if not text.strip():
            return
        o = self.options
        attempt = 0
        while True:
            sent = 0
            try:
                session, reused = await self._borrow()
                # aclosing: a barge-in closes this generator, and the inner one must reset its session now
                async with aclosing(self._speak(session, text, reused)) as chunks:
                    async for chunk in chunks:
                        sent += len(chunk)
                        yield chunk
                return
            except _Reconnect:
                continue  # no backoff: an idle session closed by the server is no trouble of the server's
            except ProviderError as exc:
                # A stall already cost the caller timeout_secs of silence: the pipeline decides
                # whether to try again, not a second hidden wait here.
                if not exc.retryable or sent or attempt >= o.max_retries or isinstance(exc, _Stalled):
                    raise
            attempt += 1
            await asyncio.sleep(o.retry_backoff_secs * 2 ** (attempt - 1))

    async def _speak(self, session: _Session, text: str, reused: bool) -> AsyncGenerator[bytes]:
        """One flush on one session; gives the session back (reset if cut short) or discards it."""
        o = self.options
        ws = session.ws
        nonce = session.next_nonce()
        done = False  # flush_complete seen: the session is clean
        broken = False  # the session must not be reused
        heard = False
        try:
            try:
                await ws.send_str(wire.text_message(text))
                await ws.send_str(wire.flush_message(nonce))
            except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
                broken = True
                if reused:
                    raise _Reconnect from exc
                raise ProviderConnectionError(f"LMNT session lost: {exc}", provider=NAME) from exc
            self.characters += len(text)
            session.stripper.arm()
            while True:
                try:
                    msg = await ws.receive(timeout=o.timeout_secs)
                except TimeoutError as exc:
                    broken = True
                    raise _Stalled(f"LMNT sent no audio for {o.timeout_secs:g} s", provider=NAME) from exc
                if msg.type is aiohttp.WSMsgType.BINARY:
                    if session.reset_pending is not None:
                        continue  # audio of a text cancelled before this one
                    try:
                        audio = session.stripper.feed(msg.data)
                    except wire.LMNTProtocolError as exc:
                        broken = True
                        self.malformed += 1
                        log.warning("LMNT audio is not what was asked for: %s", exc)
                        raise ProviderError(f"LMNT audio: {exc}", provider=NAME) from exc
                    if audio:
                        heard = True
                        yield audio
                elif msg.type is aiohttp.WSMsgType.TEXT:
                    try:
                        event = wire.parse(msg.data)
                    except wire.LMNTProtocolError as exc:
                        self.malformed += 1
                        log.warning("LMNT sent a malformed message (skipped): %s", exc)
                        continue
                    if isinstance(event, wire.SessionError):
                        broken = True
                        self.characters -= len(text)  # nothing of it was spoken
                        raise error_for_status(
                            event.status,
                            f"LMNT {event.type or 'error'}: {event.message}",
                            provider=NAME,
                            auth_hint=AUTH_HINT,
                        )
                    if isinstance(event, wire.ResetComplete) and event.nonce == session.reset_pending:
                        session.reset_pending = None
                        session.stripper.arm()
                    elif isinstance(event, wire.FlushComplete) and event.nonce == nonce:
                        held = session.stripper.arm()
                        if held:
                            yield held
                        done = True
                        return
                else:  # CLOSE, CLOSING, CLOSED, ERROR
                    broken = True
                    if reused and not heard and msg.type is not aiohttp.WSMsgType.ERROR:
                        self.characters -= len(text)  # LMNT closed it while idle: the text was never taken
                        raise _Reconnect
                    raise ProviderConnectionError(
                        f"LMNT closed the session ({ws.close_code}{': ' + str(msg.extra) if msg.extra else ''})",
                        provider=NAME,
                    )
        finally:
            if done:
                await self._give_back(session)
            elif broken:
                await self._discard(session)
            else:
                # Cut short (barge-in): LMNT stops speaking this text; its audio still in flight is dropped
                # by whoever borrows the session next, up to reset_complete.
                reset = session.next_nonce()
                try:
                    await ws.send_str(wire.reset_message(reset))
                except (aiohttp.ClientError, ConnectionError, RuntimeError):
                    await self._discard(session)
                else:
                    session.reset_pending = reset
                    await self._give_back(session)

    async def check(self) -> None:
        """Probe the key: `GET /v1/account` (401 for a wrong key)."""
        url = wire.account_url(self.options.base_url)
        try:
            async with self._http.get(url, headers=wire.headers(self._key())) as response:
                body = await response.read()
                if response.status != 200:
                    raise error_for_status(
                        response.status,
                        f"LMNT HTTP {response.status}: {wire.error_detail(body, response.status)}",
                        provider=NAME,
                        auth_hint=AUTH_HINT,
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderConnectionError(
                f"LMNT {url}: {type(exc).__name__}: {exc or 'timed out'}", provider=NAME
            ) from exc


@asynccontextmanager
async def build(options: Options, ctx: BuildContext) -> AsyncIterator[LMNTTTS]:
    """One aiohttp session and one pool of LMNT sessions for the provider's lifetime."""
    timeout = aiohttp.ClientTimeout(total=None, connect=options.timeout_secs, sock_read=options.timeout_secs)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        tts = LMNTTTS(options, http)
        try:
            yield tts
        finally:
            await tts.aclose()


async def check(provider: Any) -> None:
    """`patterd check --probe`: the key can read its account."""
    await provider.check()


SPEC = ProviderSpec(
    kind="tts",
    name=NAME,
    options=Options,
    build=build,
    summary="LMNT streaming TTS (websocket speech sessions reused per sentence, reset on barge-in, μ-law 8 kHz)",
    check=check,
    capabilities=Capabilities(streaming=True, needs_network=True, sample_rates=(8000,)),
)
