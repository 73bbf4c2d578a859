"""`stt.deepgram`: Deepgram live transcription over the `/v1/listen` websocket, 8 kHz μ-law as the carrier sends it.

One websocket per call, opened when the call's STT stream opens (not at the first word). The
caller's audio is streamed as it comes, silence included, because Deepgram's endpointing counts
the silence inside the audio it is sent; when no audio flows for `keepalive_secs` a KeepAlive
text frame goes instead (Deepgram closes with 1011 after 10 s of neither).

Turns: the text of a turn is every `is_final` segment up to `speech_final`, an `UtteranceEnd`, or
the `from_finalize` answer to `flush()` (the pipeline's VAD ended the turn: we send `Finalize`);
interim results only ever produce `Transcript(is_final=False)`. A turn's `audio_ms` is where in the
stream Deepgram decided: the end (`start + duration`) of the result that closed it, or for an
UtteranceEnd its `last_word_end + utterance_end_ms`; the pipeline times endpointing by it.

Wire format and sources: `patterd.protocols.deepgram`. Billing is per audio minute streamed; the
pipeline reports `audio_seconds` usage under this provider's name (price in `patterd.cost`).
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
    ProviderError,
    ProviderProtocolError,
)
from patterd.protocols import deepgram as wire
from patterd.providers import ws_stt
from patterd.providers.kinds import Transcript
from patterd.providers.spec import BuildContext, Capabilities, ProviderOptions, ProviderSpec, env_secret

log = structlog.get_logger(__name__)

NAME = "deepgram"
KEY_ENV = "DEEPGRAM_API_KEY"
AUTH_HINT = f"check api_key or {KEY_ENV}"


class Options(ProviderOptions):
    """Options of `stt.deepgram` (names as Deepgram's query parameters where one exists)."""

    api_key: SecretStr | None = Field(
        default_factory=env_secret(KEY_ENV), description="sent as `Authorization: Token <key>`"
    )
    base_url: str = Field(
        default=wire.DEFAULT_BASE_URL,
        description="EU: wss://api.eu.deepgram.com; self-hosted: ws(s)://host:port (http(s) is accepted)",
    )
    model: str = "nova-3"
    language: str | None = "en"
    endpointing_ms: int | None = Field(
        default=300,
        ge=10,
        le=60000,
        description="`endpointing`: ms of silence in the audio sent that ends a turn (speech_final); null: off",
    )
    utterance_end_ms: int | None = Field(
        default=1000,
        ge=1000,
        le=60000,
        description="UtteranceEnd after this many ms without words (needs interim_results); null: off",
    )
    interim_results: bool = True
    smart_format: bool = True
    keyterms: list[str] = Field(default_factory=list, description="Nova-3 keyterm prompting (`keyterm`)")
    keywords: list[str] = Field(
        default_factory=list, description='older models only: "word" or "word:boost" (`keywords`)'
    )
    keepalive_secs: float = Field(
        default=4.0, gt=0, le=9, description="a KeepAlive message when no audio was sent for this long"
    )
    flush_timeout_secs: float = Field(
        default=1.5, gt=0, le=30, description="how long a flush waits for Finalize's from_finalize answer"
    )
    connect_timeout_secs: float = Field(
        default=10.0, gt=0, description="the whole websocket handshake (TCP, TLS, upgrade)"
    )
    connect_retries: int = Field(
        default=2, ge=0, le=10, description="handshake retries on 429, 5xx and network errors"
    )
    retry_backoff_ms: int = Field(
        default=250, ge=0, le=60000, description="first retry delay, doubled for each next one"
    )
    close_timeout_secs: float = Field(
        default=2.0, gt=0, description="wait for the last results after CloseStream"
    )

    @model_validator(mode="after")
    def _check(self) -> Options:
        host = ws_stt.endpoint_host(self.base_url, "stt.deepgram")
        if self.api_key is None and host.endswith("deepgram.com"):
            raise ValueError(f"stt.deepgram needs api_key (or the {KEY_ENV} environment variable)")
        if self.utterance_end_ms is not None and not self.interim_results:
            raise ValueError("stt.deepgram utterance_end_ms needs interim_results: true (Deepgram's rule)")
        nova3 = self.model.startswith("nova-3")
        if self.keyterms and not nova3:
            raise ValueError(f"stt.deepgram keyterms work with Nova-3 models only (model is {self.model!r})")
        if self.keywords and nova3:
            raise ValueError("stt.deepgram keywords do not work with Nova-3: use keyterms")
        return self

    def params(self) -> wire.ListenParams:
        """The query of the live request: the carrier's own audio, no transcoding."""
        return wire.ListenParams(
            model=self.model,
            language=self.language,
            encoding="mulaw",
            sample_rate=8000,
            interim_results=self.interim_results,
            endpointing_ms=self.endpointing_ms,
            utterance_end_ms=self.utterance_end_ms,
            smart_format=self.smart_format,
            keyterms=tuple(self.keyterms),
            keywords=tuple(self.keywords),
        )


class DeepgramStream(ws_stt.Stream):
    """One call's live recognition (kinds.STTStream) over an open websocket."""

    task_prefix = "deepgram"
    _log = log

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, options: Options, owner: DeepgramSTT) -> None:
        super().__init__(ws, owner)
        self._options = options
        self._segments: list[str] = []  # is_final texts of the turn in progress
        self._turn_start_ms = 0.0  # where the turn's first segment starts in the stream
        self._finalized = asyncio.Condition()
        self._finalize_answers = 0  # from_finalize results seen
        self.keepalives = 0
        self.request_id = ""

    # -------- kinds.STTStream (push_audio and the transcripts: ws_stt.Stream)

    async def flush(self) -> None:
        """Send Finalize; return once its `from_finalize` answer (and so the turn's final) is queued."""
        if self._closing or self._ended:
            return
        async with self._finalized:
            wanted = self._finalize_answers + 1
        self._send_q.put_nowait(ws_stt.Mark())
        answered = ws_stt.wait_answer(
            self._finalized,
            lambda: self._finalize_answers >= wanted or self._ended,
            self._options.flush_timeout_secs,
        )
        if not await answered:
            # Deepgram documents that a from_finalize answer can be missing: end the turn with what we have.
            log.warning(
                "deepgram Finalize not answered in time", timeout_secs=self._options.flush_timeout_secs
            )
            self._end_turn(None)

    # -------- sending

    async def _sender(self) -> None:
        await ws_stt.send_loop(
            self._ws,
            self._send_q,
            end=lambda: wire.CLOSE_STREAM,
            mark=lambda: wire.FINALIZE,
            sent=self._sent,
            log=log,
            event="deepgram send stopped",
            keepalive=(self._options.keepalive_secs, wire.KEEPALIVE),
            kept_alive=self._kept_alive,
        )

    def _kept_alive(self) -> None:
        self.keepalives += 1

    # -------- receiving

    async def _receiver(self) -> None:
        ws = self._ws
        error, reason = await ws_stt.read_loop(ws, self._on_text, label="stt.deepgram", provider=NAME)
        if error is None and not self._closing:
            error = self._close_error(ws.close_code, reason)
        self._ended = True
        if error is not None:
            self._end_turn(None)  # what was finalized is still what the caller said
            self._out.put_nowait(error)
        self._out.put_nowait(None)
        async with self._finalized:
            self._finalized.notify_all()

    @staticmethod
    def _close_error(code: int | None, reason: str) -> ProviderError:
        said = f"closed the stream with {code}" + (f": {reason}" if reason else "")
        if code == wire.CLOSE_DATA_ERROR:  # the audio itself is refused: reconnecting will not help
            return ProviderProtocolError(f"stt.deepgram {said}", provider=NAME)
        if code is None or code == 1006:
            said = "dropped the connection without a close frame"
        return ProviderConnectionError(f"stt.deepgram {said}", provider=NAME)

    async def _on_text(self, data: str) -> bool:
        """Handle one message (never the last: Deepgram ends a stream by closing it)."""
        try:
            message = wire.parse(data)
        except wire.DeepgramProtocolError as exc:
            ws_stt.count_malformed(log, "deepgram message skipped", exc, self, self._owner)
            return False
        if isinstance(message, wire.Results):
            await self._on_results(message)
        elif isinstance(message, wire.UtteranceEnd):
            last_word_ms = message.last_word_end * 1000
            if last_word_ms < self._turn_start_ms:
                return False  # about the turn speech_final already ended, not the words that came since
            # Deepgram decided once `utterance_end_ms` of audio had followed the last word.
            self._end_turn(last_word_ms + (self._options.utterance_end_ms or 0))
        elif isinstance(message, wire.Metadata):
            self.request_id = message.request_id
        elif isinstance(message, wire.ErrorMessage):
            log.warning("deepgram error message", description=message.description[:200], code=message.code)
        return False

    async def _on_results(self, r: wire.Results) -> None:
        text = r.transcript.strip()
        if r.is_final:
            if text:
                if not self._segments:
                    self._turn_start_ms = r.start * 1000
                self._segments.append(text)
                if r.confidence is not None:
                    self._confidences.append(r.confidence)
            if r.speech_final or r.from_finalize:
                self._end_turn(r.end_ms)
            elif text:
                self._out.put_nowait(Transcript(" ".join(self._segments), is_final=False, audio_ms=r.end_ms))
            if r.from_finalize:
                async with self._finalized:
                    self._finalize_answers += 1
                    self._finalized.notify_all()
        elif text:
            # An interim guess: shown with the finals before it, never counted as the turn's text.
            shown = " ".join([*self._segments, text])
            self._out.put_nowait(
                Transcript(shown, is_final=False, confidence=r.confidence, audio_ms=r.end_ms)
            )

    def _end_turn(self, audio_ms: float | None) -> None:
        """Queue the turn's final transcript (nothing when no segment holds words)."""
        if not self._segments:
            return
        text = " ".join(self._segments)
        self._segments = []
        self._emit_turn(text, audio_ms)

    # -------- closing

    async def close(self) -> None:
        """CloseStream after the audio already pushed, wait briefly for the last results, close the socket."""
        await self._end(
            self._options.close_timeout_secs, "deepgram stream did not close in time; closing our side"
        )


