"""The OpenAI audio fake is faithful: the official `openai` SDK speaks to it, and it refuses what the API refuses."""

from __future__ import annotations

import io
import wave
from collections.abc import AsyncIterator

import openai
import pytest

from tests.fakes.openai_audio import PCM_RATE, FakeOpenAIAudioServer

KEY = "sk-audio-test"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAIAudioServer]:
    async with FakeOpenAIAudioServer(KEY) as server:
        yield server


def client(fake: FakeOpenAIAudioServer, key: str = KEY) -> openai.AsyncOpenAI:
    # max_retries=0: the SDK's own retries would hide the one-shot failures under test.
    return openai.AsyncOpenAI(api_key=key, base_url=fake.base_url, max_retries=0)


def wav(seconds: float, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x10\x00" * int(rate * seconds))
    return out.getvalue()


async def test_sdk_streams_speech_as_pcm(fake: FakeOpenAIAudioServer) -> None:
    text = "Hello there, how are you?"
    async with client(fake) as sdk:
        async with sdk.audio.speech.with_streaming_response.create(
            model="gpt-4o-mini-tts",
            voice="coral",
            input=text,
            response_format="pcm",
            instructions="Speak warmly.",
            speed=1.0,
        ) as response:
            assert response.status_code == 200
            chunks = [chunk async for chunk in response.iter_bytes()]
    audio = b"".join(chunks)
    # 24 kHz 16-bit mono, proportional to the text: ms_per_char × characters.
    assert len(audio) == int(PCM_RATE * fake.ms_per_char / 1000) * len(text) * 2
    (request,) = fake.speech
    assert request.body == {
        "model": "gpt-4o-mini-tts",
        "voice": "coral",
        "input": text,
        "response_format": "pcm",
        "instructions": "Speak warmly.",
        "speed": 1.0,
    }
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.completed and fake.texts_received() == [text]


async def test_sdk_speech_speed_and_wav(fake: FakeOpenAIAudioServer) -> None:
    async with client(fake) as sdk:
        response = await sdk.audio.speech.create(
            model="tts-1", voice="alloy", input="Two times faster", response_format="wav", speed=2.0
        )
        data = await response.aread()
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (PCM_RATE, 2, 1)
        assert w.getnframes() == int(PCM_RATE * fake.ms_per_char / 1000 / 2.0) * len("Two times faster")


async def test_sdk_refusals_match_the_api(fake: FakeOpenAIAudioServer) -> None:
    async with client(fake) as sdk:
        with pytest.raises(openai.BadRequestError, match="Instructions are not supported"):
            await sdk.audio.speech.create(model="tts-1", voice="alloy", input="hi", instructions="calm")
        with pytest.raises(openai.BadRequestError, match="voice"):
            await sdk.audio.speech.create(model="tts-1", voice="rachel", input="hi", response_format="pcm")
        with pytest.raises(openai.BadRequestError, match="4096"):
            await sdk.audio.speech.create(
                model="tts-1", voice="alloy", input="a" * 4097, response_format="pcm"
            )
        with pytest.raises(openai.BadRequestError, match="too short"):
            await sdk.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav(0.05), "audio/wav"))
        with pytest.raises(openai.BadRequestError, match="not compatible"):
            await sdk.audio.transcriptions.create(
                model="gpt-4o-mini-transcribe", file=("a.wav", wav(1), "audio/wav"), response_format="text"
            )
        with pytest.raises(openai.BadRequestError, match="Invalid file format"):
            await sdk.audio.transcriptions.create(model="whisper-1", file=("a.txt", b"hello", "text/plain"))
        with pytest.raises(openai.BadRequestError, match="corrupted"):
            await sdk.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"RIFF1234", "audio/wav"))
    async with client(fake, "sk-wrong") as sdk:
        with pytest.raises(openai.AuthenticationError, match="Incorrect API key"):
            await sdk.models.list()
    assert fake.speech == [] and fake.transcriptions == []


async def test_sdk_sees_openai_error_statuses(fake: FakeOpenAIAudioServer) -> None:
    async with client(fake) as sdk:
        fake.fail_next(429)
        with pytest.raises(openai.RateLimitError):
            await sdk.audio.speech.create(model="tts-1", voice="alloy", input="hi", response_format="pcm")
        fake.fail_next(500)
        with pytest.raises(openai.InternalServerError):
            await sdk.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav(1), "audio/wav"))
        fake.fail_next(403)
        with pytest.raises(openai.PermissionDeniedError):
            await sdk.models.list()
        models = await sdk.models.list()
    assert {"gpt-4o-mini-tts", "whisper-1", "gpt-4o-mini-transcribe"} <= {m.id for m in models.data}


async def test_sdk_transcribes_whisper_json(fake: FakeOpenAIAudioServer) -> None:
    fake.say("I would like a table for two.")
    async with client(fake) as sdk:
        # whisper-1 ignores stream=true (API reference): plain JSON either way.
        result = await sdk.audio.transcriptions.create(
            model="whisper-1", file=("utterance.wav", wav(1.5), "audio/wav"), language="en", temperature=0
        )
    assert result.text == "I would like a table for two."
    (request,) = fake.transcriptions
    assert request.fields == {"model": "whisper-1", "language": "en", "temperature": "0"}
    assert (request.file_name, request.file_type) == ("utterance.wav", "audio/wav")
    assert (request.wav_rate, request.wav_width, request.wav_channels, request.wav_seconds) == (
        8000,
        2,
        1,
        1.5,
    )


async def test_sdk_streams_transcription_deltas(fake: FakeOpenAIAudioServer) -> None:
    fake.say("Book a table for eight", deltas=["Book", " a table", " for eight"])
    async with client(fake) as sdk:
        stream = await sdk.audio.transcriptions.create(
            model="gpt-4o-mini-transcribe", file=("u.wav", wav(1), "audio/wav"), stream=True
        )
        events = [event async for event in stream]
    assert [e.type for e in events] == ["transcript.text.delta"] * 3 + ["transcript.text.done"]
    assert "".join(e.delta for e in events[:3]) == "Book a table for eight"  # type: ignore[union-attr]
    done = events[-1]
    assert done.text == "Book a table for eight"  # type: ignore[union-attr]
    assert done.usage is not None and done.usage.input_tokens > 0  # type: ignore[union-attr]
    assert fake.transcriptions[0].fields["stream"] == "true"
