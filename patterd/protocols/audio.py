"""Audio plumbing: G.711 μ-law ⇄ PCM16, stateful resampling, 20 ms framing, WAV reading.

All functions are pure (no I/O besides `read_wav_ulaw8k`), C-speed where it matters: μ-law
conversion uses `audioop` (stdlib on 3.11/3.12, `audioop-lts` on 3.13+), resampling uses
soxr's streaming resampler, which keeps its filter state across 20 ms chunks so chunk
edges do not click.

Why soxr and not `audioop.ratecv` (measured by bench/transcode.py on a 100-3000 Hz sweep):
ratecv interpolates linearly with no anti-alias filter, so 8→24 kHz reaches only ~14 dB SNR
and 24→8 kHz folds a 6 kHz tone back into the phone band at full level; soxr "LQ" gives
54 dB up / 62 dB down (G.711 itself is ~38 dB) and -75 dB aliasing for about the same CPU
(~4 µs per 20 ms frame). "LQ" holds back 12.5 ms of filter delay per direction where "MQ"
holds 30 ms and "HQ" 43 ms for no audible gain on a phone line, so latency decides.
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


VOICED_RMS = 500  # RMS of 16-bit PCM above which a frame counts as voiced (vad.offline's energy default)


def is_voiced(ulaw: bytes, threshold: int = VOICED_RMS) -> bool:
    """Whether a μ-law frame is loud enough to be speech: a cheap local estimate where no VAD runs here."""
    return int(audioop.rms(audioop.ulaw2lin(ulaw, 2), 2)) >= threshold


def silence_ulaw(ms: int) -> bytes:
    """`ms` milliseconds of μ-law silence at 8 kHz."""
    return ULAW_SILENCE * (ULAW_RATE * ms // 1000)


class Resampler:
    """Streaming 16-bit mono PCM resampler; keeps state across chunks (one per direction per call)."""

    def __init__(self, in_rate: int, out_rate: int, quality: str = "LQ") -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)

    def process(self, pcm: bytes, *, last: bool = False) -> bytes:
        """Resample one chunk; pass `last=True` on the final chunk to flush the filter."""
        samples = np.frombuffer(pcm, dtype="<i2")
        out = self._stream.resample_chunk(samples, last=last)
        return bytes(out.astype("<i2", copy=False).tobytes())


PCM24_RATE = 24000
TRANSCODE_QUALITY = "LQ"  # soxr low quality: 54-62 dB on the phone band, 12.5 ms delay (see above)


class UlawToPcm24:
    """Caller audio for a 24 kHz PCM engine: 8 kHz μ-law → 16-bit LE PCM at 24 kHz, stateful.

    One per call direction; the soxr stream carries the filter phase across frames, so a
    signal cut into 20 ms frames comes out as if it had been converted in one piece.
    """

    __slots__ = ("_stream",)

    def __init__(self, quality: str = TRANSCODE_QUALITY) -> None:
        self._stream = soxr.ResampleStream(ULAW_RATE, PCM24_RATE, 1, dtype="int16", quality=quality)

    def process(self, ulaw: bytes) -> bytes:
        """Transcode one chunk (any length; normally a 160-byte frame → about 960 bytes)."""
        # audioop decodes in C; frombuffer is a view, so the only copies are the unavoidable ones.
        samples = np.frombuffer(audioop.ulaw2lin(ulaw, 2), dtype="<i2")
        return bytes(self._stream.resample_chunk(samples).tobytes())

    def flush(self) -> bytes:
        """The filter's tail at the end of a stream."""
        tail = bytes(self._stream.resample_chunk(np.zeros(0, dtype="<i2"), last=True).tobytes())
        self._stream.clear()  # ready for a new stream
        return tail


class Pcm24ToUlaw:
    """Engine audio for the carrier: 16-bit LE PCM at 24 kHz → 8 kHz μ-law, stateful and anti-aliased.

    Accepts chunks of any length, including an odd number of bytes (the stray byte waits
    for the next chunk), since engines cut their audio deltas wherever they like.
    The soxr stream (~37 KB) exists only while a response plays: `flush` and `reset` drop it
    and the next chunk makes a fresh one (~17 µs), so a call holds it only while the agent talks.
    """

    __slots__ = ("_odd", "_quality", "_stream")

    def __init__(self, quality: str = TRANSCODE_QUALITY) -> None:
        self._quality = quality
        self._stream: soxr.ResampleStream | None = None
        self._odd = b""

    def process(self, pcm: bytes) -> bytes:
        """Transcode one chunk; returns what the resampler has ready (may be empty at the start)."""
        if self._odd:
            pcm = self._odd + pcm
            self._odd = b""
        if len(pcm) & 1:
            self._odd = pcm[-1:]
            pcm = pcm[:-1]
        stream = self._stream
        if stream is None:
            stream = self._stream = soxr.ResampleStream(
                PCM24_RATE, ULAW_RATE, 1, dtype="int16", quality=self._quality
            )
        out = stream.resample_chunk(np.frombuffer(pcm, dtype="<i2"))
        # lin2ulaw reads the numpy buffer directly: no intermediate bytes object.
        return bytes(audioop.lin2ulaw(out, 2))

    def flush(self) -> bytes:
        """The filter's tail at the end of a stream (e.g. the end of an agent response)."""
        self._odd = b""
        stream, self._stream = self._stream, None  # the next response starts a fresh stream
        if stream is None:
            return b""
        return bytes(audioop.lin2ulaw(stream.resample_chunk(np.zeros(0, dtype="<i2"), last=True), 2))

    def reset(self) -> None:
        """Forget buffered audio (barge-in: what was pending must not leak into the next reply)."""
        self._stream = None
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
