"""Tests of stt.offline on real espeak-ng speech sent as 8 kHz μ-law frames, the way a call delivers it."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import pytest

from patterd.errors import ProviderError
from patterd.protocols.audio import FRAME_BYTES, silence_ulaw, wav_to_ulaw8k
from patterd.providers.kinds import Transcript
from patterd.providers.offline_stt import SPEC, OfflineSTT, OfflineSTTOptions, phrases_arpa
from patterd.providers.spec import BuildContext

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs the espeak-ng program")

PHRASES = [
    "hi",
    "what are your opening hours",
    "what time do you open",
    "where are you located",
    "i would like to book an appointment",
    "thank you goodbye",
]


def speak(text: str) -> bytes:
    args = ["espeak-ng", "--stdout", "-v", "en-us+m3", "-s", "150", text]
    return wav_to_ulaw8k(subprocess.run(args, capture_output=True, check=True, timeout=30).stdout)


async def recognize(stt: OfflineSTT, audio: bytes, *, flush: bool = True) -> list[Transcript]:
    async with stt.stream() as stream:
        got: list[Transcript] = []

        async def read() -> None:
            async for t in stream:
                got.append(t)

        reader = asyncio.create_task(read())
        for i in range(0, len(audio), FRAME_BYTES):
            stream.push_audio(audio[i : i + FRAME_BYTES])
        if flush:
            await stream.flush()
    await asyncio.wait_for(reader, 30)
    return got


async def test_phrases_recognize_the_question_with_an_endpoint() -> None:
    async with SPEC.build(OfflineSTTOptions(phrases=PHRASES), BuildContext()) as stt:
        got = await recognize(
            stt, silence_ulaw(300) + speak("what are your opening hours") + silence_ulaw(900), flush=False
        )
    finals = [t for t in got if t.is_final]
    assert len(finals) == 1, got  # ended by the recognizer's own endpointing, no flush needed
    assert finals[0].end_of_utterance
    words = finals[0].text.split()
    assert "opening" in words and "what" in words, finals[0].text
    assert any(not t.is_final for t in got)  # interim results came first


async def test_general_model_hears_something_and_flush_finalizes() -> None:
    async with SPEC.build(OfflineSTTOptions(), BuildContext()) as stt:
        # No trailing silence: only flush() can end this utterance.
        got = await recognize(stt, silence_ulaw(300) + speak("where are you located"))
    finals = [t for t in got if t.is_final]
    assert len(finals) == 1 and finals[0].end_of_utterance
    assert finals[0].text  # the open-vocabulary model is weak on synthetic speech; see bench/offline_stt.py


async def test_silence_yields_nothing_and_flush_returns() -> None:
    async with SPEC.build(OfflineSTTOptions(phrases=PHRASES), BuildContext()) as stt:
        assert await recognize(stt, silence_ulaw(1000)) == []


async def test_native_8k_mode_loads_and_decodes() -> None:
    async with SPEC.build(
        OfflineSTTOptions(sample_rate_mode="native_8k", phrases=PHRASES), BuildContext()
    ) as stt:
        assert stt.model.sample_rate == 8000
        got = await recognize(stt, silence_ulaw(300) + speak("hi") + silence_ulaw(200))
    assert [t.end_of_utterance for t in got if t.is_final] == [True]


async def test_missing_model_is_a_provider_error() -> None:
    with pytest.raises(ProviderError, match="does not exist"):
        async with SPEC.build(OfflineSTTOptions(model="/nonexistent/model"), BuildContext()):
            pass


def test_phrases_become_a_bigram_model() -> None:
    arpa = phrases_arpa(["Hi there!", "hi"])
    assert "ngram 1=4" in arpa and "ngram 2=4" in arpa
    assert " hi there" in arpa and "\\end\\" in arpa


async def test_unknown_phrase_words_are_reported() -> None:
    async with SPEC.build(OfflineSTTOptions(phrases=["hello zzqxv"]), BuildContext()) as stt:
        assert stt.model.unknown_words == ("zzqxv",)
