"""`vad.offline`: webrtcvad on 8 kHz μ-law frames, with a minimum-speech guard and a silence hangover.

webrtcvad (the `webrtcvad-wheels` distribution) classifies 10/20/30 ms frames of 16-bit PCM at 8, 16, 32
or 48 kHz; we feed it the call's 20 ms frames decoded from μ-law, no resampling. Its raw per-frame
decision flickers, so `_Debouncer` turns it into turns: speech must last `min_speech_ms` before
`speech_start` (a cough or a line click does not interrupt the agent), and silence must last
`min_silence_ms` before `speech_end`. `detector: energy` swaps in a plain RMS threshold, kept as the
baseline webrtcvad was measured against (see bench/offline_stt.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Literal

import webrtcvad
from pydantic import Field

from patterd.protocols.audio import FRAME_BYTES, FRAME_MS, ULAW_RATE, rms_pcm16, ulaw_to_pcm16
from patterd.providers.spec import BuildContext, Capabilities, ProviderOptions, ProviderSpec

Transition = Literal["speech_start", "speech_end"]


class OfflineVADOptions(ProviderOptions):
    """Options of `vad.offline`."""

    detector: Literal["webrtc", "energy"] = "webrtc"
    aggressiveness: int = Field(default=2, ge=0, le=3)  # webrtcvad mode: 3 rejects the most non-speech
    min_speech_ms: int = Field(default=200, ge=0, le=5000)  # speech shorter than this never starts a turn
    min_silence_ms: int = Field(default=300, ge=20, le=10000)  # silence this long ends speech
    energy_threshold: int = Field(default=500, ge=1)  # RMS of 16-bit PCM, for detector: energy


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


class OfflineVADStream:
    """Voice activity on one call (kinds.VADStream)."""

    def __init__(self, options: OfflineVADOptions) -> None:
        self._debounce = _Debouncer(options.min_speech_ms, options.min_silence_ms)
        self._classify: Callable[[bytes], bool]
        if options.detector == "webrtc":
            vad = webrtcvad.Vad(options.aggressiveness)
            self._classify = lambda pcm: bool(vad.is_speech(pcm, ULAW_RATE))
        else:
            threshold = options.energy_threshold
            self._classify = lambda pcm: rms_pcm16(pcm) >= threshold
        self._rest = b""

    def process(self, ulaw: bytes) -> Transition | None:
        """Feed μ-law audio (normally one 20 ms frame); returns a transition when speech starts or ends."""
        buf = self._rest + ulaw
        whole = len(buf) - len(buf) % FRAME_BYTES
        self._rest = buf[whole:]  # odd-sized input: keep the tail for the next call
        result: Transition | None = None
        for i in range(0, whole, FRAME_BYTES):
            pcm = ulaw_to_pcm16(buf[i : i + FRAME_BYTES])
            change = self._debounce.update(self._classify(pcm), FRAME_MS)
            if change is not None:
                result = change if result is None else None  # start+end inside one chunk cancel out
        return result

    @property
    def speaking(self) -> bool:
        """True while the caller is judged to be speaking."""
        return self._debounce.speaking


class OfflineVAD:
    """The live `vad.offline` provider (kinds.VAD)."""

    def __init__(self, options: OfflineVADOptions) -> None:
        self.options = options

    def stream(self) -> OfflineVADStream:
        """A detector for one call."""
        return OfflineVADStream(self.options)


@asynccontextmanager
async def build(options: OfflineVADOptions, ctx: BuildContext) -> AsyncIterator[OfflineVAD]:
    """Nothing to open: detectors are made per call."""
    yield OfflineVAD(options)


SPEC = ProviderSpec(
    kind="vad",
    name="offline",
    options=OfflineVADOptions,
    build=build,
    summary="webrtcvad voice activity detection on 8 kHz μ-law with min-speech and silence guards",
    capabilities=Capabilities(streaming=True, needs_network=False, sample_rates=(8000,)),
)
