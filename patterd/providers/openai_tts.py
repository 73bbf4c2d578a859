"""`tts.openai`: OpenAI text to speech (`POST /audio/speech`), streamed 24 kHz PCM transcoded to 8 kHz μ-law.

Docs followed: platform.openai.com API reference "Create speech" (models gpt-4o-mini-tts, tts-1,
tts-1-hd; voices; `instructions` only for gpt-4o-mini-tts; `speed` 0.25-4; `response_format: pcm`
= raw 24 kHz 16-bit LE mono), "List models" for `check`, and the error codes guide. The wire
format lives in `patterd.protocols.openai_audio`; errors map as for `llm.openai`.

The answer's body is read as it arrives and transcoded chunk by chunk (`Pcm24ToUlaw`, the
zero-hold FIR resampler; a chunk cut mid-sample keeps its odd byte for the next). Closing the
generator (barge-in) closes the HTTP response, which aborts the synthesis on the server.
Usage: the pipeline reports `characters` under `openai` (price in `patterd.cost`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from pydantic import Field, SecretStr, model_validator

from patterd.errors import ProviderError, ProviderProtocolError
from patterd.protocols import openai_audio as wire
from patterd.protocols.audio import Pcm24ToUlaw
from patterd.providers.openai_http import (
    KEY_VARIABLE,
    OPENAI_HOST,
    OPENAI_URL,
    auth_headers,
    client_timeout,
    connection_error,
    probe,
    status_error,
)
from patterd.providers.spec import BuildContext, Capabilities, ProviderOptions, ProviderSpec, env_secret

NAME = "openai"

log = structlog.get_logger(__name__)


class Options(ProviderOptions):
    """Options of `tts.openai`."""

    api_key: SecretStr | None = Field(default_factory=env_secret(KEY_VARIABLE))
    base_url: str = OPENAI_URL
    model: str = Field(default="gpt-4o-mini-tts", description="gpt-4o-mini-tts, tts-1 or tts-1-hd")
    voice: str = Field(default="alloy", description=", ".join(wire.VOICES))
    speed: float = Field(default=1.0, ge=wire.MIN_SPEED, le=wire.MAX_SPEED)
    instructions: str | None = Field(default=None, description="voice direction; gpt-4o-mini-tts only")
    timeout_secs: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10, description="429/5xx retries before any audio")
    retry_backoff_ms: int = Field(default=250, ge=0, le=60_000)

    @model_validator(mode="after")
    def _check(self) -> Options:
        official = urlsplit(self.base_url).hostname == OPENAI_HOST
        if self.api_key is None and official:
            raise ValueError(
                f"tts.openai needs api_key (or the {KEY_VARIABLE} environment variable) for base_url {self.base_url}"
            )
        # Compatible servers have voices of their own; OpenAI's are a fixed list.
        if official and self.voice not in wire.VOICES:
            raise ValueError(f"tts.openai voice {self.voice!r} is not one of {', '.join(wire.VOICES)}")
        if self.instructions and not wire.supports_instructions(self.model):
            raise ValueError(
                f"tts.openai instructions do not work with model {self.model!r} (gpt-4o-mini-tts only)"
            )
        return self


class OpenAITTS:
    """A live `tts.openai`: one HTTP session, one streamed `POST /audio/speech` per piece of text."""

    name = NAME

    def __init__(self, options: Options, http: aiohttp.ClientSession) -> None:
        self.options = options
        self._http = http
        self._base = options.base_url.rstrip("/")
        self.retries = 0  # requests retried after a 429/5xx/network error (all syntheses)

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        """Speak `text`: 8 kHz μ-law as the server streams it; texts over 4096 characters go in pieces."""
        for piece in wire.split_input(text):
            transcoder = Pcm24ToUlaw()
            # aclosing: a barge-in that closes us closes the request now, not when the GC finds it.
            async with contextlib.aclosing(self._speech(piece)) as pcm_chunks:
                async for pcm in pcm_chunks:
                    ulaw = transcoder.process(pcm)
                    if ulaw:
                        yield ulaw
            tail = transcoder.flush()
            if tail:
                yield tail

    async def _speech(self, text: str) -> AsyncGenerator[bytes, None]:
        """24 kHz PCM of one request, retried with backoff while nothing has been yielded."""
        o = self.options
        body = wire.speech_request(o.model, text, o.voice, speed=o.speed, instructions=o.instructions)
        url = f"{self._base}/audio/speech"
        headers = auth_headers(o.api_key)
        attempt = 0
        while True:
            started = False
            try:
                async with self._http.post(url, json=body, headers=headers) as response:
                    if response.status != 200:
                        raise status_error(response.status, await response.read(), url, NAME)
                    if not wire.is_raw_pcm(response.headers.get("Content-Type", "")):
                        # A compatible server that ignored response_format: its bytes are not 24 kHz PCM,
                        # and transcoding them would play noise to the caller.
                        raise ProviderProtocolError(
                            f"{url}: answered {response.headers.get('Content-Type')!r}, not the raw PCM asked for",
                            provider=NAME,
                        )
                    try:
                        async for data in response.content.iter_any():
                            started = True
                            yield data
                    finally:
                        # Not read to the end (barge-in closed us, or an error): drop the connection so
                        # the server stops synthesizing, instead of draining or reusing it.
                        if not response.content.at_eof():
                            response.close()
                return
            except TimeoutError as exc:
                # Not retried here: the caller already waited timeout_secs; the pipeline decides.
                raise connection_error(url, exc, NAME) from exc
            except aiohttp.ClientError as exc:
                error: ProviderError = connection_error(url, exc, NAME)
                cause: BaseException = exc
            except ProviderError as exc:
                error, cause = exc, exc
            if started or not error.retryable or attempt >= o.max_retries:
                raise error from cause
            attempt += 1
            self.retries += 1
            delay = o.retry_backoff_ms / 1000 * 2 ** (attempt - 1)
            log.warning(
                "openai speech failed; retrying", error=str(error)[:300], attempt=attempt, delay_secs=delay
            )
            await asyncio.sleep(delay)

    async def check(self) -> None:
        """Probe the key and the server: `GET {base_url}/models`."""
        await probe(self._http, self._base, self.options.api_key, NAME)


@asynccontextmanager
async def build(options: Options, ctx: BuildContext) -> AsyncIterator[OpenAITTS]:
    """One aiohttp session for the provider's lifetime."""
    async with aiohttp.ClientSession(timeout=client_timeout(options.timeout_secs)) as http:
        yield OpenAITTS(options, http)


async def check(provider: Any) -> None:
    """`patterd check --probe`: list models with the configured key."""
    await provider.check()


SPEC = ProviderSpec(
    kind="tts",
    name=NAME,
    options=Options,
    build=build,
    summary="OpenAI text to speech (gpt-4o-mini-tts, tts-1, tts-1-hd), streamed PCM transcoded to 8 kHz μ-law",
    check=check,
    capabilities=Capabilities(streaming=True, needs_network=True, sample_rates=(wire.PCM_RATE,)),
)
