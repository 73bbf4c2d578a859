"""`stt.whisper`: OpenAI transcription per utterance (`POST /audio/transcriptions`), deltas streamed back as interims.

Docs followed: platform.openai.com API reference "Create transcription" (multipart `file`,
`model`, `language`, `prompt`, `temperature`, `response_format=json`, `stream`), the
Speech-to-Text guide's "Streaming" section (`transcript.text.delta` / `.done` events for
gpt-4o-*-transcribe; whisper-1 ignores `stream`), "List models" for `check`. Wire format:
`patterd.protocols.openai_audio`; errors map as for `llm.openai` / `tts.openai`.

Mode: the pipeline's VAD cuts the utterance. Caller audio is kept (with 300 ms of pre-roll
before the first voiced frame) until `flush()`, which uploads it as an 8 kHz 16-bit WAV and
returns once the final transcript is queued; with `stream` (gpt-4o models) the text deltas come
as interim transcripts on the way. Audio without one voiced frame, or under the API's 0.1 s, is
never uploaded (no cost, and no "thank you" hallucinated from silence). Without a `vad:` the
pipeline never flushes, so the stream also ends an utterance itself after `endpointing_ms` of
unvoiced audio (energy, counted in audio time) and sends its final with end_of_utterance; with
a VAD, whichever comes first wins and the other finds nothing left to send. An upload the pipeline
stops waiting for (the caller went on talking) still delivers its words; only closing the
stream cancels it.

Why not the Realtime transcription websocket (`/realtime?intent=transcription`): its deltas
also begin only after the audio buffer is committed (by its server VAD or by us at the turn's
end), so it gives no words while the caller speaks either; what it saves is the upload of an
utterance already streamed (8 KB/s of μ-law: milliseconds). It would add a second session
protocol for the same models, while this mode works for every model including whisper-1 and
for OpenAI-compatible servers (faster-whisper, vLLM).
Usage: the pipeline reports `audio_seconds` under `whisper` (price in `patterd.cost`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from pydantic import Field, SecretStr, model_validator

from patterd.errors import ProviderError, ProviderProtocolError
from patterd.protocols import openai_audio as wire
from patterd.protocols.audio import ULAW_RATE, is_voiced
from patterd.providers.kinds import Transcript
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

NAME = "whisper"
PREROLL_MS = 300  # audio kept from before the first voiced frame: the start of a soft first word

log = structlog.get_logger(__name__)


class Options(ProviderOptions):
    """Options of `stt.whisper`."""

    api_key: SecretStr | None = Field(default_factory=env_secret(KEY_VARIABLE))
    base_url: str = OPENAI_URL
    model: str = Field(
        default="gpt-4o-mini-transcribe", description="gpt-4o-mini-transcribe, gpt-4o-transcribe or whisper-1"
    )
    language: str | None = Field(default=None, description="ISO-639-1 code, e.g. en; default: detected")
    prompt: str | None = Field(default=None, description="vocabulary / context hint for the model")
    temperature: float | None = Field(default=None, ge=0, le=1)
    stream: bool = Field(
        default=True, description="ask for text deltas (gpt-4o models) as interim transcripts"
    )
    endpointing_ms: int = Field(
        default=800,
        ge=0,
        le=10_000,
        description="unvoiced audio that ends an utterance without a flush, for agents without vad: (0: off)",
    )
    max_utterance_secs: float = Field(
        default=120.0, gt=0, le=1500, description="longer: the oldest audio is dropped"
    )
    timeout_secs: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10, description="429/5xx/network retries of one upload")
    retry_backoff_ms: int = Field(default=250, ge=0, le=60_000)

    @model_validator(mode="after")
    def _key_when_needed(self) -> Options:
        if self.api_key is None and urlsplit(self.base_url).hostname == OPENAI_HOST:
            raise ValueError(
                f"stt.whisper needs api_key (or the {KEY_VARIABLE} environment variable) for base_url {self.base_url}"
            )
        return self


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark an unawaited upload's exception as seen (it was queued for the reader already)."""
    if not task.cancelled():
        task.exception()


class _Failed:
    """Queue marker: the stream failed with `error` (the iterator raises it)."""

    def __init__(self, error: ProviderError) -> None:
        self.error = error


