"""`tts.openai` against the fake OpenAI audio API over loopback: streaming μ-law, barge-in, errors, retries, probe."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pydantic import ValidationError

from patterd.errors import ProviderAuthError, ProviderConnectionError, ProviderError
from patterd.protocols.audio import Pcm24ToUlaw
from patterd.providers.openai_tts import SPEC, OpenAITTS, Options, build, check
from patterd.providers.spec import BuildContext
from patterd.testing import Setup, TTSSuite, wait_until
from tests.fakes.openai_audio import PCM_RATE, FakeOpenAIAudioServer, speech_pcm

KEY = "sk-tts-test"
TEXT = "Thanks for calling the bakery. How can I help?"


def options(fake: FakeOpenAIAudioServer, **extra: Any) -> Options:
    return Options(**{"api_key": KEY, "base_url": fake.base_url, "retry_backoff_ms": 10, **extra})


@asynccontextmanager
async def provider(fake: FakeOpenAIAudioServer, **extra: Any) -> AsyncIterator[OpenAITTS]:
    async with build(options(fake, **extra), BuildContext()) as tts:
        yield tts


async def speak(tts: OpenAITTS, text: str = TEXT) -> list[bytes]:
    return [chunk async for chunk in tts.synthesize(text)]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAIAudioServer]:
    async with FakeOpenAIAudioServer(KEY) as server:
        yield server


async def test_streams_8k_ulaw_transcoded_from_24k_pcm(fake: FakeOpenAIAudioServer) -> None:
    async with provider(fake, voice="coral", instructions="Warm and brief.", speed=1.5) as tts:
        chunks = await speak(tts)
    (request,) = fake.speech
    assert request.body == {
        "model": "gpt-4o-mini-tts",
        "input": TEXT,
        "voice": "coral",
        "response_format": "pcm",
        "speed": 1.5,
        "instructions": "Warm and brief.",
    }
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert len(chunks) > 3, "audio must come as the server streams it"
    # The fake cut its PCM into 4801-byte chunks (mid-sample): the provider's output is exactly the
    # whole 24 kHz answer transcoded in one piece (odd bytes carried, filter state kept).
    whole = Pcm24ToUlaw()
    pcm = speech_pcm(TEXT, fake.ms_per_char, 1.5)
    assert b"".join(chunks) == whole.process(pcm) + whole.flush()
    samples_24k = len(pcm) // 2
    assert abs(sum(map(len, chunks)) - samples_24k / 3) <= 16  # + the filter's 2 ms tail at 8 kHz


async def test_tts1_sends_no_instructions_and_long_text_goes_in_pieces(fake: FakeOpenAIAudioServer) -> None:
    text = "This sentence repeats for a while. " * 150  # 5250 characters > the API's 4096
    fake.ms_per_char, fake.pace = 5.0, 1000.0  # 26 s of audio, streamed in a blink
    async with provider(fake, model="tts-1-hd") as tts:
        audio = b"".join(await speak(tts, text))
    assert [len(r.body["input"]) <= 4096 for r in fake.speech] == [True, True]
    assert " ".join(fake.texts_received()) == text.strip()
    assert all("instructions" not in r.body and r.body["model"] == "tts-1-hd" for r in fake.speech)
    expected = sum(len(speech_pcm(t, fake.ms_per_char, 1.0)) // 2 for t in fake.texts_received()) / 3
    assert abs(len(audio) - expected) <= 32


async def test_barge_in_closes_the_http_stream(fake: FakeOpenAIAudioServer) -> None:
    fake.pace = 20.0  # the long answer is still streaming when the caller cuts in
    async with provider(fake) as tts:
        stream = tts.synthesize(TEXT * 20)
        first = await anext(stream)
        assert first
        started = time.monotonic()
        await stream.aclose()
        assert time.monotonic() - started < 1.0
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
        await wait_until(lambda: fake.active_streams() == 0, 5, "the fake to see the request go")
        (request,) = fake.speech
        assert request.cancelled and not request.completed
        assert request.bytes_sent < len(speech_pcm(TEXT * 20, fake.ms_per_char, 1.0))
        assert await speak(tts)  # the provider still works
    await wait_until(lambda: fake.open_connections() == 0, 5, "every socket closed")


async def test_auth_error_is_fatal_names_the_variable_and_hides_the_key(fake: FakeOpenAIAudioServer) -> None:
    async with build(Options(api_key="sk-wrong-secret", base_url=fake.base_url), BuildContext()) as tts:
        with pytest.raises(ProviderAuthError) as caught:
            await speak(tts)
        with pytest.raises(ProviderAuthError):
            await check(tts)
    assert caught.value.provider == "openai" and not caught.value.retryable
    assert "OPENAI_API_KEY" in str(caught.value) and "Incorrect API key" in str(caught.value)
    assert "sk-wrong-secret" not in str(caught.value)
    fake.fail_next(403)
    async with provider(fake) as tts:
        with pytest.raises(ProviderAuthError):
            await speak(tts)
    assert fake.speech == []


async def test_429_and_5xx_are_retried_with_backoff_then_raised(fake: FakeOpenAIAudioServer) -> None:
    async with provider(fake, retry_backoff_ms=50, max_retries=2) as tts:
        fake.fail_next(429)
        fake.fail_next(503)
        started = time.monotonic()
        assert await speak(tts)
        assert time.monotonic() - started >= 0.05 + 0.10  # 50 ms, then 100 ms
        assert tts.retries == 2
        for status in (500, 500, 500):
            fake.fail_next(status)
        with pytest.raises(ProviderConnectionError) as caught:
            await speak(tts)
        assert caught.value.retryable and caught.value.provider == "openai"
        assert "The server had an error" in str(caught.value)
    fake.fail_next(400)
    async with provider(fake) as tts:
        with pytest.raises(ProviderError) as refused:
            await speak(tts)
    assert not refused.value.retryable and tts.retries == 0


async def test_a_stream_cut_after_audio_started_is_retryable_not_resent(fake: FakeOpenAIAudioServer) -> None:
    fake.drop_next()
    async with provider(fake) as tts:
        got: list[bytes] = []
        with pytest.raises(ProviderConnectionError):
            async for chunk in tts.synthesize(TEXT):
                got.append(chunk)
        assert len(fake.speech) == 1, "audio had been played: the text must not be spoken twice"
        assert await speak(tts)


async def test_audio_that_is_not_raw_pcm_is_refused_not_played(fake: FakeOpenAIAudioServer) -> None:
    fake.speech_content_type = "audio/mpeg"  # a compatible server that ignored response_format
    async with provider(fake) as tts:
        with pytest.raises(ProviderError, match="audio/mpeg") as caught:
            await speak(tts)
    assert not caught.value.retryable and len(fake.speech) == 1


async def test_check_probes_models(fake: FakeOpenAIAudioServer) -> None:
    async with provider(fake) as tts:
        await check(tts)
    assert fake.models_requests == 1 and fake.speech == []


def test_options_refuse_what_the_api_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValidationError, match="OPENAI_API_KEY"):
        Options()
    with pytest.raises(ValidationError, match="gpt-4o-mini-tts only"):
        Options(api_key="k", model="tts-1", instructions="calm")
    with pytest.raises(ValidationError, match="rachel"):
        Options(api_key="k", voice="rachel")
    with pytest.raises(ValidationError):
        Options(api_key="k", speed=5)
    # A compatible server has voices of its own and may need no key.
    assert Options(base_url="http://127.0.0.1:8880/v1", voice="af_bella").voice == "af_bella"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    opts = Options()
    assert opts.api_key is not None and opts.api_key.get_secret_value() == "sk-env"
    assert SPEC.key == "tts.openai"


# ------------------------------------------------------------------ the shared contract suite


class Control:
    """TTSControl over the fake (which counts its own sockets and streams)."""

    def __init__(self, fake: FakeOpenAIAudioServer) -> None:
        self.fake = fake

    def texts_received(self) -> list[str]:
        return self.fake.texts_received()

    def streams_completed(self) -> int:
        return self.fake.streams_completed()

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
    async with FakeOpenAIAudioServer(KEY, ms_per_char=30.0, pace=50.0) as fake:
        yield Setup(
            provider="openai",
            key_variable="OPENAI_API_KEY",
            build=lambda: build(options(fake, timeout_secs=1.0), BuildContext()),
            build_bad_key=lambda: build(Options(api_key="sk-bad", base_url=fake.base_url), BuildContext()),
            control=Control(fake),
            check=check,
        )


@pytest.mark.parametrize("case", TTSSuite.cases())
async def test_contract(case: str) -> None:
    await TTSSuite(suite_setup).run(case)


def test_sample_rate_is_declared() -> None:
    assert SPEC.capabilities.sample_rates == (PCM_RATE,)
