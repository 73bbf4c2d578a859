"""Tests of vad.offline on real espeak-ng speech at 8 kHz μ-law, with noise, clicks and odd chunk sizes."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from patterd.protocols.audio import FRAME_BYTES, pcm16_to_ulaw, silence_ulaw, ulaw_to_pcm16, wav_to_ulaw8k
from patterd.providers.offline_vad import SPEC, OfflineVADOptions, OfflineVADStream
from patterd.providers.spec import BuildContext

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs the espeak-ng program")


def speak(text: str) -> bytes:
    wav = subprocess.run(["espeak-ng", "--stdout", text], capture_output=True, check=True, timeout=30).stdout
    return wav_to_ulaw8k(wav)


def with_noise(ulaw: bytes, rms: float, seed: int = 1) -> bytes:
    pcm = np.frombuffer(ulaw_to_pcm16(ulaw), dtype="<i2").astype(np.float64)
    noise = np.random.default_rng(seed).normal(0.0, rms, pcm.shape)
    return pcm16_to_ulaw(np.clip(pcm + noise, -32768, 32767).astype("<i2").tobytes())


def click(ms: int, amplitude: int = 12000) -> bytes:
    samples = np.random.default_rng(7).uniform(-amplitude, amplitude, 8 * ms).astype("<i2")
    return pcm16_to_ulaw(samples.tobytes())


def transitions(stream: OfflineVADStream, ulaw: bytes, chunk: int = FRAME_BYTES) -> list[tuple[int, str]]:
    """(ms offset, transition) for each transition while feeding `ulaw` in chunks."""
    out: list[tuple[int, str]] = []
    for i in range(0, len(ulaw), chunk):
        change = stream.process(ulaw[i : i + chunk])
        if change is not None:
            out.append((i // 8, change))
    return out


def test_speech_starts_and_ends_once() -> None:
    speech = speak("what are your opening hours")
    audio = silence_ulaw(500) + speech + silence_ulaw(800)
    got = transitions(OfflineVADStream(OfflineVADOptions()), audio)
    assert [t for _, t in got] == ["speech_start", "speech_end"]
    start_ms, end_ms = got[0][0], got[1][0]
    assert 500 <= start_ms <= 500 + 400  # after min_speech_ms of speech
    speech_end = 500 + len(speech) // 8
    assert speech_end - 300 <= end_ms <= speech_end + 600  # after min_silence_ms of silence


def test_speech_in_line_noise_is_still_found() -> None:
    audio = with_noise(
        silence_ulaw(500) + speak("i would like to book an appointment") + silence_ulaw(800), 300
    )
    got = transitions(OfflineVADStream(OfflineVADOptions(aggressiveness=3)), audio)
    assert [t for _, t in got][:1] == ["speech_start"]
    assert got[-1][1] == "speech_end"


def test_a_click_shorter_than_min_speech_does_not_start_speech() -> None:
    stream = OfflineVADStream(OfflineVADOptions(min_speech_ms=200))
    assert transitions(stream, silence_ulaw(300) + click(100) + silence_ulaw(500)) == []
    assert not stream.speaking


def test_odd_chunk_sizes_are_reassembled() -> None:
    audio = silence_ulaw(400) + speak("hello there") + silence_ulaw(800)
    got = transitions(OfflineVADStream(OfflineVADOptions()), audio, chunk=123)
    assert [t for _, t in got] == ["speech_start", "speech_end"]


def test_energy_detector_is_available() -> None:
    audio = silence_ulaw(400) + speak("hello there") + silence_ulaw(800)
    got = transitions(OfflineVADStream(OfflineVADOptions(detector="energy")), audio)
    assert [t for _, t in got] == ["speech_start", "speech_end"]


async def test_spec_builds_independent_streams() -> None:
    assert SPEC.key == "vad.offline"
    async with SPEC.build(OfflineVADOptions(), BuildContext()) as vad:
        a, b = vad.stream(), vad.stream()
        transitions(a, silence_ulaw(200) + speak("hello"))
        assert a.speaking and not b.speaking