class WhisperStream:
    """One call's recognition: audio buffered per utterance, transcribed at each `flush()`."""

    def __init__(self, owner: WhisperSTT) -> None:
        self._owner = owner
        self._audio = bytearray()
        self._voiced = False
        self._audio_ms = 0.0  # all audio pushed to this stream
        self._queue: asyncio.Queue[Transcript | _Failed | None] = asyncio.Queue()
        self._lock = asyncio.Lock()  # one upload at a time: transcripts stay in utterance order
        self._uploads: set[asyncio.Task[None]] = set()
        self._closed = False
        opts = owner.options
        self._max_bytes = int(opts.max_utterance_secs * ULAW_RATE)
        self._preroll_bytes = PREROLL_MS * ULAW_RATE // 1000
        self._endpoint_bytes = opts.endpointing_ms * ULAW_RATE // 1000
        self._quiet_bytes = 0  # unvoiced audio since the utterance's last voiced frame

    def push_audio(self, ulaw: bytes) -> None:
        """Caller audio (8 kHz μ-law), kept for the next flush (or our own endpointing)."""
        if self._closed:
            return
        self._audio_ms += len(ulaw) * 1000 / ULAW_RATE
        self._audio += ulaw
        voiced = is_voiced(ulaw)
        if not self._voiced:
            self._voiced = voiced
            if not voiced and len(self._audio) > self._preroll_bytes:
                del self._audio[: len(self._audio) - self._preroll_bytes]
            return
        if len(self._audio) > self._max_bytes:
            del self._audio[: len(self._audio) - self._max_bytes]
        self._quiet_bytes = 0 if voiced else self._quiet_bytes + len(ulaw)
        if self._endpoint_bytes and self._quiet_bytes >= self._endpoint_bytes:
            # Counted in audio, not on a clock: the carrier paces frames in real time.
            upload = self._start_upload()
            if upload is not None:
                upload.add_done_callback(_retrieve)  # a failure reaches the reader as _Failed
                self._quiet_bytes = 0

    @property
    def buffered_ms(self) -> float:
        """Audio held for the next upload (what a flush would send now)."""
        return len(self._audio) * 1000 / ULAW_RATE

    async def flush(self) -> None:
        """Transcribe the utterance heard since the last flush; returns when its final is queued."""
        upload = self._start_upload()
        if upload is None:
            pending = list(self._uploads)  # an utterance our endpointing already sent: wait for it too
            if pending:
                await asyncio.wait(pending)
            return
        try:
            # Shielded: when the pipeline stops waiting (the caller spoke again before the turn was
            # committed) the words already taken from the buffer must still arrive, as a final.
            # Only closing the stream cancels an upload.
            await asyncio.shield(upload)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._closed and upload.cancelled() and (current is None or not current.cancelling()):
                return  # the stream was closed under the upload: nothing more to wait for
            raise

    def _start_upload(self) -> asyncio.Task[None] | None:
        """Take the buffered utterance and start transcribing it (None: nothing worth sending)."""
        audio, voiced = bytes(self._audio), self._voiced
        self._audio.clear()
        self._voiced = False
        self._quiet_bytes = 0
        if self._closed or not voiced or len(audio) * 1000 < wire.MIN_AUDIO_MS * ULAW_RATE:
            return None  # nothing said: nothing to pay for, no empty final
        upload = asyncio.create_task(self._transcribe(audio, self._audio_ms), name="whisper-upload")
        self._uploads.add(upload)
        upload.add_done_callback(self._uploads.discard)
        return upload

    async def _transcribe(self, audio: bytes, audio_ms: float) -> None:
        async with self._lock:
            try:
                text = await self._owner.transcribe(audio, lambda partial: self._interim(partial, audio_ms))
            except ProviderError as exc:
                self._queue.put_nowait(_Failed(exc))
                raise
            text = text.strip()
            if text:
                self._queue.put_nowait(
                    Transcript(text, is_final=True, end_of_utterance=True, audio_ms=audio_ms)
                )

    def _interim(self, text: str, audio_ms: float) -> None:
        if text.strip():
            self._queue.put_nowait(Transcript(text.strip(), is_final=False, audio_ms=audio_ms))

    async def __anext__(self) -> Transcript:
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # stay ended for any later reader
            raise StopAsyncIteration
        if isinstance(item, _Failed):
            raise item.error
        return item

    def __aiter__(self) -> WhisperStream:
        return self

    async def close(self) -> None:
        """Stop: cancel an upload in flight (its request is aborted) and end the iterator."""
        self._closed = True
        for task in list(self._uploads):
            task.cancel()
        for task in list(self._uploads):
            with contextlib.suppress(asyncio.CancelledError, ProviderError):
                await task
        self._queue.put_nowait(None)


