"""`stt.speechmatics`: Speechmatics real-time v2 over its websocket, 8 kHz μ-law as the carrier sends it.

One websocket per call, opened when the call's STT stream opens: `StartRecognition` (raw mulaw
8000 Hz, partials on, `max_delay`, `end_of_utterance_silence_trigger`), then nothing until
`RecognitionStarted` (an Error instead is mapped and, when retryable, retried with backoff like a
refused handshake), then the caller's audio as binary frames, silence included (turn detection
listens to it). Speechmatics keeps a session alive on audio or websocket pings: aiohttp pings every
`ping_secs` (its limit is 3 minutes without either).

Turns: every `AddTranscript` of a turn accumulates until `EndOfUtterance` ends it (final
Transcript with `end_of_utterance`, `audio_ms` = the EndOfUtterance's `end_time`); partials only
ever produce `Transcript(is_final=False)` (finals so far + the latest partial). `flush()` sends
`ForceEndOfUtterance`, waits for the server to acknowledge (`AudioAdded`) the audio pushed before
it, then — if words are pending — for the EndOfUtterance that answers it. Closing sends
`EndOfStream {last_seq_no}` and waits briefly for `EndOfTranscript`.

Errors: a handshake 401/403 or `not_authorised` (4001) is fatal; HTTP 429/5xx, `quota_exceeded`
(4005), `job_error` (4013), `internal_error` (1011) and timeouts are retryable. Speechmatics asks
for ≥ 5 s between such retries: a call cannot wait that long, so `connect_retries` is small and
the pipeline's fallback chain takes over after it.

Wire format and sources: `patterd.protocols.speechmatics`. Usage: `audio_seconds` (price in `patterd.cost`).
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
    ProviderAuthError,
    ProviderConnectionError,
    ProviderError,
    ProviderRateLimitError,
)
from patterd.protocols import speechmatics as wire
from patterd.providers import ws_stt
from patterd.providers.kinds import Transcript
from patterd.providers.spec import BuildContext, Capabilities, ProviderOptions, ProviderSpec, env_secret

log = structlog.get_logger(__name__)

NAME = "speechmatics"
KEY_ENV = "SPEECHMATICS_API_KEY"
AUTH_HINT = f"check api_key or {KEY_ENV}"


class Options(ProviderOptions):
    """Options of `stt.speechmatics` (names as StartRecognition's fields where one exists)."""

    api_key: SecretStr | None = Field(
        default_factory=env_secret(KEY_ENV), description="sent as `Authorization: Bearer <key>`"
    )
    region: wire.Region = Field(
        default="eu", description="eu: wss://eu.rt.speechmatics.com/v2, us: wss://us.…"
    )
    base_url: str | None = Field(
        default=None,
        description="the websocket endpoint, overriding region (on-prem, a proxy); http(s) accepted",
    )
    api_url: str | None = Field(
        default=None,
        description="REST host for `check --probe` (GET /v2/jobs?limit=1); default the region's batch "
        "host, or base_url's own host when base_url is not Speechmatics'",
    )
    language: str = "en"
    operating_point: str | None = Field(
        default="enhanced", description="standard | enhanced; null: server default"
    )
    max_delay: float = Field(default=1.0, ge=0.7, le=4.0, description="seconds a word may stay non-final")
    end_of_utterance_silence_trigger: float = Field(
        default=0.5,
        gt=0,
        le=2.0,
        description="seconds of silence after which Speechmatics sends EndOfUtterance",
    )
    enable_partials: bool = True
    additional_vocab: list[str] = Field(default_factory=list, description="words and names to recognize")
    ping_secs: float = Field(default=60.0, gt=0, le=170, description="websocket ping interval (limit: 3 min)")
    start_timeout_secs: float = Field(default=5.0, gt=0, description="wait for RecognitionStarted")
    flush_timeout_secs: float = Field(
        default=1.5, gt=0, le=30, description="how long a flush waits for ForceEndOfUtterance's answer"
    )
    connect_timeout_secs: float = Field(default=10.0, gt=0, description="the whole websocket handshake")
    connect_retries: int = Field(
        default=1, ge=0, le=10, description="retries on 429, 5xx, quota and network errors"
    )
    retry_backoff_ms: int = Field(
        default=500, ge=0, le=60000, description="first retry delay, doubled each time"
    )
    close_timeout_secs: float = Field(
        default=2.0, gt=0, description="wait for EndOfTranscript after EndOfStream"
    )

    @model_validator(mode="after")
    def _check(self) -> Options:
        ws_stt.endpoint_host(self.endpoint, "stt.speechmatics", shown=self.base_url)
        if self.api_key is None:
            raise ValueError(f"stt.speechmatics needs api_key (or the {KEY_ENV} environment variable)")
        return self

    @property
    def endpoint(self) -> str:
        return self.base_url or wire.REGION_URLS[self.region]

    def start(self) -> wire.StartRecognition:
        return wire.StartRecognition(
            language=self.language,
            operating_point=self.operating_point,
            enable_partials=self.enable_partials,
            max_delay=self.max_delay,
            end_of_utterance_silence_trigger=self.end_of_utterance_silence_trigger,
            additional_vocab=tuple(self.additional_vocab),
        )


def error_for_message(error: wire.ErrorMessage | None, close_code: int | None) -> ProviderError:
    """An Error message (or a bare close code) as the ProviderError the pipeline acts on."""
    kind = error.type if error is not None else ""
    said = f"stt.speechmatics {kind or 'closed the stream'}"
    if error is not None and error.reason:
        said += f": {error.reason[:200]}"
    if close_code is not None:
        said += f" (close {close_code})"
    if kind in wire.AUTH_ERRORS or close_code == wire.CLOSE_NOT_AUTHORISED:
        return ProviderAuthError(f"{said} ({AUTH_HINT})", provider=NAME)
    if kind == "quota_exceeded" or close_code == wire.CLOSE_QUOTA_EXCEEDED:
        return ProviderRateLimitError(said, provider=NAME)
    if kind in wire.RETRYABLE_ERRORS or not kind:
        return ProviderConnectionError(said, provider=NAME)
    return ProviderError(said, provider=NAME)  # invalid_config, invalid_audio_type…: retrying will not help


class SpeechmaticsStream(ws_stt.Stream):
    """One call's live recognition (kinds.STTStream) over a started session."""

    task_prefix = "speechmatics"
    _log = log

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, options: Options, owner: SpeechmaticsSTT) -> None:
        super().__init__(ws, owner)
        self._options = options
        self._finals: list[str] = []
        self._partial = ""
        self._changed = asyncio.Condition()  # AudioAdded, EndOfUtterance, the end
        self._acked = 0  # highest seq_no acknowledged
        self._utterances = 0  # EndOfUtterance messages seen
        self._pushed = 0  # frames pushed (seq_no they will get)
        self._error: ProviderError | None = None
        self.seq_no = 0  # audio frames sent (AddAudio)
        self.end_of_transcript = False

    # -------- kinds.STTStream (the transcripts: ws_stt.Stream)

    def push_audio(self, ulaw: bytes) -> None:
        if ulaw and not self._closing and not self._ended:
            self._pushed += 1
            self._send_q.put_nowait(ulaw)

    async def flush(self) -> None:
        """ForceEndOfUtterance; return once the turn's final is queued (or there was nothing to finalize)."""
        if self._closing or self._ended:
            return
        wanted_seq = self._pushed
        wanted_eou = self._utterances + 1
        self._send_q.put_nowait(ws_stt.Mark())
        try:
            async with asyncio.timeout(self._options.flush_timeout_secs):
                async with self._changed:
                    # The server has taken every frame pushed before the flush: its words are known by now.
                    await self._changed.wait_for(lambda: self._acked >= wanted_seq or self._ended)
                    if self._finals or self._partial:
                        await self._changed.wait_for(lambda: self._utterances >= wanted_eou or self._ended)
        except TimeoutError:
            log.warning("speechmatics ForceEndOfUtterance not answered in time")
            self._end_turn(None)

    # -------- sending

    async def _sender(self) -> None:
        await ws_stt.send_loop(
            self._ws,
            self._send_q,
            end=lambda: wire.end_of_stream(self.seq_no),
            mark=lambda: wire.force_end_of_utterance(self.audio_seconds),
            sent=self._sent,
            log=log,
            event="speechmatics send stopped",
        )

    def _sent(self, audio: bytes) -> None:
        self.seq_no += 1
        self.audio_bytes += len(audio)

    # -------- receiving

    async def _receiver(self) -> None:
        ws = self._ws
        error, _ = await ws_stt.read_loop(
            ws, self._on_message, label="stt.speechmatics", provider=NAME, binary=True
        )
        error = self._error or error
        if error is None and not self._closing and not self.end_of_transcript:
            code = ws.close_code
            error = (
                ProviderConnectionError("stt.speechmatics dropped the connection", provider=NAME)
                if code in (None, 1006)
                else error_for_message(None, code)
            )
        self._ended = True
        if error is not None:
            self._end_turn(None)
            self._out.put_nowait(error)
        self._out.put_nowait(None)
        async with self._changed:
            self._changed.notify_all()

    async def _on_message(self, data: str | bytes) -> bool:
        """Handle one message; True once EndOfTranscript came (the stream is over)."""
        try:
            message = wire.parse(data)
        except wire.SpeechmaticsProtocolError as exc:
            ws_stt.count_malformed(log, "speechmatics message skipped", exc, self, self._owner)
            return False
        if isinstance(message, wire.TranscriptMessage):
            self._on_transcript(message)
        elif isinstance(message, wire.AudioAdded):
            async with self._changed:
                self._acked = max(self._acked, message.seq_no)
                self._changed.notify_all()
        elif isinstance(message, wire.EndOfUtterance):
            self._end_turn(message.end_time * 1000)
            async with self._changed:
                self._utterances += 1
                self._changed.notify_all()
        elif isinstance(message, wire.EndOfTranscript):
            self._end_turn(None)
            self.end_of_transcript = True
        elif isinstance(message, wire.ErrorMessage):
            self._error = error_for_message(message, None)
        elif isinstance(message, wire.WarningMessage):
            log.warning("speechmatics warning", type=message.type, reason=message.reason[:200])
        return self.end_of_transcript

    def _on_transcript(self, m: wire.TranscriptMessage) -> None:
        text = " ".join(m.transcript.split())
        if m.final:
            self._partial = ""
            if not text:
                return
            self._finals.append(text)
            if m.confidence is not None:
                self._confidences.append(m.confidence)
        else:
            self._partial = text
            if not text:
                return
        shown = " ".join([*self._finals, self._partial]).strip()
        self._out.put_nowait(Transcript(shown, is_final=False, confidence=m.confidence, audio_ms=m.end_ms))

    def _end_turn(self, audio_ms: float | None) -> None:
        text = " ".join(self._finals)
        self._finals, self._partial = [], ""
        self._emit_turn(text, audio_ms)

    # -------- closing

    async def close(self) -> None:
        """EndOfStream after the audio already pushed, wait briefly for EndOfTranscript, close the socket."""
        await self._end(
            self._options.close_timeout_secs, "speechmatics stream did not end in time; closing our side"
        )


