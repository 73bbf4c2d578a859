"""Tests of stt.offline on real espeak-ng speech sent as 8 kHz μ-law frames, the way a call delivers it."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pocketsphinx
import pytest

from patterd.errors import ProviderError
from patterd.protocols.audio import FRAME_BYTES, silence_ulaw, wav_to_ulaw8k
from patterd.providers.kinds import STTStream, Transcript
from patterd.providers.offline_pocketsphinx import PocketsphinxSTT
from patterd.providers.offline_stt import (
    SPEC,
    OfflineSTT,
    OfflineSTTOptions,
    expand_phrase,
    parse_phrase,
    phrases_arpa,
    phrases_jsgf,
    prepare,
)
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


def sphinx(**options: Any) -> OfflineSTTOptions:
    """Options that run pocketsphinx although the whisper extra is installed."""
    return OfflineSTTOptions(engine="pocketsphinx", **options)


def speak(text: str, voice: str = "en-us+m3", wpm: int = 150) -> bytes:
    args = ["espeak-ng", "--stdout", "-v", voice, "-s", str(wpm), text]
    return wav_to_ulaw8k(subprocess.run(args, capture_output=True, check=True, timeout=30).stdout)


def collect(stream: STTStream) -> tuple[list[Transcript], asyncio.Task[None]]:
    """The stream's transcripts, read into a list in the background: (the list, the reading task)."""
    got: list[Transcript] = []

    async def read() -> None:
        async for t in stream:
            got.append(t)

    return got, asyncio.create_task(read())


def push(stream: STTStream, audio: bytes) -> None:
    """Caller audio in 20 ms frames, as a call delivers it."""
    for i in range(0, len(audio), FRAME_BYTES):
        stream.push_audio(audio[i : i + FRAME_BYTES])


async def recognize(stt: OfflineSTT, audio: bytes, *, flush: bool = True) -> list[Transcript]:
    async with stt.stream() as stream:
        got, reader = collect(stream)
        push(stream, audio)
        if flush:
            await stream.flush()
    await asyncio.wait_for(reader, 30)
    return got


async def test_phrases_recognize_the_question_with_an_endpoint() -> None:
    async with SPEC.build(sphinx(mode="phrases", phrases=PHRASES), BuildContext()) as stt:
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
    async with SPEC.build(sphinx(), BuildContext()) as stt:
        # No trailing silence: only flush() can end this utterance.
        got = await recognize(stt, silence_ulaw(300) + speak("where are you located"))
    finals = [t for t in got if t.is_final]
    assert len(finals) == 1 and finals[0].end_of_utterance
    assert finals[0].text  # the open-vocabulary model is weak on synthetic speech; see bench/offline_stt.py


async def test_silence_yields_nothing_and_flush_returns() -> None:
    async with SPEC.build(sphinx(phrases=PHRASES), BuildContext()) as stt:
        assert await recognize(stt, silence_ulaw(1000)) == []


async def test_native_8k_mode_loads_and_decodes() -> None:
    async with SPEC.build(
        OfflineSTTOptions(sample_rate_mode="native_8k", phrases=PHRASES), BuildContext()
    ) as stt:
        assert isinstance(stt, PocketsphinxSTT) and stt.model.sample_rate == 8000
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
    async with SPEC.build(sphinx(mode="phrases", phrases=["hello zzqxv"]), BuildContext()) as stt:
        assert isinstance(stt, PocketsphinxSTT) and stt.model.unknown_words == ("zzqxv",)


FRONT_DESK = [
    "(hi | hello) [there]",
    "what are your opening hours",
    "what time do you (open | close) [today | tomorrow]",
    "i would like to (book | make) an appointment",
    "[on] (monday | tuesday | saturday)",
    "(goodbye | bye | bye bye)",
]


async def test_grammar_mode_hears_short_words_at_the_start_of_a_call() -> None:
    # One stream, like one call: "hi" is the very first speech the decoder hears, so it must be
    # recognized before live CMN has adapted; "bye" is mostly its vowel on phone band.
    options = sphinx(mode="grammar", phrases=FRONT_DESK)
    lines = ["hi", "what time do you open", "bye", "what are your opening hours"]
    audio = silence_ulaw(1000) + b"".join(speak(line, "en-us", 175) + silence_ulaw(1200) for line in lines)
    async with SPEC.build(options, BuildContext()) as stt:
        assert isinstance(stt, PocketsphinxSTT) and stt.model.mode == "grammar"
        got = await recognize(stt, audio, flush=False)
    finals = [t for t in got if t.is_final]
    assert [t.text for t in finals] == lines, got
    assert all(t.end_of_utterance and t.confidence is not None and t.confidence > 0.5 for t in finals)


async def test_phrases_mode_with_alternatives_recognizes_a_question() -> None:
    options = sphinx(mode="phrases", phrases=FRONT_DESK)
    async with SPEC.build(options, BuildContext()) as stt:
        assert isinstance(stt, PocketsphinxSTT)
        assert stt.model.mode == "phrases" and "jsgf" not in stt.model.config
        got = await recognize(
            stt, silence_ulaw(300) + speak("what are your opening hours") + silence_ulaw(900)
        )
    finals = [t for t in got if t.is_final]
    assert len(finals) == 1 and "opening" in finals[0].text.split(), got


