"""Audio plumbing: G.711 μ-law ⇄ PCM16, stateful resampling, 20 ms framing, WAV reading.

All functions are pure (no I/O besides `read_wav_ulaw8k`), C-speed where it matters: μ-law
conversion uses `audioop` (stdlib on 3.11/3.12, `audioop-lts` on 3.13+), resampling uses
soxr's streaming resampler, which keeps its filter state across 20 ms chunks so chunk
edges do not click.
"""

from __future__ import annotations

import io
import warnings
import wave
from pathlib import Path

import numpy as np
import soxr

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


def silence_ulaw(ms: int) -> bytes:
    """`ms` milliseconds of μ-law silence at 8 kHz."""
    return ULAW_SILENCE * (ULAW_RATE * ms // 1000)


class Resampler:
    """Streaming 16-bit mono PCM resampler; keeps state across chunks (one per direction per call)."""

    def __init__(self, in_rate: int, out_rate: int, quality: str = "QQ") -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)

    def process(self, pcm: bytes, *, last: bool = False) -> bytes:
        """Resample one chunk; pass `last=True` on the final chunk to flush the filter."""
        samples = np.frombuffer(pcm, dtype="<i2")
        out = self._stream.resample_chunk(samples, last=last)
        return bytes(out.astype("<i2", copy=False).tobytes())


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