class SpeechmaticsSTT(ws_stt.Provider[Options, SpeechmaticsStream]):
    """The live `stt.speechmatics` provider (kinds.STT): one HTTP session, one websocket per stream."""

    name = NAME

    def _headers(self) -> dict[str, str]:
        key = self.options.api_key
        return wire.auth_headers(key.get_secret_value()) if key is not None else {}

    def __repr__(self) -> str:
        return f"SpeechmaticsSTT(language={self.options.language!r}, endpoint={self.options.endpoint!r})"

    def _new_stream(self, ws: aiohttp.ClientWebSocketResponse) -> SpeechmaticsStream:
        return SpeechmaticsStream(ws, self.options, self)

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        """Handshake + StartRecognition until RecognitionStarted, retried with backoff while retryable."""
        return await ws_stt.connect_with_retries(
            self._start,
            retries=self.options.connect_retries,
            backoff_ms=self.options.retry_backoff_ms,
            log=log,
            event="speechmatics session refused; retrying",
        )

    async def _start(self) -> aiohttp.ClientWebSocketResponse:
        opts = self.options
        ws = await ws_stt.open_websocket(
            self._http,
            wire.websocket_url(opts.endpoint),
            headers=self._headers(),
            connect_timeout=opts.connect_timeout_secs,
            close_timeout=opts.close_timeout_secs,
            refused=lambda exc: f"stt.speechmatics refused the session: HTTP {exc.status}",
            unreachable=f"stt.speechmatics cannot connect to {opts.endpoint}",
            provider=NAME,
            auth_hint=AUTH_HINT,
            heartbeat=opts.ping_secs,
        )
        try:
            await ws.send_str(opts.start().message())
            async with asyncio.timeout(opts.start_timeout_secs):
                while True:
                    msg = await ws.receive()
                    if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                        raise error_for_message(None, ws.close_code)
                    try:
                        message = wire.parse(msg.data)
                    except wire.SpeechmaticsProtocolError as exc:
                        self.malformed += 1
                        log.warning("speechmatics message skipped", error=str(exc)[:200])
                        continue
                    if isinstance(message, wire.RecognitionStarted):
                        return ws
                    if isinstance(message, wire.ErrorMessage):
                        raise error_for_message(message, None)
        except TimeoutError:
            await ws.close()
            raise ProviderConnectionError(
                f"stt.speechmatics sent no RecognitionStarted within {opts.start_timeout_secs} s",
                provider=NAME,
            ) from None
        except BaseException:
            await ws.close()
            raise

    async def check(self) -> None:
        """Probe the key and the host: `GET /v2/jobs?limit=1` (authenticated, lists, bills nothing)."""
        await ws_stt.probe(
            self._http,
            wire.api_url(self.options.endpoint, self.options.api_url, wire.JOBS_PATH),
            params={"limit": "1"},
            headers=self._headers(),
            label="stt.speechmatics",
            provider=NAME,
            auth_hint=AUTH_HINT,
        )


@asynccontextmanager
async def build(options: Options, ctx: BuildContext) -> AsyncIterator[SpeechmaticsSTT]:
    """One aiohttp session for the provider's lifetime (no connection until a call opens a stream)."""
    async with ws_stt.http_session(options.connect_timeout_secs) as http:
        yield SpeechmaticsSTT(options, http)


async def check(provider: Any) -> None:
    """`patterd check --probe`: an authenticated GET of the batch jobs list (one row)."""
    await provider.check()


SPEC = ProviderSpec(
    kind="stt",
    name=NAME,
    options=Options,
    build=build,
    summary="Speechmatics real-time v2 (websocket, μ-law 8 kHz, partials, EndOfUtterance, eu/us regions)",
    check=check,
    capabilities=Capabilities(streaming=True, interim_results=True, needs_network=True, sample_rates=(8000,)),
)
