"""`stt.soniox`: Soniox real-time transcription over its websocket, 8 kHz μ-law as the carrier sends it.

One websocket per call, opened when the call's STT stream opens: the config message goes first
(never with the key: that is in the upgrade's `Authorization: Bearer` header), then the caller's
audio as it comes, silence included (Soniox's endpoint detection listens to it). When no audio
flows for `keepalive_secs` a `keepalive` message goes instead (Soniox needs one at least every 20 s
and bills the stream's open time, idle included: the stream is closed with the call).

Turns: final tokens are sent once and accumulate; non-final tokens are re-sent revised in every
response and only ever show in `Transcript(is_final=False)` (finals so far + latest non-finals). The
`<end>` token (endpoint detection) ends the turn with `end_of_utterance`; `flush()` sends `finalize`
and the `<fin>` token that answers it ends the turn the same way. A turn's `audio_ms` is the end of
its last token in the stream's audio (or what Soniox had finalized), which the pipeline times by.

Errors come in-band (`{error_code, error_message}`, then a close): 401/403 are fatal, 408/429/5xx
retryable. Handshake refusals (a proxy, a gateway) are retried with backoff while retryable.

Wire format and sources: `patterd.protocols.soniox`. Usage: `audio_seconds` (price in `patterd.cost`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import structlog
from pydantic import Field, SecretStr, model_validator

from patterd.errors import ProviderConnectionError, ProviderError, error_for_status
from patterd.protocols import soniox as wire
from patterd.providers import ws_stt
from patterd.providers.kinds import Transcript
from patterd.providers.spec import BuildContext, Capabilities, ProviderOptions, ProviderSpec, env_secret

log = structlog.get_logger(__name__)

NAME = "soniox"
KEY_ENV = "SONIOX_API_KEY"
AUTH_HINT = f"check api_key or {KEY_ENV}"


class Options(ProviderOptions):
    """Options of `stt.soniox` (names as the config message's fields where one exists)."""

    api_key: SecretStr | None = Field(
        default_factory=env_secret(KEY_ENV),
        description="sent as `Authorization: Bearer <key>` on the upgrade",
    )
    base_url: str = Field(
        default=wire.DEFAULT_BASE_URL,
        description="websocket host (regional domains per project on request); http(s) is accepted",
    )
    api_url: str | None = Field(
        default=None,
        description="REST host for `check --probe` (GET /v1/models); default api.soniox.com, "
        "or base_url's own host when base_url is not Soniox's",
    )
    model: str = "stt-rt-v4"
    language_hints: list[str] = Field(default_factory=lambda: ["en"], description="ISO 639-1 codes")
    enable_endpoint_detection: bool = Field(
        default=True, description="Soniox ends utterances itself (`<end>` token) on a pause"
    )
    max_endpoint_delay_ms: int | None = Field(
        default=None, ge=500, le=3000, description="the longest pause before `<end>`; null: Soniox's 2000"
    )
    context: str | None = Field(default=None, description="text that biases recognition (names, terms)")
    keepalive_secs: float = Field(
        default=10.0, gt=0, le=19, description="a keepalive message when no audio was sent for this long"
    )
    flush_timeout_secs: float = Field(
        default=1.5,
        gt=0,
        le=30,
        description="how long a flush waits for the `<fin>` answer to finalize; then a retryable error",
    )
    connect_timeout_secs: float = Field(default=10.0, gt=0, description="the whole websocket handshake")
    connect_retries: int = Field(
        default=2, ge=0, le=10, description="handshake retries on 429, 5xx, network errors"
    )
    retry_backoff_ms: int = Field(
        default=250, ge=0, le=60000, description="first retry delay, doubled each time"
    )
    close_timeout_secs: float = Field(
        default=2.0, gt=0, description="wait for the last tokens after the end of audio"
    )

    @model_validator(mode="after")
    def _check(self) -> Options:
        ws_stt.endpoint_host(self.base_url, "stt.soniox")
        if self.api_key is None:
            raise ValueError(f"stt.soniox needs api_key (or the {KEY_ENV} environment variable)")
        return self

    def config(self) -> wire.Config:
        """The stream's config: the carrier's own audio, no transcoding."""
        return wire.Config(
            model=self.model,
            audio_format="mulaw",
            sample_rate=8000,
            num_channels=1,
            language_hints=tuple(self.language_hints),
            enable_endpoint_detection=self.enable_endpoint_detection,
            max_endpoint_delay_ms=self.max_endpoint_delay_ms,
            context=self.context,
        )


class SonioxStream(ws_stt.Stream):
    """One call's live recognition (kinds.STTStream) over an open websocket."""

    task_prefix = "soniox"
    _log = log

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, options: Options, owner: SonioxSTT) -> None:
        super().__init__(ws, owner)
        self._options = options
        self._finals: list[str] = []  # final token texts of the turn in progress
        self._last_end_ms: float | None = None
        self._fin = asyncio.Condition()
        self._fin_answers = 0
        self._error: ProviderError | None = None
        self.keepalives = 0
        self.finished = False  # Soniox sent `finished: true`

    # -------- kinds.STTStream (push_audio and the transcripts: ws_stt.Stream)

    async def flush(self) -> None:
        """Send finalize; return once its `<fin>` answer (and so the turn's final) is queued."""
        if self._closing or self._ended:
            return
        async with self._fin:
            wanted = self._fin_answers + 1
        self._send_q.put_nowait(ws_stt.Mark())
        answered = ws_stt.wait_answer(
            self._fin, lambda: self._fin_answers >= wanted or self._ended, self._options.flush_timeout_secs
        )
        if not await answered:
            # Soniox always answers finalize with `<fin>`: silence means a stalled stream. The words
            # finalized so far are still the caller's; then a retryable error so the pipeline moves on.
            timeout = self._options.flush_timeout_secs
            log.warning("soniox finalize not answered in time", timeout_secs=timeout)
            self._end_turn(None)
            if not self._ended:
                self._ended = True
                self._out.put_nowait(
                    ProviderConnectionError(
                        f"stt.soniox did not answer finalize within {timeout} s", provider=NAME
                    )
                )
                self._out.put_nowait(None)

    # -------- sending

    async def _sender(self) -> None:
        await ws_stt.send_loop(
            self._ws,
            self._send_q,
            first=self._options.config().message(),
            end=lambda: wire.END_OF_AUDIO,
            mark=wire.finalize,
            sent=self._sent,
            log=log,
            event="soniox send stopped",
            keepalive=(self._options.keepalive_secs, wire.KEEPALIVE),
            kept_alive=self._kept_alive,
        )

    def _kept_alive(self) -> None:
        self.keepalives += 1

    # -------- receiving

    async def _receiver(self) -> None:
        ws = self._ws
        error, _ = await ws_stt.read_loop(
            ws, self._on_message, label="stt.soniox", provider=NAME, binary=True
        )
        error = self._error or error
        if error is None and not self._closing and not self.finished:
            code = ws.close_code
            said = "dropped the connection" if code in (None, 1006) else f"closed the stream with {code}"
            error = ProviderConnectionError(f"stt.soniox {said}", provider=NAME)
        self._ended = True
        if error is not None:
            self._end_turn(None)  # what was finalized is still what the caller said
            self._out.put_nowait(error)
        self._out.put_nowait(None)
        async with self._fin:
            self._fin.notify_all()

    async def _on_message(self, data: str | bytes) -> bool:
        """Handle one message; True once the stream is over (an error, or `finished`)."""
        try:
            message = wire.parse(data)
        except wire.SonioxProtocolError as exc:
            ws_stt.count_malformed(log, "soniox message skipped", exc, self, self._owner)
            return False
        if isinstance(message, wire.ErrorResponse):
            text = f"stt.soniox error {message.code}: {message.message[:200]}"
            # Unknown codes (0) are server trouble as far as we can tell: retryable.
            self._error = error_for_status(message.code or 500, text, provider=NAME, auth_hint=AUTH_HINT)
            return True
        await self._on_response(message)
        return self.finished

    async def _on_response(self, r: wire.Response) -> None:
        pending: list[str] = []  # this response's non-final tokens (they replace the previous ones)
        end_ms: float | None = None
        for token in r.tokens:
            if token.is_final and token.marker:
                self._end_turn(self._last_end_ms if self._last_end_ms is not None else r.final_audio_proc_ms)
                if token.text == wire.FIN_TOKEN:
                    async with self._fin:
                        self._fin_answers += 1
                        self._fin.notify_all()
                continue
            if token.marker:
                continue  # a non-final marker is not documented; never shown as words
            if token.is_final:
                self._finals.append(token.text)
                if token.end_ms is not None:
                    self._last_end_ms = token.end_ms
                if token.confidence is not None:
                    self._confidences.append(token.confidence)
            else:
                pending.append(token.text)
            if token.end_ms is not None:
                end_ms = token.end_ms
        shown = ("".join(self._finals) + "".join(pending)).strip()
        if shown and (pending or any(t.is_final and not t.marker for t in r.tokens)):
            self._out.put_nowait(Transcript(shown, is_final=False, audio_ms=end_ms))
        if r.finished:
            self._end_turn(r.final_audio_proc_ms or None)
            self.finished = True

    def _end_turn(self, audio_ms: float | None) -> None:
        """Queue the turn's final transcript (nothing when no token holds words)."""
        text = "".join(self._finals).strip()
        self._finals = []
        self._emit_turn(text, audio_ms)

    # -------- closing

    async def close(self) -> None:
        """End of audio (an empty frame) after the audio already pushed, wait briefly, close the socket."""
        await self._end(
            self._options.close_timeout_secs, "soniox stream did not finish in time; closing our side"
        )


