"""`stt.assemblyai`: AssemblyAI Universal Streaming v3 over the `/v3/ws` websocket, 8 kHz μ-law as the carrier sends it.

One websocket per call, opened when the call's STT stream opens and closed (Terminate) as soon as
the stream closes: AssemblyAI bills the time a session is open, not the speech in it. The carrier's
20 ms frames are coalesced into `chunk_ms` chunks, because a binary frame outside 50-1000 ms closes
the session with 3007; the held-back tail is padded and sent before ForceEndpoint and Terminate.

Turns: partial `Turn` messages (`end_of_turn: false`) are interim transcripts; the turn's final is
the `end_of_turn: true` Turn — with `format_turns` the formatted copy that follows it (the plain one
is kept in case the formatted one never comes). `flush()` (the pipeline's VAD ended the turn) sends
ForceEndpoint and waits for that final. A final's `audio_ms` is how much audio had been sent when it
arrived, which the pipeline uses to time the vendor's own endpointing.

Errors: a refused handshake by HTTP status (401/403 fatal naming ASSEMBLYAI_API_KEY; 429/5xx
retried with doubling backoff, then retryable); after the handshake by close code (1008 fatal auth,
3009 rate limit, 3006/3007 protocol errors, 3005/3008 and drops retryable). Malformed messages are
logged, counted and skipped. Wire format and sources: `patterd.protocols.assemblyai`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import structlog
from pydantic import Field, SecretStr, model_validator

from patterd.errors import (
    ProviderConnectionError,
    ProviderProtocolError,
    error_for_status,
)
from patterd.protocols import assemblyai as wire
from patterd.providers import ws_stt
from patterd.providers.assemblyai_stream import (
    AUTH_HINT,
    KEY_ENV,
    NAME,
    AssemblyAIStream,
    Stalled,
    close_error,
)
from patterd.providers.spec import BuildContext, Capabilities, ProviderOptions, ProviderSpec, env_secret

log = structlog.get_logger(__name__)


class Options(ProviderOptions):
    """Options of `stt.assemblyai` (names as AssemblyAI's query parameters where one exists)."""

    api_key: SecretStr | None = Field(
        default_factory=env_secret(KEY_ENV), description="sent as `Authorization: <key>` (no Bearer)"
    )
    base_url: str = Field(
        default=wire.DEFAULT_BASE_URL,
        description="data residency: wss://streaming.us.assemblyai.com or wss://streaming.eu.assemblyai.com",
    )
    speech_model: str = Field(
        default="universal-streaming-english",
        description="required by AssemblyAI: universal-streaming-english, universal-streaming-multilingual, "
        "u3-rt-pro, ...",
    )
    format_turns: bool = Field(
        default=True, description="punctuated, cased finals (a formatted Turn follows each ended turn)"
    )
    keyterms: list[str] = Field(default_factory=list, description="`keyterms_prompt`: words to favour")
    end_of_turn_confidence_threshold: float | None = Field(
        default=None, ge=0, le=1, description="how sure the model must be that a turn ended (vendor default)"
    )
    min_turn_silence_ms: int | None = Field(
        default=None, ge=0, le=10000, description="`min_turn_silence`: silence before a confident turn end"
    )
    max_turn_silence_ms: int | None = Field(
        default=None, ge=0, le=10000, description="`max_turn_silence`: silence that always ends a turn"
    )
    chunk_ms: int = Field(
        default=100,
        ge=wire.MIN_CHUNK_MS,
        le=wire.MAX_CHUNK_MS,
        description="caller audio is sent in chunks of this many ms (AssemblyAI takes 50-1000 ms)",
    )
    flush_timeout_secs: float = Field(
        default=1.5, gt=0, le=30, description="how long a flush waits for the ended turn after ForceEndpoint"
    )
    flush_idle_secs: float = Field(
        default=0.3,
        gt=0,
        le=30,
        description="with no turn open, how long a flush waits for one to show before returning empty",
    )
    connect_timeout_secs: float = Field(
        default=10.0, gt=0, description="the handshake and the server's Begin message"
    )
    connect_retries: int = Field(
        default=2, ge=0, le=10, description="handshake retries on 429, 5xx and network errors"
    )
    retry_backoff_ms: int = Field(
        default=250, ge=0, le=60000, description="first retry delay, doubled for each next one"
    )
    close_timeout_secs: float = Field(
        default=2.0, gt=0, description="wait for the last Turn and Termination after Terminate"
    )

    @model_validator(mode="after")
    def _check(self) -> Options:
        host = ws_stt.endpoint_host(self.base_url, "stt.assemblyai")
        if self.api_key is None and host.endswith("assemblyai.com"):
            raise ValueError(f"stt.assemblyai needs api_key (or the {KEY_ENV} environment variable)")
        return self

    def params(self) -> wire.StreamParams:
        """The session's query: the carrier's own audio, no transcoding."""
        return wire.StreamParams(
            speech_model=self.speech_model,
            sample_rate=8000,
            encoding="pcm_mulaw",
            format_turns=self.format_turns,
            keyterms=tuple(self.keyterms),
            end_of_turn_confidence_threshold=self.end_of_turn_confidence_threshold,
            min_turn_silence_ms=self.min_turn_silence_ms,
            max_turn_silence_ms=self.max_turn_silence_ms,
        )


class AssemblyAISTT(ws_stt.Provider[Options, AssemblyAIStream]):
    """The live `stt.assemblyai` provider (kinds.STT): one HTTP session, one websocket per stream."""

    name = NAME

    def _headers(self) -> dict[str, str]:
        key = self.options.api_key
        return wire.auth_headers(key.get_secret_value()) if key is not None else {}

    def __repr__(self) -> str:
        return (
            f"AssemblyAISTT(speech_model={self.options.speech_model!r}, base_url={self.options.base_url!r})"
        )

    def _new_stream(self, ws: aiohttp.ClientWebSocketResponse) -> AssemblyAIStream:
        return AssemblyAIStream(ws, self.options, self)

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        """Handshake and Begin, retried with doubling backoff while the failure is retryable."""
        opts = self.options
        url = wire.stream_url(opts.base_url, opts.params())
        return await ws_stt.connect_with_retries(
            lambda: self._open(url),
            retries=opts.connect_retries,
            backoff_ms=opts.retry_backoff_ms,
            log=log,
            event="assemblyai session failed to open; retrying",
            # A server that accepted and then said nothing is not retried here: each try would cost the
            # caller another connect_timeout_secs of dead air; the pipeline decides (fallback, retry).
            give_up=lambda error: isinstance(error, Stalled),
        )

    async def _open(self, url: str) -> aiohttp.ClientWebSocketResponse:
        opts = self.options
        ws: aiohttp.ClientWebSocketResponse | None = None
        try:
            # The handshake and Begin together: a host that accepts and says nothing must not hang a call.
            async with asyncio.timeout(opts.connect_timeout_secs):
                ws = await self._http.ws_connect(
                    url,
                    headers=self._headers(),
                    autoping=True,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=opts.close_timeout_secs),
                )
                msg = await ws.receive()
        except aiohttp.WSServerHandshakeError as exc:
            raise error_for_status(
                exc.status,
                f"stt.assemblyai refused the session: HTTP {exc.status}: {str(exc.message)[:200]}",
                provider=NAME,
                auth_hint=AUTH_HINT,
            ) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if ws is not None:
                await ws.close()
            said = f"{type(exc).__name__}: {exc or 'timed out'}"
            if ws is not None:
                raise Stalled(
                    f"stt.assemblyai sent no Begin message from {opts.base_url}: {said}", provider=NAME
                ) from None
            raise ProviderConnectionError(
                f"stt.assemblyai cannot connect to {opts.base_url}: {said}", provider=NAME
            ) from None
        if msg.type == aiohttp.WSMsgType.TEXT:
            try:
                first = wire.parse(msg.data)
            except wire.AssemblyAIProtocolError as exc:
                first = wire.Unknown(f"malformed: {exc}")
            if isinstance(first, wire.Begin):
                return ws
            if isinstance(first, wire.ErrorMessage):  # refused after the upgrade (1008 for a wrong key)
                await ws.close()
                raise close_error(first.error_code or ws.close_code, first.error)
            await ws.close()
            raise ProviderProtocolError(f"stt.assemblyai sent {first!r} before Begin", provider=NAME)
        code = ws.close_code
        await ws.close()
        raise close_error(code, str(msg.extra or "") if msg.type == aiohttp.WSMsgType.CLOSE else "")

    async def check(self) -> None:
        """Probe the key and the host: `GET /v3/token` (a short-lived token: authenticated, not billed)."""

        async def reason(response: aiohttp.ClientResponse) -> str:
            return wire.handshake_error(response.status, await response.text())

        url = wire.token_url(self.options.base_url)
        await ws_stt.probe(
            self._http,
            url,
            shown=url.split("?")[0],
            headers=self._headers(),
            label="stt.assemblyai",
            provider=NAME,
            auth_hint=AUTH_HINT,
            reason=reason,
        )


@asynccontextmanager
async def build(options: Options, ctx: BuildContext) -> AsyncIterator[AssemblyAISTT]:
    """One aiohttp session for the provider's lifetime (no connection until a call opens a stream)."""
    async with ws_stt.http_session(options.connect_timeout_secs) as http:
        yield AssemblyAISTT(options, http)


async def check(provider: Any) -> None:
    """`patterd check --probe`: an authenticated GET of a temporary streaming token."""
    await provider.check()


SPEC = ProviderSpec(
    kind="stt",
    name=NAME,
    options=Options,
    build=build,
    summary="AssemblyAI Universal Streaming v3 (websocket, μ-law 8 kHz, turn detection, partials)",
    check=check,
    capabilities=Capabilities(streaming=True, interim_results=True, needs_network=True, sample_rates=(8000,)),
)
