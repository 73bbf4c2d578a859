"""`stt.whisper` against the fake OpenAI audio API over loopback: utterance upload, deltas, errors, retries, close."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pydantic import ValidationError

from patterd.errors import ProviderAuthError, ProviderConnectionError, ProviderError
from patterd.providers.kinds import Transcript
from patterd.providers.openai_stt import SPEC, Options, WhisperStream, WhisperSTT, build, check
from patterd.providers.spec import BuildContext
from patterd.testing import Setup, STTSuite, wait_until
from patterd.testing.audio import frames, silent_ulaw, voiced_ulaw
from tests.fakes.openai_audio import FakeOpenAIAudioServer

KEY = "sk-stt-test"
SENTENCE = "I would like to book a table for two."


def options(fake: FakeOpenAIAudioServer, **extra: Any) -> Options:
    return Options(**{"api_key": KEY, "base_url": fake.base_url, "retry_backoff_ms": 10, **extra})


@asynccontextmanager
async def provider(fake: FakeOpenAIAudioServer, **extra: Any) -> AsyncIterator[WhisperSTT]:
    async with build(options(fake, **extra), BuildContext()) as stt:
        yield stt


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAIAudioServer]:
    async with FakeOpenAIAudioServer(KEY) as server:
        yield server


def push(stream: WhisperStream, audio: bytes) -> None:
    for frame in frames(audio):
        stream.push_audio(frame)


class Reader:
    """Collects a stream's transcripts in the background."""

    def __init__(self, stream: WhisperStream) -> None:
        self.got: list[Transcript] = []
        self.error: BaseException | None = None
        self.task = asyncio.create_task(self._run(stream))

    async def _run(self, stream: WhisperStream) -> None:
        try:
            async for transcript in stream:
                self.got.append(transcript)
        except ProviderError as exc:
            self.error = exc

    def finals(self) -> list[Transcript]:
        return [t for t in self.got if t.is_final]

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


UTTERANCE = silent_ulaw(1000) + voiced_ulaw(1200) + silent_ulaw(300)


async def test_one_utterance_uploads_a_wav_and_streams_deltas_as_interims(
    fake: FakeOpenAIAudioServer,
) -> None:
    fake.say(SENTENCE, deltas=["I would", " like to book", " a table for two."])
    async with provider(fake, language="en", prompt="restaurant booking") as stt, stt.stream() as stream:
        reader = Reader(stream)
        push(stream, UTTERANCE)
        assert fake.transcriptions == [], "nothing goes up before the VAD ends the turn"
        await stream.flush()
        await wait_until(lambda: bool(reader.finals()), 5, "the final")
        await reader.stop()
    assert [(t.text, t.is_final, t.end_of_utterance) for t in reader.got] == [
        ("I would", False, False),
        ("I would like to book", False, False),
        ("I would like to book a table for two.", False, False),
        (SENTENCE, True, True),
    ]
    assert reader.got[-1].audio_ms == 2500  # everything pushed when the flush came
    (request,) = fake.transcriptions
    assert request.fields == {
        "model": "gpt-4o-mini-transcribe",
        "response_format": "json",
        "language": "en",
        "prompt": "restaurant booking",
        "stream": "true",
    }
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert (request.file_name, request.file_type) == ("utterance.wav", "audio/wav")
    # 8 kHz 16-bit mono as declared; leading silence trimmed to 300 ms of pre-roll.
    assert (request.wav_rate, request.wav_width, request.wav_channels) == (8000, 2, 1)
    assert request.wav_seconds == pytest.approx(0.3 + 1.2 + 0.3)


async def test_whisper1_answers_json_and_each_flush_is_its_own_utterance(fake: FakeOpenAIAudioServer) -> None:
    fake.say("first")
    fake.say("second")
    async with provider(fake, model="whisper-1", temperature=0.0) as stt, stt.stream() as stream:
        reader = Reader(stream)
        push(stream, voiced_ulaw(500))
        await stream.flush()
        push(stream, silent_ulaw(200) + voiced_ulaw(700))
        await stream.flush()
        await wait_until(lambda: len(reader.finals()) == 2, 5, "two finals")
        await reader.stop()
    assert [(t.text, t.is_final) for t in reader.got] == [("first", True), ("second", True)]
    assert [r.fields.get("stream") for r in fake.transcriptions] == [None, None]
    assert [r.wav_seconds for r in fake.transcriptions] == [pytest.approx(0.5), pytest.approx(0.9)]
    assert fake.transcriptions[0].fields["temperature"] == "0"