def test_auto_mode_is_open_without_phrases_and_a_grammar_with_them() -> None:
    assert OfflineSTTOptions().effective_mode == "open"
    assert OfflineSTTOptions(phrases=["hi"]).effective_mode == "grammar"
    assert OfflineSTTOptions(mode="phrases", phrases=["hi"]).effective_mode == "phrases"
    assert OfflineSTTOptions(mode="grammar", phrases=["hi"]).effective_mode == "grammar"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "grammar"}, "mode 'grammar' needs `phrases`"),
        ({"phrases": ["(hi | hello"]}, "missing ')'"),
        ({"phrases": ["hi ]"]}, "unexpected ']'"),
        ({"phrases": ["hi <name>"]}, "unexpected '<'"),
        ({"cmn_init": "40,three"}, "cmn_init '40,three'"),
    ],
)
def test_bad_options_are_rejected_with_the_value(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        OfflineSTTOptions.model_validate(options)


def test_phrase_syntax_expands_alternatives_and_optional_parts() -> None:
    sentences = {" ".join(words) for words in expand_phrase(parse_phrase("[on] (monday | friday) please"))}
    assert sentences == {"on monday please", "on friday please", "monday please", "friday please"}
    assert expand_phrase(parse_phrase("Hi, there!")) == [["hi", "there"]]


def test_grammar_is_jsgf_of_the_known_words() -> None:
    jsgf = phrases_jsgf(["(hi | hello) there", "book zzqxv"], {"hi", "hello", "there", "book"}, 0.0)
    assert jsgf.startswith("#JSGF V1.0;")
    assert "<phrase> = ((hi | hello) there) | (book);" in jsgf
    assert "public <utterance> = <phrase>;" in jsgf
    loop = phrases_jsgf(["hi"], {"hi"}, 0.1)
    assert "public <utterance> = /1/ <phrase> | /0.1/ <word>+;" in loop


async def test_live_cmn_is_forced_although_the_bundled_model_says_batch(tmp_path: Path) -> None:
    # pocketsphinx 5.1.1 reads the model directory's feat.params (`-cmn batch`) after Decoder's arguments:
    # Decoder(cmn="live") alone comes out as batch.
    assert pocketsphinx.Decoder(loglevel="FATAL", cmn="live").config["cmn"] == "batch"
    (tmp_path / "live").mkdir()
    (tmp_path / "batch").mkdir()
    live = prepare(sphinx(), tmp_path / "live")
    assert pocketsphinx.Decoder(**live.config).config["cmn"] == "live"
    batch = prepare(sphinx(live_cmn=False), tmp_path / "batch")
    assert pocketsphinx.Decoder(**batch.config).config["cmn"] == "batch"


# ------------------------------------------------------------------ the decoder's own process


async def test_decoding_runs_in_a_child_process_that_ends_with_the_stream() -> None:
    async with SPEC.build(sphinx(mode="grammar", phrases=PHRASES), BuildContext()) as stt:
        assert isinstance(stt, PocketsphinxSTT)
        await stt.warm_up()
        assert stt._cmn.value is None
        async with stt.stream() as stream:
            got, reader = collect(stream)
            stream.push_audio(silence_ulaw(100))
            await stream.flush()  # the child is up and answering
            pid = stream.decoder_pid
            assert pid is not None and pid != os.getpid()
            assert os.getpriority(os.PRIO_PROCESS, pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 19)
            os.kill(pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole group: the daemon's to handle
            push(stream, silence_ulaw(300) + speak("what are your opening hours") + silence_ulaw(300))
            await stream.flush()  # recognized after the SIGINT (checked below)
            os.kill(pid, 0)  # alive while the stream is open
        await asyncio.wait_for(reader, 30)
        with pytest.raises(ProcessLookupError):  # ended (and reaped) once the stream closed
            os.kill(pid, 0)
        assert [t.text for t in got if t.is_final] == ["what are your opening hours"]
        assert stt._cmn.value is not None  # the mean it learned came back for the next call's decoder


async def test_a_decoder_process_that_dies_fails_the_stream_with_a_provider_error() -> None:
    async with SPEC.build(sphinx(mode="grammar", phrases=PHRASES), BuildContext()) as stt:
        assert isinstance(stt, PocketsphinxSTT)
        async with stt.stream() as stream:
            stream.push_audio(silence_ulaw(100))
            await stream.flush()  # the child is up and answering
            pid = stream.decoder_pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(ProviderError, match=r"pocketsphinx process ended \(exit code -9\)"):
                async with asyncio.timeout(30):
                    async for _ in stream:
                        pass
            stream.push_audio(silence_ulaw(100))  # audio after the end goes nowhere, without raising
            await stream.flush()  # and a flush returns at once
