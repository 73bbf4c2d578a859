"""Audio plumbing: G.711 μ-law ⇄ PCM16, stateful resampling, 20 ms framing, WAV reading.

All functions are pure (no I/O besides `read_wav_ulaw8k`), C-speed where it matters: μ-law
conversion uses `audioop` (stdlib on 3.11/3.12, `audioop-lts` on 3.13+).

Resampling between the telephony rates (8 kHz ⇄ 24 kHz for the Realtime engine, 8 ⇄ 16 kHz
for STT/TTS vendors) uses `resample.FirResampler`: every 20 ms frame in gives exactly one 20 ms
frame out, delayed only by the filter's 2 ms. soxr's streaming resampler, used before, held audio
back and released it in blocks (LQ: 0, 0, 900, 900, 0, 900 … samples for 20 ms frames at 8 → 24
kHz), which put 5-40 ms on the end of every caller turn and sent the agent's frames in pairs
(bench/turn_latency.py measures both). soxr remains for the other ratios (22.05 kHz espeak-ng,
WAV files of any rate), where nothing streams against a deadline.

Why not `audioop.ratecv` (bench/transcode.py, 100-3000 Hz sweep): it interpolates linearly with
no anti-alias filter, so 8→24 kHz reaches only ~14 dB SNR and 24→8 kHz folds a 6 kHz tone back
into the phone band at full level.
"""

from __future__ import annotations

import io
import warnings
import wave
from pathlib import Path
from typing import TYPE_CHECKING

from patterd.lazy import lazy_import

if TYPE_CHECKING:
    import numpy as np
    import soxr

    from patterd.protocols import resample
else:  # numpy (~0.2 s) is imported by the first Resampler, not by every importer of G.711 (start-up, issue 14)
    np = lazy_import("numpy")
    soxr = lazy_import("soxr")
    resample = lazy_import("patterd.protocols.resample")

with warnings.catch_warnings():
    # The stdlib module warns of its removal in 3.13; 3.13+ gets the audioop-lts backport.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ULAW_RATE = 8000
FRAME_MS = 20
FRAME_BYTES = ULAW_RATE * FRAME_MS // 1000  # 160 bytes of μ-law per 20 ms frame
ULAW_SILENCE = b"\xff"


def ulaw_to_pcm16(ulaw: bytes) -> bytes:
    """Decode G.711 μ-law to 16-bit little-endian PCM (same rate)."""
    return audioop.ulaw2lin(ulaw, 2)


def pcm16_to_ulaw(pcm: bytes) -> bytes:
    """Encode 16-bit little-endian PCM to G.711 μ-law (same rate)."""
    return audioop.lin2ulaw(pcm, 2)


def alaw_to_ulaw(alaw: bytes) -> bytes:
    """Transcode G.711 A-law to μ-law."""
    return audioop.lin2ulaw(audioop.alaw2lin(alaw, 2), 2)


def ulaw_to_alaw(ulaw: bytes) -> bytes:
    """Transcode G.711 μ-law to A-law."""
    return audioop.lin2alaw(audioop.ulaw2lin(ulaw, 2), 2)


def rms_pcm16(pcm: bytes) -> int:
    """Root-mean-square energy of 16-bit PCM."""
    return int(audioop.rms(pcm, 2))


# RMS of 16-bit PCM (-36 dBFS) from which a frame counts as voiced for turn latency (vad.offline's
# energy detector default): the tail of a word is above it, a phone line's hiss is not.
VOICED_RMS = 500


def is_voiced(ulaw: bytes, threshold: int = VOICED_RMS) -> bool:
    """Whether a μ-law frame is loud enough to be speech: a cheap local estimate where no VAD runs here."""
    return int(audioop.rms(audioop.ulaw2lin(ulaw, 2), 2)) >= threshold


def silence_ulaw(ms: int) -> bytes:
    """`ms` milliseconds of μ-law silence at 8 kHz."""
    return ULAW_SILENCE * (ULAW_RATE * ms // 1000)


# The ratios FirResampler serves (integer factors of the phone rate): zero-hold streaming.
FIR_RATES = frozenset({(8000, 24000), (24000, 8000), (8000, 16000), (16000, 8000)})


class Resampler:
    """Streaming 16-bit mono PCM resampler; keeps state across chunks (one per direction per call).

    The telephony ratios (`FIR_RATES`) use the zero-hold FIR (`quality` ignored); any other ratio
    uses soxr at `quality`, which may hold audio back until `last`. Like soxr, the stream as a whole
    is delay-compensated: the FIR's first 2 ms of output (its ramp-in) are dropped and `last`
    returns its tail, so converting a whole buffer gives exactly `len × ratio` aligned samples.
    """

    def __init__(self, in_rate: int, out_rate: int, quality: str = "LQ") -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._fir = resample.FirResampler(in_rate, out_rate) if (in_rate, out_rate) in FIR_RATES else None
        self._skip = 2 * self._fir.delay if self._fir is not None else 0  # bytes of ramp-in still to drop
        self._stream = (
            None
            if self._fir is not None
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)
        )

    def process(self, pcm: bytes, *, last: bool = False) -> bytes:
        """Resample one chunk; pass `last=True` on the final chunk to flush the filter."""
        if self._fir is not None:
            out = self._fir.process(pcm)
            if last:
                out += self._fir.tail()
            if self._skip:
                dropped = min(self._skip, len(out))
                out, self._skip = out[dropped:], self._skip - dropped
            if last:  # tail() reset the filter: a new stream starts with a new ramp-in
                self._skip = 2 * self._fir.delay
            return out
        assert self._stream is not None
        samples = np.frombuffer(pcm, dtype="<i2")
        res = self._stream.resample_chunk(samples, last=last)
        return bytes(res.astype("<i2", copy=False).tobytes())