async def test_silence_and_clicks_are_never_uploaded(fake: FakeOpenAIAudioServer) -> None:
    async with provider(fake) as stt, stt.stream() as stream:
        reader = Reader(stream)
        push(stream, silent_ulaw(3000))
        await stream.flush()  # no voiced frame
        push(stream, voiced_ulaw(60))
        stream.push_audio(b"")
        await stream.flush()  # voiced but 60 ms in all: under the API's 0.1 s minimum
        await stream.flush()  # nothing at all
        await reader.stop()
    assert fake.transcriptions == [] and reader.got == []


async def test_an_empty_transcript_emits_no_final(fake: FakeOpenAIAudioServer) -> None:
    fake.say("")
    async with provider(fake) as stt, stt.stream() as stream:
        reader = Reader(stream)
        push(stream, voiced_ulaw(400))
        await stream.flush()
        await reader.stop()
    assert len(fake.transcriptions) == 1 and reader.got == []


async def test_auth_error_is_fatal_at_flush_and_ends_the_stream(fake: FakeOpenAIAudioServer) -> None:
    async with build(Options(api_key="sk-wrong-secret", base_url=fake.base_url), BuildContext()) as stt:
        async with stt.stream() as stream:
            reader = Reader(stream)
            push(stream, voiced_ulaw(400))
            with pytest.raises(ProviderAuthError) as caught:
                await stream.flush()
            await wait_until(lambda: reader.task.done(), 5, "the iterator to end")
        with pytest.raises(ProviderAuthError):
            await check(stt)
    assert reader.error is caught.value  # the pipeline's STT loop sees it too, and ends the call
    assert caught.value.provider == "whisper" and "OPENAI_API_KEY" in str(caught.value)
    assert "sk-wrong-secret" not in str(caught.value)


async def test_429_5xx_and_cut_streams_are_retried_then_raised(fake: FakeOpenAIAudioServer) -> None:
    fake.say(SENTENCE)
    fake.fail_next(429)
    fake.fail_next(500)
    async with provider(fake, retry_backoff_ms=40) as stt:
        async with stt.stream() as stream:
            reader = Reader(stream)
            push(stream, voiced_ulaw(400))
            started = time.monotonic()
            await stream.flush()
            assert time.monotonic() - started >= 0.04 + 0.08
            await wait_until(lambda: bool(reader.finals()), 5, "the final after two retries")
            await reader.stop()
        assert reader.finals()[0].text == SENTENCE and stt.retries == 2
        fake.say(SENTENCE)
        fake.drop_next()  # cut after the first delta: the whole file goes again
        async with stt.stream() as stream:
            reader = Reader(stream)
            push(stream, voiced_ulaw(400))
            await stream.flush()
            await wait_until(lambda: bool(reader.finals()), 5, "the final after a cut")
            await reader.stop()
        assert [t.text for t in reader.finals()] == [SENTENCE] and stt.retries == 3
        for _ in range(3):
            fake.fail_next(503)
        async with stt.stream() as stream:
            push(stream, voiced_ulaw(400))
            with pytest.raises(ProviderConnectionError) as caught:
                await stream.flush()
        assert caught.value.retryable and caught.value.provider == "whisper"


async def test_malformed_events_are_logged_counted_and_skipped(fake: FakeOpenAIAudioServer) -> None:
    garbage = b'data: {broken\n\ndata: ["x"]\n\ndata: {"type": "transcript.text.delta", "delta": 7}\n\n'
    fake.say(SENTENCE, raw_before=garbage)
    async with provider(fake) as stt, stt.stream() as stream:
        reader = Reader(stream)
        push(stream, voiced_ulaw(400))
        await stream.flush()
        await wait_until(lambda: bool(reader.finals()), 5, "the final")
        await reader.stop()
    assert stt.malformed == 3
    assert reader.finals()[0].text == SENTENCE


async def test_closing_the_stream_aborts_an_upload_in_flight(fake: FakeOpenAIAudioServer) -> None:
    fake.say(SENTENCE)
    fake.delay_secs = 30.0
    async with provider(fake) as stt:
        async with stt.stream() as stream:
            reader = Reader(stream)
            push(stream, voiced_ulaw(400))
            flushing = asyncio.create_task(stream.flush())
            await wait_until(lambda: fake.active_streams() == 1, 5, "the upload to reach the fake")
        # The call ended: the flush returns, the request is gone, nothing is emitted.
        await asyncio.wait_for(flushing, 2)
        await wait_until(lambda: fake.open_connections() == 0, 5, "the upload's socket to close")
        await reader.stop()
        assert reader.got == []
        stream.push_audio(voiced_ulaw(100))  # a late frame after close is ignored, never raises
    assert fake.transcriptions[0].completed is False


