"""stt.offline on whisper: word error rate on phone-band callers, silence, the weights' hash, engine choice, one shared model."""

from __future__ import annotations

import asyncio
import collections
import shutil
from pathlib import Path

import numpy as np
import pytest
import structlog
from pydantic import ValidationError

from patterd.errors import ProviderError
from patterd.protocols.audio import FRAME_BYTES, pcm16_to_ulaw, silence_ulaw
from patterd.providers import offline_whisper
from patterd.providers.kinds import STT
from patterd.providers.offline_stt import SPEC, OfflineSTTOptions
from patterd.providers.offline_whisper import WhisperSTT, model_path, verify_weights
from patterd.providers.spec import BuildContext
from tests.providers.phone_speech import Clip, make_clips, normalize, word_errors

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="needs espeak-ng and sox"
)

# The default pool (one transcription at a time): the calls below queue for it.
WHISPER = OfflineSTTOptions(engine="whisper", whisper_cpu_threads=1)


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Clip]:
    return make_clips(tmp_path_factory.mktemp("phone_speech"))


async def finals(stt: STT, ulaw: bytes) -> list[str]:
    """The final texts of one call that says `ulaw` (20 ms frames) and is flushed at the end."""
    texts: list[str] = []
    async with stt.stream() as stream:

        async def read() -> None:
            async for t in stream:
                if t.is_final:
                    texts.append(t.text)

        reader = asyncio.create_task(read())
        for i in range(0, len(ulaw), FRAME_BYTES):
            stream.push_audio(ulaw[i : i + FRAME_BYTES])
        await stream.flush()
    await asyncio.wait_for(reader, 60)
    return texts


async def test_whisper_word_error_rate_on_phone_band_callers(clips: list[Clip]) -> None:
    async with SPEC.build(WHISPER, BuildContext()) as stt:
        assert isinstance(stt, WhisperSTT)
        # Every clip is its own call, all at once: the engine's pool queues them.
        heard = await asyncio.gather(
            *(finals(stt, silence_ulaw(200) + c.ulaw + silence_ulaw(300)) for c in clips)
        )
    errors: collections.Counter[str] = collections.Counter()
    words: collections.Counter[str] = collections.Counter()
    for clip, texts in zip(clips, heard, strict=True):
        e, n = word_errors(clip.text, " ".join(texts))
        errors[clip.voice] += e
        words[clip.voice] += n
    wer = sum(errors.values()) / sum(words.values())
    per_voice = {v: round(errors[v] / words[v], 3) for v in words}
    print(f"whisper WER {wer:.3f} on {len(clips)} utterances; per voice {per_voice}")
    assert len(clips) >= 30 and len(per_voice) >= 5
    assert wer <= 0.25, (wer, per_voice, heard)
    assert normalize(" ".join(heard[0]))[-2:] == ["maria", "garcia"], heard[0]


async def test_silence_and_line_noise_never_become_text() -> None:
    rng = np.random.default_rng(7)
    hiss = pcm16_to_ulaw(rng.normal(0, 300, 16000).astype("<i2").tobytes())
    click = pcm16_to_ulaw(rng.normal(0, 9000, 240).astype("<i2").tobytes())
    async with SPEC.build(WHISPER, BuildContext()) as stt:
        heard = await finals(stt, silence_ulaw(1500) + hiss + silence_ulaw(600) + click + silence_ulaw(900))
    assert [t for t in heard if t] == []


async def test_the_model_is_loaded_once_and_shared_by_builds() -> None:
    async with SPEC.build(WHISPER, BuildContext()) as first, SPEC.build(WHISPER, BuildContext()) as second:
        assert isinstance(first, WhisperSTT) and isinstance(second, WhisperSTT)
        assert first.engine is second.engine
        model = await asyncio.to_thread(first.engine.model)
        assert await asyncio.to_thread(second.engine.model) is model


async def test_a_call_before_the_warm_up_waits_for_the_model_and_says_so(clips: list[Clip]) -> None:
    # beam 4: an engine of its own, so no other test has loaded its model yet
    options = OfflineSTTOptions(engine="whisper", whisper_cpu_threads=1, whisper_beam_size=4)
    with structlog.testing.capture_logs() as logs:
        async with SPEC.build(options, BuildContext()) as stt:
            assert isinstance(stt, WhisperSTT)
            assert not stt.engine.loaded  # building does not load it: the daemon's warm-up does, after ready
            heard = await finals(stt, silence_ulaw(300) + clips[0].ulaw + silence_ulaw(900))
            assert stt.engine.loaded
            await stt.warm_up()  # the warm-up finding it loaded has nothing to do
    events = [e["event"] for e in logs]
    assert events.index("utterance waits for the whisper model to load") < events.index(
        "whisper model loaded"
    )
    assert events.count("whisper model loaded") == 1
    errors, words = word_errors(clips[0].text, " ".join(heard))
    assert errors <= words // 2, (clips[0].text, heard)  # the utterance that waited was still recognised


def test_weights_with_another_hash_are_refused(tmp_path: Path) -> None:
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (tmp_path / name).symlink_to(model_path() / name)
    (tmp_path / "model.bin").write_bytes(b"not the pinned weights")
    with pytest.raises(ProviderError, match=r"refuses whisper weights .* is not the pinned"):
        verify_weights(tmp_path)
    engine = offline_whisper.shared_engine(tmp_path, 1, 1, 5)
    with pytest.raises(ProviderError, match="refuses whisper weights"):
        engine.model()
    verify_weights(model_path())  # the installed weights are the pinned ones


def test_auto_engine_is_whisper_for_open_vocabulary_and_pocketsphinx_for_grammars() -> None:
    assert OfflineSTTOptions().effective_engine == "whisper"
    assert OfflineSTTOptions(phrases=["hi"]).effective_engine == "whisper"  # phrases only steer pocketsphinx
    assert OfflineSTTOptions(mode="grammar", phrases=["hi"]).effective_engine == "pocketsphinx"
    assert OfflineSTTOptions(mode="phrases", phrases=["hi"]).effective_engine == "pocketsphinx"
    assert OfflineSTTOptions(model="/some/hmm").effective_engine == "pocketsphinx"
    assert OfflineSTTOptions(engine="pocketsphinx").effective_engine == "pocketsphinx"
    with pytest.raises(ValidationError, match="mode 'grammar' is pocketsphinx's"):
        OfflineSTTOptions(engine="whisper", mode="grammar", phrases=["hi"])


def test_engine_whisper_without_the_extra_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offline_whisper, "available", lambda: False)
    with pytest.raises(ValidationError, match=r"needs the whisper extra: pip install 'patterd\[whisper\]'"):
        OfflineSTTOptions(engine="whisper")
    assert OfflineSTTOptions().effective_engine == "pocketsphinx"