class DeepgramSTT(ws_stt.Provider[Options, DeepgramStream]):
    """The live `stt.deepgram` provider (kinds.STT): one HTTP session, one websocket per stream."""

    name = NAME

    def _headers(self) -> dict[str, str]:
        key = self.options.api_key
        return wire.auth_headers(key.get_secret_value()) if key is not None else {}

    def __repr__(self) -> str:
        return f"DeepgramSTT(model={self.options.model!r}, base_url={self.options.base_url!r})"

    def _new_stream(self, ws: aiohttp.ClientWebSocketResponse) -> DeepgramStream:
        return DeepgramStream(ws, self.options, self)

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        """The handshake, retried with doubling backoff while the refusal is retryable."""
        opts = self.options
        url = wire.listen_url(opts.base_url, opts.params())

        def refused(exc: aiohttp.WSServerHandshakeError) -> str:
            reason = wire.handshake_error(exc.status, dict(exc.headers or {}))
            return f"stt.deepgram refused the stream: {reason}"

        return await ws_stt.connect_with_retries(
            lambda: ws_stt.open_websocket(
                self._http,
                url,
                headers=self._headers(),
                connect_timeout=opts.connect_timeout_secs,
                close_timeout=opts.close_timeout_secs,
                refused=refused,
                unreachable=f"stt.deepgram cannot connect to {opts.base_url}",
                provider=NAME,
                auth_hint=AUTH_HINT,
            ),
            retries=opts.connect_retries,
            backoff_ms=opts.retry_backoff_ms,
            log=log,
            event="deepgram handshake failed; retrying",
        )

    async def check(self) -> None:
        """Probe the key and the host: `GET /v1/projects` (authenticated, no audio, not billed)."""

        async def reason(response: aiohttp.ClientResponse) -> str:
            return wire.handshake_error(response.status, dict(response.headers))

        await ws_stt.probe(
            self._http,
            wire.http_url(self.options.base_url, wire.PROJECTS_PATH),
            headers=self._headers(),
            label="stt.deepgram",
            provider=NAME,
            auth_hint=AUTH_HINT,
            reason=reason,
        )


@asynccontextmanager
async def build(options: Options, ctx: BuildContext) -> AsyncIterator[DeepgramSTT]:
    """One aiohttp session for the provider's lifetime (no connection until a call opens a stream)."""
    async with ws_stt.http_session(options.connect_timeout_secs) as http:
        yield DeepgramSTT(options, http)


async def check(provider: Any) -> None:
    """`patterd check --probe`: an authenticated GET of the projects the key can see."""
    await provider.check()


SPEC = ProviderSpec(
    kind="stt",
    name=NAME,
    options=Options,
    build=build,
    summary="Deepgram live transcription (websocket, μ-law 8 kHz, endpointing, interim results)",
    check=check,
    capabilities=Capabilities(streaming=True, interim_results=True, needs_network=True, sample_rates=(8000,)),
)
