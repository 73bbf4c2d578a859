"""`tts.elevenlabs`: ElevenLabs streaming synthesis over HTTP keep-alive, one request per sentence, as 8 kHz μ-law.

Why HTTP `/stream` and not the `stream-input` websocket: the pipeline hands TTS one whole sentence
at a time, so the websocket's text streaming buys nothing, while each websocket is single-use
(`{"text": ""}` ends it; a socket held open dies after `inactivity_timeout`, and there is no cancel
message, so a barge-in must close it) and costs an upgrade round trip per sentence. A POST on a
kept-alive connection has no handshake in the turn path; closing the response aborts the generation.
bench/elevenlabs_transport.py measures both against the fake (figures in bench/README.md).

Wire format: `patterd.protocols.elevenlabs`. Auth is the `xi-api-key` header; `output_format` is a
query parameter (without it the API sends MP3).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from patterd.errors import (
    ProviderAuthError,
    ProviderConnectionError,
    ProviderError,
    ProviderProtocolError,
    error_for_status,
)
from patterd.protocols import elevenlabs as wire
from patterd.protocols.audio import Resampler, alaw_to_ulaw, pcm16_to_ulaw
from patterd.providers.spec import BuildContext, Capabilities, ProviderOptions, ProviderSpec, env_secret

NAME = "elevenlabs"  # ProviderError.provider and the cost-table name
KEY_VARIABLE = "ELEVENLABS_API_KEY"
AUTH_HINT = f"check api_key / {KEY_VARIABLE}"
log = logging.getLogger(__name__)

OutputFormat = Literal[
    "ulaw_8000", "alaw_8000", "pcm_8000", "pcm_16000", "pcm_22050", "pcm_24000", "pcm_44100", "pcm_48000"
]


class VoiceSettings(BaseModel):
    """Per-request voice settings (API reference `VoiceSettings`); omitted ones keep the voice's stored values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stability: float | None = Field(default=None, ge=0, le=1)
    similarity_boost: float | None = Field(default=None, ge=0, le=1)
    style: float | None = Field(default=None, ge=0, le=1)
    use_speaker_boost: bool | None = None
    speed: float | None = Field(default=None, ge=0.7, le=1.2)


class Options(ProviderOptions):
    """Options of `tts.elevenlabs`."""

    api_key: SecretStr | None = Field(default_factory=env_secret(KEY_VARIABLE))
    voice_id: str = Field(
        default="rachel",
        validate_default=True,  # the default is a name too: resolved to its id like any other
        description="a voice id, or a premade voice's name (rachel, adam, sarah, ...)",
    )
    model_id: str = Field(
        default=wire.DEFAULT_MODEL, description="eleven_flash_v2_5 is the lowest-latency model"
    )
    voice_settings: VoiceSettings | None = Field(
        default=None,
        description="stability, similarity_boost, style (0-1), use_speaker_boost, speed (0.7-1.2)",
    )
    output_format: OutputFormat = Field(
        default="ulaw_8000",
        description="asked of ElevenLabs (query parameter); other than ulaw_8000 is transcoded",
    )
    base_url: str = wire.DEFAULT_BASE_URL
    timeout_secs: float = Field(
        default=10.0, gt=0, description="connect, and the longest wait for the next audio"
    )
    # aiohttp's default, 15 s, is shorter than many caller turns: the next reply would pay a TCP+TLS handshake.
    keepalive_secs: float = Field(
        default=60.0,
        ge=0,
        description="an idle connection is kept this long for the next sentence (0: never)",
    )
    max_retries: int = Field(default=2, ge=0, le=5, description="429/5xx/connection retries before any audio")
    retry_backoff_secs: float = Field(
        default=0.25, ge=0, description="first retry delay, doubled for each next one"
    )

    @field_validator("voice_id")
    @classmethod
    def _voice_id(cls, value: str) -> str:
        return wire.resolve_voice(value)

    @model_validator(mode="after")
    def _key_when_needed(self) -> Options:
        if (
            self.api_key is None
            and urlsplit(self.base_url).hostname == urlsplit(wire.DEFAULT_BASE_URL).hostname
        ):
            raise ValueError(f"tts.elevenlabs needs api_key (or the {KEY_VARIABLE} environment variable)")
        return self


class UlawConverter:
    """Turns one synthesis' audio, in any OUTPUT_FORMATS format, into 8 kHz μ-law as it streams."""

    def __init__(self, output_format: str) -> None:
        self.encoding, rate = wire.OUTPUT_FORMATS[output_format]
        self._resampler = Resampler(rate, 8000) if self.encoding == "pcm" and rate != 8000 else None
        self._odd = b""  # a PCM byte split across chunks

    def feed(self, data: bytes, *, last: bool = False) -> bytes:
        if self.encoding == "ulaw":
            return data
        if self.encoding == "alaw":
            return alaw_to_ulaw(data)
        data = self._odd + data
        cut = len(data) - len(data) % 2
        pcm, self._odd = data[:cut], data[cut:]
        if self._resampler is not None:
            pcm = self._resampler.process(pcm, last=last)
        return pcm16_to_ulaw(pcm) if pcm else b""