async def test_a_flush_given_up_by_the_pipeline_still_delivers_its_words(fake: FakeOpenAIAudioServer) -> None:
    # The pipeline cancels its endpoint task (and so the flush) when the caller speaks again:
    # the audio already taken for upload must not be lost.
    fake.say("I would like")
    fake.say("a table for two")
    fake.delay_secs = 0.3
    async with provider(fake) as stt, stt.stream() as stream:
        reader = Reader(stream)
        push(stream, voiced_ulaw(500))
        flushing = asyncio.create_task(stream.flush())
        await wait_until(lambda: fake.active_streams() == 1, 5, "the upload to start")
        flushing.cancel()
        push(stream, voiced_ulaw(500))
        await stream.flush()
        await wait_until(lambda: len(reader.finals()) == 2, 5, "both finals")
        await reader.stop()
    assert flushing.cancelled()
    assert [t.text for t in reader.finals()] == ["I would like", "a table for two"]


async def test_own_endpointing_ends_an_utterance_without_a_flush(fake: FakeOpenAIAudioServer) -> None:
    # An agent without `vad:` never flushes: the stream cuts the utterance after endpointing_ms of quiet.
    fake.say(SENTENCE)
    async with provider(fake, endpointing_ms=500) as stt, stt.stream() as stream:
        reader = Reader(stream)
        push(stream, voiced_ulaw(600) + silent_ulaw(400))
        assert stream.buffered_ms == 1000, "a pause shorter than endpointing_ms does not cut"
        push(stream, voiced_ulaw(400) + silent_ulaw(900))
        assert stream.buffered_ms == 300, "cut after 500 ms of quiet; then only the pre-roll is kept"
        await wait_until(lambda: bool(reader.finals()), 5, "the final without a flush")
        await stream.flush()  # the pipeline's own flush finds nothing voiced left to send
        await reader.stop()
    (final,) = reader.finals()
    assert final.text == SENTENCE and final.end_of_utterance
    (request,) = fake.transcriptions
    assert request.wav_seconds == pytest.approx(0.6 + 0.4 + 0.4 + 0.5)
    async with provider(fake, endpointing_ms=0) as stt, stt.stream() as stream:
        push(stream, voiced_ulaw(600) + silent_ulaw(3000))
        assert stream.buffered_ms == 3600, "endpointing_ms 0 leaves the cut to the pipeline's VAD"


async def test_check_and_options(fake: FakeOpenAIAudioServer, monkeypatch: pytest.MonkeyPatch) -> None:
    async with provider(fake) as stt:
        await check(stt)
    assert fake.models_requests == 1
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValidationError, match="OPENAI_API_KEY"):
        Options()
    with pytest.raises(ValidationError):
        Options(api_key="k", temperature=2)
    assert Options(base_url="http://127.0.0.1:8000/v1", model="Systran/faster-whisper-small").api_key is None
    assert SPEC.key == "stt.whisper"


# ------------------------------------------------------------------ the shared contract suite


class Control:
    """STTControl over the fake."""

    def __init__(self, fake: FakeOpenAIAudioServer) -> None:
        self.fake = fake

    def queue_transcript(self, text: str, interim: Sequence[str] = ()) -> None:
        self.fake.say(text)

    def audio_received(self) -> int:
        return self.fake.audio_received()

    def fail_next(self, status: int) -> None:
        self.fake.fail_next(status)

    def drop_next(self) -> None:
        self.fake.drop_next()

    def stall_next(self) -> None:
        self.fake.stall_next()

    def open_connections(self) -> int:
        return self.fake.open_connections()

    def active_streams(self) -> int:
        return self.fake.active_streams()


@asynccontextmanager
async def suite_setup() -> AsyncIterator[Setup[Any, Control]]:
    async with FakeOpenAIAudioServer(KEY) as fake:
        yield Setup(
            provider="whisper",
            key_variable="OPENAI_API_KEY",
            build=lambda: build(options(fake, timeout_secs=1.0), BuildContext()),
            build_bad_key=lambda: build(Options(api_key="sk-bad", base_url=fake.base_url), BuildContext()),
            control=Control(fake),
            check=check,
            features=frozenset({"endpointing"}),
        )


@pytest.mark.parametrize("case", STTSuite.cases())
async def test_contract(case: str) -> None:
    await STTSuite(suite_setup).run(case)