PCM24_RATE = 24000


class UlawToPcm24:
    """Caller audio for a 24 kHz PCM engine: 8 kHz μ-law → 16-bit LE PCM at 24 kHz, stateful.

    One per call direction. Each 160-byte frame gives exactly 960 bytes at once (nothing is held
    for a later frame); the filter state carries across frames, so a signal cut into 20 ms frames
    comes out as if converted in one piece, 2 ms later.
    """

    __slots__ = ("_fir",)

    def __init__(self) -> None:
        self._fir = resample.FirResampler(ULAW_RATE, PCM24_RATE)

    def process(self, ulaw: bytes) -> bytes:
        """Transcode one chunk (any length: n bytes of μ-law → 6n bytes of PCM)."""
        return self._fir.process(audioop.ulaw2lin(ulaw, 2))

    def flush(self) -> bytes:
        """The filter's tail (its 2 ms delay) at the end of a stream; the next chunk starts afresh."""
        return self._fir.tail()


class Pcm24ToUlaw:
    """Engine audio for the carrier: 16-bit LE PCM at 24 kHz → 8 kHz μ-law, stateful and anti-aliased.

    Accepts chunks of any length, including an odd number of bytes (the stray byte waits
    for the next chunk), since engines cut their audio deltas wherever they like; a 20 ms delta
    (960 bytes) gives one 160-byte frame at once. The filter (~11 KB of buffers) exists only while a
    response plays: `flush` and `reset` drop it and the next chunk makes a fresh one.
    """

    __slots__ = ("_fir", "_odd")

    def __init__(self) -> None:
        self._fir: resample.FirResampler | None = None
        self._odd = b""

    def process(self, pcm: bytes) -> bytes:
        """Transcode one chunk; returns every output sample it completes (about a third of its samples)."""
        if self._odd:
            pcm = self._odd + pcm
            self._odd = b""
        if len(pcm) & 1:
            self._odd = pcm[-1:]
            pcm = pcm[:-1]
        fir = self._fir
        if fir is None:
            fir = self._fir = resample.FirResampler(PCM24_RATE, ULAW_RATE)
        return audioop.lin2ulaw(fir.process(pcm), 2)

    def flush(self) -> bytes:
        """The filter's tail (its 2 ms delay) at the end of a stream (e.g. the end of an agent response)."""
        self._odd = b""
        fir, self._fir = self._fir, None  # the next response starts a fresh filter
        if fir is None:
            return b""
        return audioop.lin2ulaw(fir.tail(), 2)

    def reset(self) -> None:
        """Forget buffered audio (barge-in: what was pending must not leak into the next reply)."""
        self._fir = None
        self._odd = b""


class FrameSplitter:
    """Cuts a byte stream into fixed-size frames, keeping the remainder for the next call."""

    def __init__(self, frame_bytes: int = FRAME_BYTES) -> None:
        self.frame_bytes = frame_bytes
        self._rest = b""

    def push(self, data: bytes) -> list[bytes]:
        """Add bytes; return every complete frame now available."""
        buf = self._rest + data
        n = len(buf) - len(buf) % self.frame_bytes
        self._rest = buf[n:]
        return [buf[i : i + self.frame_bytes] for i in range(0, n, self.frame_bytes)]

    def flush(self, pad: bytes = ULAW_SILENCE) -> list[bytes]:
        """The remainder padded to a whole frame (empty list if nothing is left)."""
        if not self._rest:
            return []
        frame = self._rest + pad * (self.frame_bytes - len(self._rest))
        self._rest = b""
        return [frame]


def wav_to_ulaw8k(data: bytes) -> bytes:
    """Convert a PCM WAV file's bytes (any rate, mono or stereo, 8/16-bit) to 8 kHz μ-law."""
    with wave.open(io.BytesIO(data)) as wav:
        width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
        pcm = wav.readframes(wav.getnframes())
    if width != 2:
        pcm = audioop.lin2lin(pcm, width, 2)
    if channels == 2:
        pcm = audioop.tomono(pcm, 2, 0.5, 0.5)
    elif channels != 1:
        raise ValueError(f"unsupported channel count {channels}")
    if rate != ULAW_RATE:
        pcm = Resampler(rate, ULAW_RATE, quality="HQ").process(pcm, last=True)
    return pcm16_to_ulaw(pcm)


def read_wav_ulaw8k(path: Path) -> bytes:
    """Read a WAV file from disk as 8 kHz μ-law."""
    return wav_to_ulaw8k(path.read_bytes())


def pcm16_to_wav(pcm: bytes, rate: int) -> bytes:
    """Wrap mono 16-bit PCM in a WAV container."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return out.getvalue()