class ElevenLabsTTS:
    """A live `tts.elevenlabs`: one aiohttp session (kept-alive connections), one POST per sentence."""

    name = NAME

    def __init__(self, options: Options, http: aiohttp.ClientSession) -> None:
        self.options = options
        self._http = http
        self.characters = 0  # characters sent for synthesis (what ElevenLabs bills)
        self.requests = 0
        self.malformed = 0  # answers that were not audio

    def __repr__(self) -> str:
        return f"ElevenLabsTTS(voice_id={self.options.voice_id!r}, model_id={self.options.model_id!r})"

    def _headers(self) -> dict[str, str]:
        key = self.options.api_key.get_secret_value() if self.options.api_key is not None else ""
        return {**wire.headers(key), "Accept": "*/*"}

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """Speak `text` as 8 kHz μ-law chunks; closing the generator aborts the HTTP stream (barge-in)."""
        if not text.strip():
            return
        o = self.options
        url = wire.stream_url(o.base_url, o.voice_id, o.output_format)
        settings = o.voice_settings.model_dump(exclude_none=True) if o.voice_settings is not None else None
        body = wire.stream_body(text, o.model_id, settings)
        attempt = 0
        while True:
            converter = UlawConverter(o.output_format)
            sent = 0
            try:
                self.requests += 1
                async with self._http.post(url, json=body, headers=self._headers()) as response:
                    if response.status != 200:
                        raise status_error(response.status, await response.read(), o)
                    kind = response.headers.get("Content-Type", "")
                    if kind.startswith(("application/json", "text/")):
                        # A 200 carrying an error object or a proxy's page: played as μ-law it
                        # would be loud noise. Counted, logged, and this sentence is given up.
                        self.malformed += 1
                        sample = (await response.content.read(2048)).decode("utf-8", "replace")
                        log.warning("ElevenLabs answered %s instead of audio: %.200r", kind, sample)
                        raise ProviderProtocolError(
                            f"ElevenLabs answered {kind.split(';')[0]} instead of audio", provider=NAME
                        )
                    self.characters += len(text)  # billed per answered request
                    try:
                        async for data in response.content.iter_any():
                            out = converter.feed(data)
                            if out:
                                sent += len(out)
                                yield out
                        tail = converter.feed(b"", last=True)
                        if tail:
                            yield tail
                    finally:
                        if not response.content.is_eof():
                            # Barge-in or failure mid-stream: drop the connection so ElevenLabs stops
                            # generating (there is no cancel message) and nothing stale is reused.
                            response.close()
                return
            except ProviderError as exc:
                if not exc.retryable or sent or attempt >= o.max_retries:
                    raise
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = ProviderConnectionError(
                    f"ElevenLabs stream: {type(exc).__name__}: {exc or 'timed out'}", provider=NAME
                )
                # A timeout already cost the caller timeout_secs of silence: the pipeline decides
                # whether to try again, not a second hidden wait here.
                if sent or attempt >= o.max_retries or isinstance(exc, TimeoutError):
                    raise error from exc
                if attempt == 0 and isinstance(exc, aiohttp.ServerDisconnectedError):
                    # A kept-alive connection the server had closed while idle: reconnect at once,
                    # a backoff here would land in the turn's latency.
                    attempt += 1
                    continue
            attempt += 1
            await asyncio.sleep(o.retry_backoff_secs * 2 ** (attempt - 1))

    async def check(self) -> None:
        """Probe the key and the voice: `GET /v1/voices/{voice_id}` (401 bad key, 404 unknown voice)."""
        url = wire.voice_url(self.options.base_url, self.options.voice_id)
        try:
            async with self._http.get(url, headers=self._headers()) as response:
                if response.status != 200:
                    raise status_error(response.status, await response.read(), self.options)
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderConnectionError(
                f"ElevenLabs {url}: {type(exc).__name__}: {exc or 'timed out'}", provider=NAME
            ) from exc


def status_error(status: int, body: bytes, options: Options) -> ProviderError:
    """The ProviderError for an error answer, with ElevenLabs' own status word and message."""
    code, message = wire.error_detail(body, status)
    text = f"ElevenLabs HTTP {status}{f' {code}' if code else ''}: {message}"
    if status == 404 and code == "voice_not_found":
        return ProviderError(
            f"{text} (voice_id {options.voice_id!r}: use a voice id from GET /v1/voices)", provider=NAME
        )
    if status == 401 and code in {"quota_exceeded", "detected_unusual_activity"}:
        # ElevenLabs answers an exhausted quota with 401 too; it is not a wrong key, but not retryable either.
        return ProviderAuthError(f"{text} ({AUTH_HINT}: the key's quota or account)", provider=NAME)
    return error_for_status(status, text, provider=NAME, auth_hint=AUTH_HINT)


@asynccontextmanager
async def build(options: Options, ctx: BuildContext) -> AsyncIterator[ElevenLabsTTS]:
    """One aiohttp session (and its keep-alive pool) for the provider's lifetime."""
    timeout = aiohttp.ClientTimeout(total=None, connect=options.timeout_secs, sock_read=options.timeout_secs)
    connector = aiohttp.TCPConnector(
        keepalive_timeout=options.keepalive_secs or None, force_close=not options.keepalive_secs
    )
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        yield ElevenLabsTTS(options, http)


async def check(provider: Any) -> None:
    """`patterd check --probe`: the key can read the configured voice."""
    await provider.check()


SPEC = ProviderSpec(
    kind="tts",
    name=NAME,
    options=Options,
    build=build,
    summary="ElevenLabs streaming TTS (HTTP keep-alive per sentence, μ-law 8 kHz, premade voice names)",
    check=check,
    capabilities=Capabilities(streaming=True, needs_network=True, sample_rates=(8000,)),
)
