"""The machinery every websocket STT provider shares: connect with retries, send, read, flush, close, probe."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

import aiohttp

from patterd.errors import ProviderConnectionError, ProviderError, error_for_status
from patterd.providers.kinds import Transcript

T = TypeVar("T")


class Mark:
    """Queued after the audio already pushed, so the vendor's finalize message covers all of it."""


SendQueue = asyncio.Queue[bytes | Mark | None]  # audio, a finalize mark, None: end of audio
OutQueue = asyncio.Queue[Transcript | ProviderError | None]  # None: the stream is over


class _Counts(Protocol):
    malformed: int


def endpoint_host(url: str, label: str, shown: str | None = None) -> str:
    """The host of a ws(s):// or http(s):// endpoint; a ValueError (a config error) naming `label` if not one."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
        said = url if shown is None else shown
        raise ValueError(f"{label} base_url {said!r} is not a ws(s):// or http(s):// URL")
    return parts.hostname


def _never(error: ProviderError) -> bool:
    return False


async def connect_with_retries(
    open_: Callable[[], Awaitable[T]],
    *,
    retries: int,
    backoff_ms: int,
    log: Any,
    event: str,
    give_up: Callable[[ProviderError], bool] = _never,
    **fields: Any,
) -> T:
    """`open_()`, retried with doubling backoff while its ProviderError is retryable (and not `give_up`)."""
    attempt = 0
    while True:
        try:
            return await open_()
        except ProviderError as error:
            if not error.retryable or give_up(error) or attempt >= retries:
                raise
            delay = backoff_ms / 1000 * 2**attempt
            log.warning(event, **fields, error=str(error), delay_secs=delay)
            await asyncio.sleep(delay)
            attempt += 1


async def open_websocket(
    http: aiohttp.ClientSession,
    url: str,
    *,
    headers: dict[str, str],
    connect_timeout: float,
    close_timeout: float,
    refused: Callable[[aiohttp.WSServerHandshakeError], str],
    unreachable: str,
    provider: str,
    auth_hint: str,
    heartbeat: float | None = None,
) -> aiohttp.ClientWebSocketResponse:
    """One handshake: a refusal mapped by HTTP status (`refused(exc)` says it), anything else a connection error."""
    try:
        # The whole handshake, not just TCP: a host that accepts and never answers must not hang a call.
        async with asyncio.timeout(connect_timeout):
            return await http.ws_connect(
                url,
                headers=headers,
                autoping=True,
                heartbeat=heartbeat,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=close_timeout),
            )
    except aiohttp.WSServerHandshakeError as exc:
        raise error_for_status(exc.status, refused(exc), provider=provider, auth_hint=auth_hint) from None
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise ProviderConnectionError(
            f"{unreachable}: {type(exc).__name__}: {exc or 'timed out'}", provider=provider
        ) from None


async def send_loop(
    ws: aiohttp.ClientWebSocketResponse,
    queue: SendQueue,
    *,
    end: Callable[[], str],
    mark: Callable[[], str],
    sent: Callable[[bytes], None],
    log: Any,
    event: str,
    first: str | None = None,
    keepalive: tuple[float, str] | None = None,
    kept_alive: Callable[[], None] | None = None,
) -> None:
    """Send `first`, then the queue in order (a keepalive text frame after `keepalive[0]` s idle) until None."""
    try:
        if first is not None:
            await ws.send_str(first)
        while True:
            if keepalive is None:
                item = await queue.get()
            else:
                try:
                    async with asyncio.timeout(keepalive[0]):
                        item = await queue.get()
                except TimeoutError:
                    await ws.send_str(keepalive[1])  # a text frame, as the vendors require
                    if kept_alive is not None:
                        kept_alive()
                    continue
            if item is None:
                await ws.send_str(end())
                return
            if isinstance(item, Mark):
                await ws.send_str(mark())
                continue
            await ws.send_bytes(item)
            sent(item)
    except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
        # The receiver sees the same broken connection and reports it; nothing more to send.
        log.info(event, error=f"{type(exc).__name__}: {exc}")


async def read_loop(
    ws: aiohttp.ClientWebSocketResponse,
    on_message: Callable[[Any], Awaitable[bool]],
    *,
    label: str,
    provider: str,
    binary: bool = False,
) -> tuple[ProviderError | None, str]:
    """Hand text (and with `binary`, binary) frames to `on_message` until it says done or the socket ends.

    Returns the connection error (None for a close or `on_message` done) and the close frame's reason.
    """
    try:
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT or (binary and msg.type == aiohttp.WSMsgType.BINARY):
                if await on_message(msg.data):
                    return None, ""
            elif msg.type == aiohttp.WSMsgType.CLOSE:
                return None, str(msg.extra or "")
            elif msg.type == aiohttp.WSMsgType.ERROR:
                return ProviderConnectionError(f"{label} websocket error: {msg.data}", provider=provider), ""
            elif msg.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                return None, ""
    except (aiohttp.ClientError, ConnectionError) as exc:
        return ProviderConnectionError(f"{label} connection lost: {exc}", provider=provider), ""


def count_malformed(log: Any, event: str, exc: Exception, stream: _Counts, owner: _Counts) -> None:
    """A server message that could not be read: logged, counted on the stream and the provider, skipped."""
    stream.malformed += 1
    owner.malformed += 1
    log.warning(event, error=str(exc)[:200], count=stream.malformed)


async def wait_answer(changed: asyncio.Condition, ready: Callable[[], bool], timeout: float) -> bool:
    """Wait (under `changed`) until `ready()`; False when `timeout` s passed first."""
    try:
        async with asyncio.timeout(timeout):
            async with changed:
                await changed.wait_for(ready)
    except TimeoutError:
        return False
    return True


async def transcripts(out: OutQueue) -> AsyncIterator[Transcript]:
    """The stream's transcripts until None; a queued ProviderError is raised."""
    while True:
        item = await out.get()
        if item is None:
            return
        if isinstance(item, ProviderError):
            raise item
        yield item