class SonioxSTT(ws_stt.Provider[Options, SonioxStream]):
    """The live `stt.soniox` provider (kinds.STT): one HTTP session, one websocket per stream."""

    name = NAME

    def _headers(self) -> dict[str, str]:
        key = self.options.api_key
        return wire.auth_headers(key.get_secret_value()) if key is not None else {}

    def __repr__(self) -> str:
        return f"SonioxSTT(model={self.options.model!r}, base_url={self.options.base_url!r})"

    def _new_stream(self, ws: aiohttp.ClientWebSocketResponse) -> SonioxStream:
        return SonioxStream(ws, self.options, self)

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        """The handshake, retried with doubling backoff while the refusal is retryable."""
        opts = self.options
        url = wire.websocket_url(opts.base_url)
        return await ws_stt.connect_with_retries(
            lambda: ws_stt.open_websocket(
                self._http,
                url,
                headers=self._headers(),
                connect_timeout=opts.connect_timeout_secs,
                close_timeout=opts.close_timeout_secs,
                refused=lambda exc: f"stt.soniox refused the stream: HTTP {exc.status}",
                unreachable=f"stt.soniox cannot connect to {opts.base_url}",
                provider=NAME,
                auth_hint=AUTH_HINT,
            ),
            retries=opts.connect_retries,
            backoff_ms=opts.retry_backoff_ms,
            log=log,
            event="soniox handshake failed; retrying",
        )

    async def check(self) -> None:
        """Probe the key and the host: `GET /v1/models` (authenticated, no audio, not billed)."""
        await ws_stt.probe(
            self._http,
            wire.api_url(self.options.base_url, self.options.api_url, wire.MODELS_PATH),
            headers=self._headers(),
            label="stt.soniox",
            provider=NAME,
            auth_hint=AUTH_HINT,
        )


@asynccontextmanager
async def build(options: Options, ctx: BuildContext) -> AsyncIterator[SonioxSTT]:
    """One aiohttp session for the provider's lifetime (no connection until a call opens a stream)."""
    async with ws_stt.http_session(options.connect_timeout_secs) as http:
        yield SonioxSTT(options, http)


async def check(provider: Any) -> None:
    """`patterd check --probe`: an authenticated GET of the models the key can use."""
    await provider.check()


SPEC = ProviderSpec(
    kind="stt",
    name=NAME,
    options=Options,
    build=build,
    summary="Soniox real-time transcription (websocket, μ-law 8 kHz, endpoint detection, finalize)",
    check=check,
    capabilities=Capabilities(streaming=True, interim_results=True, needs_network=True, sample_rates=(8000,)),
)
