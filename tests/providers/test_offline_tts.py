"""Tests of tts.offline: both espeak-ng backends give 8 kHz μ-law fast, per sentence, and fail clearly."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from patterd.errors import ProviderError
from patterd.protocols.audio import rms_pcm16, ulaw_to_pcm16
from patterd.providers.offline_tts import SPEC, OfflineTTS, OfflineTTSOptions, split_sentences
from patterd.providers.spec import BuildContext

HAVE_BINARY = shutil.which("espeak-ng") is not None
HAVE_LIBRARY = importlib.util.find_spec("espeakng_loader") is not None
ENGINES = [
    pytest.param("binary", marks=pytest.mark.skipif(not HAVE_BINARY, reason="needs the espeak-ng program")),
    pytest.param("library", marks=pytest.mark.skipif(not HAVE_LIBRARY, reason="needs espeakng-loader")),
]


async def speak_all(tts: OfflineTTS, text: str) -> tuple[bytes, float]:
    start, first = time.perf_counter(), None
    audio = b""
    async for chunk in tts.synthesize(text):
        if first is None:
            first = time.perf_counter() - start
        audio += chunk
    assert first is not None
    return audio, first


@pytest.mark.parametrize("engine", ENGINES)
async def test_speech_comes_out_as_8k_ulaw_quickly(engine: str) -> None:
    async with SPEC.build(OfflineTTSOptions(engine=engine), BuildContext()) as tts:
        assert tts.engine == engine
        audio, first = await speak_all(tts, "Thanks for calling Acme front desk! How can I help?")
    seconds = len(audio) / 8000
    assert 1.5 < seconds < 8, seconds  # a short sentence pair, at 8000 bytes per second
    assert rms_pcm16(ulaw_to_pcm16(audio)) > 500  # real sound, not silence
    assert first < 1.0  # time to first audio (measured ~15-25 ms; generous for slow CI)


@pytest.mark.parametrize("engine", ENGINES)
async def test_rate_changes_duration(engine: str) -> None:
    text = "We are open Monday to Friday."
    async with SPEC.build(OfflineTTSOptions(engine=engine, rate_wpm=120), BuildContext()) as slow:
        slow_audio, _ = await speak_all(slow, text)
    async with SPEC.build(OfflineTTSOptions(engine=engine, rate_wpm=300), BuildContext()) as fast:
        fast_audio, _ = await speak_all(fast, text)
    assert len(slow_audio) > 1.5 * len(fast_audio)


@pytest.mark.parametrize("engine", ENGINES)
async def test_stopping_early_aborts_cleanly(engine: str) -> None:
    async with SPEC.build(OfflineTTSOptions(engine=engine), BuildContext()) as tts:
        async with contextlib.aclosing(tts.synthesize("One. Two. Three. Four. Five. Six.")) as audio:
            async for _ in audio:
                break  # barge-in: the consumer stops listening
        again, _ = await speak_all(tts, "Still working.")  # the engine is usable afterwards
        assert again


@pytest.mark.parametrize("engine", ENGINES)
async def test_unknown_voice_is_a_provider_error(engine: str) -> None:
    async with SPEC.build(OfflineTTSOptions(engine=engine, voice="xx-nope"), BuildContext()) as tts:
        with pytest.raises(ProviderError, match="xx-nope"):
            await speak_all(tts, "hello")


async def test_missing_binary_says_how_to_install() -> None:
    with pytest.raises(ProviderError, match="apt-get install espeak-ng"):
        async with SPEC.build(
            OfflineTTSOptions(engine="binary", binary="espeak-ng-not-here"), BuildContext()
        ):
            pass


def test_sentences_split_for_streaming() -> None:
    assert split_sentences("Hi! We are at 1 Main St. Bye?  ") == ["Hi!", "We are at 1 Main St.", "Bye?"]
    assert split_sentences("   ") == []


@pytest.mark.skipif(not (HAVE_BINARY or HAVE_LIBRARY), reason="needs espeak-ng")
async def test_check_speaks_a_word() -> None:
    assert SPEC.check is not None
    async with SPEC.build(OfflineTTSOptions(), BuildContext()) as tts:
        await SPEC.check(tts)


@pytest.mark.skipif(not HAVE_LIBRARY, reason="needs espeakng-loader")
async def test_library_speech_needs_no_default_executor_thread() -> None:
    # Ten calls speaking at once parked ten default-executor threads on the library's lock, and
    # listings and file writes share that pool (issue 14): syntheses run in the library's own thread.
    async with SPEC.build(OfflineTTSOptions(engine="library"), BuildContext()) as tts:
        loop = asyncio.get_running_loop()
        pool = ThreadPoolExecutor(1)
        loop.set_default_executor(pool)
        release = threading.Event()
        taken = loop.run_in_executor(None, release.wait)  # the default executor's only thread is busy
        speaking = asyncio.ensure_future(
            asyncio.gather(*(speak_all(tts, f"Caller {n}, hello.") for n in range(3)))
        )
        try:
            # a hang guard, not a timing bound: synthesis through the taken pool could not finish
            done, _ = await asyncio.wait([speaking], timeout=60)
        finally:
            release.set()
            await taken
        spoken = await speaking
        assert speaking in done, "the syntheses waited for the loop's default executor"
        assert all(len(audio) > 4000 for audio, _ in spoken)