async def wind_down(
    ws: aiohttp.ClientWebSocketResponse,
    tasks: list[asyncio.Task[None]],
    *,
    timeout: float,
    log: Any,
    event: str,
    wait_receiver: Callable[[], bool] = lambda: True,
) -> None:
    """Wait up to `timeout` s for the sender (end of audio sent), then the receiver; then close our side."""
    sender, receiver = tasks
    try:
        async with asyncio.timeout(timeout):
            await asyncio.wait([sender])
            if wait_receiver():
                await asyncio.wait([receiver])
    except TimeoutError:
        log.info(event)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await ws.close()


async def probe(
    http: aiohttp.ClientSession,
    url: str,
    *,
    headers: dict[str, str],
    label: str,
    provider: str,
    auth_hint: str,
    shown: str | None = None,
    params: dict[str, str] | None = None,
    reason: Callable[[aiohttp.ClientResponse], Awaitable[str]] | None = None,
) -> None:
    """`check --probe`: an authenticated GET that must answer 200 (`reason` says why not; default the status)."""
    where = url if shown is None else shown
    try:
        async with http.get(url, params=params, headers=headers) as response:
            if response.status != 200:
                said = await reason(response) if reason is not None else f"HTTP {response.status}"
                raise error_for_status(
                    response.status, f"{label} {where}: {said}", provider=provider, auth_hint=auth_hint
                )
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ProviderConnectionError(
            f"{label} {where}: {type(exc).__name__}: {exc or 'timed out'}", provider=provider
        ) from exc


@asynccontextmanager
async def http_session(connect_timeout: float) -> AsyncIterator[aiohttp.ClientSession]:
    """One aiohttp session for a provider's lifetime (no connection until a call opens a stream)."""
    timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        yield http


class Stream:
    """Base of one call's websocket recognition: the queues, the two tasks, the counters; a vendor sends and reads."""

    task_prefix = "stt"  # the tasks are `<prefix>-send` and `<prefix>-receive`
    _log: Any = None  # the vendor module's logger

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, owner: _Counts) -> None:
        self._ws = ws
        self._owner = owner
        self._send_q: SendQueue = asyncio.Queue()
        self._out: OutQueue = asyncio.Queue()
        self._closing = False
        self._ended = False
        self._tasks: list[asyncio.Task[None]] = []
        self.audio_bytes = 0  # μ-law bytes sent (8000 per second of audio)
        self.malformed = 0  # server messages that could not be read (logged, skipped)
        self._confidences: list[float] = []  # of the final parts of the turn in progress

    @property
    def audio_seconds(self) -> float:
        """Audio streamed to the vendor, what it bills."""
        return self.audio_bytes / 8000

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._sender(), name=f"{self.task_prefix}-send"),
            asyncio.create_task(self._receiver(), name=f"{self.task_prefix}-receive"),
        ]

    def push_audio(self, ulaw: bytes) -> None:
        """Caller audio (8 kHz μ-law), never blocks; dropped once the stream is closing."""
        if ulaw and not self._closing and not self._ended:
            self._send_q.put_nowait(ulaw)

    def __aiter__(self) -> AsyncIterator[Transcript]:
        return transcripts(self._out)

    def _emit_turn(self, text: str, audio_ms: float | None) -> None:
        """Queue a turn's final transcript with its parts' mean confidence (nothing when `text` is empty)."""
        confidences, self._confidences = self._confidences, []
        if not text:
            return
        confidence = sum(confidences) / len(confidences) if confidences else None
        self._out.put_nowait(
            Transcript(text, is_final=True, end_of_utterance=True, confidence=confidence, audio_ms=audio_ms)
        )

    def _sent(self, audio: bytes) -> None:
        self.audio_bytes += len(audio)

    async def _sender(self) -> None:
        raise NotImplementedError

    async def _receiver(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """The vendor's end of audio, a short wait for the last results, then the socket closed."""
        raise NotImplementedError

    async def _end(
        self, timeout: float, event: str, wait_receiver: Callable[[], bool] = lambda: True
    ) -> None:
        """Queue the end of audio after what was pushed, then `wind_down` (`event` logged on a timeout)."""
        self._closing = True
        self._send_q.put_nowait(None)
        await wind_down(
            self._ws, self._tasks, timeout=timeout, log=self._log, event=event, wait_receiver=wait_receiver
        )


OptionsT = TypeVar("OptionsT")
StreamT = TypeVar("StreamT", bound=Stream)


class Provider(Generic[OptionsT, StreamT]):
    """Base of a websocket STT provider (kinds.STT): one HTTP session, one websocket per stream."""

    def __init__(self, options: OptionsT, http: aiohttp.ClientSession) -> None:
        self.options = options
        self._http = http
        self.malformed = 0  # server messages skipped over all streams
        self.streams_opened = 0

    @asynccontextmanager
    async def stream(self) -> AsyncIterator[StreamT]:
        """Open the websocket now (the call has connected) and stream until the context exits."""
        ws = await self._connect()
        self.streams_opened += 1
        stream = self._new_stream(ws)
        stream.start()
        try:
            yield stream
        finally:
            await stream.close()

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        raise NotImplementedError

    def _new_stream(self, ws: aiohttp.ClientWebSocketResponse) -> StreamT:
        raise NotImplementedError