class WhisperSTT:
    """A live `stt.whisper`: one HTTP session; one upload per utterance."""

    name = NAME

    def __init__(self, options: Options, http: aiohttp.ClientSession) -> None:
        self.options = options
        self._http = http
        self._base = options.base_url.rstrip("/")
        self.malformed = 0  # streamed events that could not be read (logged, skipped)
        self.retries = 0  # uploads retried after a 429/5xx/network error

    @asynccontextmanager
    async def stream(self) -> AsyncIterator[WhisperStream]:
        """A recognition stream for one call."""
        stream = WhisperStream(self)
        try:
            yield stream
        finally:
            await stream.close()

    async def transcribe(self, ulaw: bytes, on_interim: Any) -> str:
        """The transcript of one utterance; `on_interim(text so far)` for each streamed delta.

        Retried with backoff on 429/5xx/network errors (the whole file is re-sent: nothing of it
        was final yet); 401/403 and other refusals raise at once.
        """
        o = self.options
        url = f"{self._base}/audio/transcriptions"
        fields = wire.transcription_fields(
            o.model, language=o.language, prompt=o.prompt, temperature=o.temperature, stream=o.stream
        )
        wav = wire.utterance_wav(ulaw)
        attempt = 0
        while True:
            form = aiohttp.FormData()
            for name, value in fields:
                form.add_field(name, value)
            form.add_field("file", wav, filename=wire.UPLOAD_NAME, content_type=wire.UPLOAD_TYPE)
            try:
                return await self._request(url, form, on_interim)
            except TimeoutError as exc:
                # Not retried here: the caller already waited timeout_secs; the pipeline decides.
                raise connection_error(url, exc, NAME) from exc
            except aiohttp.ClientError as exc:
                error: ProviderError = connection_error(url, exc, NAME)
                cause: BaseException = exc
            except ProviderError as exc:
                error, cause = exc, exc
            if not error.retryable or attempt >= o.max_retries:
                raise error from cause
            attempt += 1
            self.retries += 1
            delay = o.retry_backoff_ms / 1000 * 2 ** (attempt - 1)
            log.warning(
                "transcription failed; retrying", error=str(error)[:300], attempt=attempt, delay_secs=delay
            )
            await asyncio.sleep(delay)

    async def _request(self, url: str, form: aiohttp.FormData, on_interim: Any) -> str:
        async with self._http.post(url, data=form, headers=auth_headers(self.options.api_key)) as response:
            if response.status != 200:
                raise status_error(response.status, await response.read(), url, NAME)
            if not response.content_type.startswith("text/event-stream"):
                try:
                    return wire.transcription_json(await response.read()).text
                except wire.AudioProtocolError as exc:
                    raise ProviderProtocolError(f"{url}: {exc}", provider=NAME) from exc
            decoder = wire.TranscriptionDecoder()
            text: list[str] = []
            try:
                async for data in response.content.iter_any():
                    for event in decoder.feed(data):
                        done = self._event(event, text, on_interim, url)
                        if done is not None:
                            return done
                for event in decoder.close():
                    done = self._event(event, text, on_interim, url)
                    if done is not None:
                        return done
            except wire.AudioProtocolError as exc:
                raise ProviderProtocolError(f"{url}: {exc}", provider=NAME) from exc
            # The body ended without transcript.text.done: a cut connection, worth one more try.
            raise connection_error(
                url, ConnectionError("the transcription stream ended before its final text"), NAME
            )

    def _event(
        self, event: wire.TranscriptionEvent, text: list[str], on_interim: Any, url: str
    ) -> str | None:
        """Handle one streamed event; returns the final text at `transcript.text.done`."""
        if isinstance(event, wire.TextDelta):
            text.append(event.delta)
            on_interim("".join(text))
        elif isinstance(event, wire.TextDone):
            return event.text
        elif isinstance(event, wire.StreamError):
            retryable = event.type in {"server_error", "rate_limit_exceeded"} or event.code in {
                "server_error",
                "rate_limit_exceeded",
            }
            raise ProviderError(
                f"{url}: transcription stream error: {event.message}", provider=NAME, retryable=retryable
            )
        else:
            self.malformed += 1
            log.warning("transcription event skipped", error=event.why[:200], count=self.malformed)
        return None

    async def check(self) -> None:
        """Probe the key and the server: `GET {base_url}/models`."""
        await probe(self._http, self._base, self.options.api_key, NAME)


@asynccontextmanager
async def build(options: Options, ctx: BuildContext) -> AsyncIterator[WhisperSTT]:
    """One aiohttp session for the provider's lifetime."""
    async with aiohttp.ClientSession(timeout=client_timeout(options.timeout_secs)) as http:
        yield WhisperSTT(options, http)


async def check(provider: Any) -> None:
    """`patterd check --probe`: list models with the configured key."""
    await provider.check()


SPEC = ProviderSpec(
    kind="stt",
    name=NAME,
    options=Options,
    build=build,
    summary="OpenAI transcription (gpt-4o-mini-transcribe, gpt-4o-transcribe, whisper-1), one upload per utterance",
    check=check,
    capabilities=Capabilities(
        streaming=False,
        interim_results=True,
        needs_network=True,
        sample_rates=(ULAW_RATE,),
        notes="utterances are cut by the pipeline's VAD or endpointing_ms; interims arrive after the cut",
    ),
)
