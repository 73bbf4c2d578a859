"""WAV bytes → 8 kHz μ-law caller audio: RIFF chunks read by hand (PCM, float, μ-law, A-law, EXTENSIBLE).

The stdlib `wave` module reads only integer PCM and refuses μ-law (format 7) and A-law (6), the
formats phone recordings usually come in, and WAVE_FORMAT_EXTENSIBLE, which sox and ffmpeg write
for 24/32-bit and multichannel files. Followed: Microsoft's RIFF/WAVE layout (`fmt ` then `data`,
chunks padded to even sizes, any other chunk skipped) and the WAVEFORMATEXTENSIBLE SubFormat GUIDs.
No I/O here: callers pass the file's bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from patterd.protocols.audio import ULAW_RATE, Resampler, alaw_to_ulaw, pcm16_to_ulaw, ulaw_to_pcm16

Encoding = Literal["pcm", "float", "alaw", "ulaw"]

FORMAT_CODES: dict[int, Encoding] = {1: "pcm", 3: "float", 6: "alaw", 7: "ulaw"}
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# The SubFormat GUID of WAVEFORMATEXTENSIBLE is the format code followed by these 14 bytes.
_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
_BITS: dict[Encoding, tuple[int, ...]] = {
    "pcm": (8, 16, 24, 32),
    "float": (32, 64),
    "alaw": (8,),
    "ulaw": (8,),
}
_UNSIZED = (0, 0xFFFFFFFF)  # data sizes written by encoders streaming to a pipe: "until the end"
MIN_RATE, MAX_RATE = 1000, 768_000
MAX_CHANNELS = 64

# Other containers people hand over as "a WAV": recognised so the error can say what the file is.
_OTHER_FORMATS = (
    (b"ID3", "an MP3 file"),
    (b"\xff\xfb", "an MP3 file"),
    (b"\xff\xf3", "an MP3 file"),
    (b"\xff\xf2", "an MP3 file"),
    (b"fLaC", "a FLAC file"),
    (b"OggS", "an Ogg file"),
    (b"RIFX", "a big-endian RIFX file"),
    (b"RF64", "an RF64 (64-bit) WAV file"),
    (b"FORM", "an AIFF file"),
)


class WavError(ValueError):
    """The bytes are not a WAV file this reader can play; the message says why, in one line."""


@dataclass(frozen=True)
class WavFormat:
    """What the `fmt ` chunk says."""

    encoding: Encoding
    channels: int
    rate: int
    bits: int

    @property
    def frame_bytes(self) -> int:
        return self.channels * self.bits // 8


def parse_wav(data: bytes) -> tuple[WavFormat, bytes]:
    """The format and the sample bytes (whole frames only) of a WAV file; WavError if unreadable."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        what = next((name for magic, name in _OTHER_FORMATS if data.startswith(magic)), None)
        if what is None and data[4:8] == b"ftyp":
            what = "an MP4/M4A file"
        if what is None:
            what = "empty" if not data else ("too short" if len(data) < 12 else "not a RIFF/WAVE file")
        else:
            what = f"{what}, not a WAV"
        raise WavError(f"{what}; convert it first, e.g. `ffmpeg -i FILE -ar 8000 -ac 1 out.wav`")
    fmt: WavFormat | None = None
    samples: bytes | None = None
    offset = 12
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        (size,) = struct.unpack_from("<I", data, offset + 4)
        body_start = offset + 8
        available = len(data) - body_start
        if chunk_id == b"data":
            if size in _UNSIZED and available != size:
                size = available
            elif size > available:
                raise WavError(
                    f"truncated: the data chunk declares {size} bytes but the file holds {available}"
                )
            samples = data[body_start : body_start + size]
        elif chunk_id == b"fmt ":
            if size > available:
                raise WavError("truncated inside the fmt chunk")
            fmt = _parse_fmt(data[body_start : body_start + size])
        offset = body_start + size + (size & 1)  # chunks are padded to an even size
    if fmt is None:
        raise WavError("no fmt chunk: truncated or not a WAV file")
    if samples is None:
        raise WavError("no data chunk: truncated or not a WAV file")
    whole = len(samples) - len(samples) % fmt.frame_bytes  # a torn last frame is dropped
    if whole == 0:
        raise WavError("the data chunk holds no audio")
    return fmt, samples[:whole]


def _parse_fmt(body: bytes) -> WavFormat:
    if len(body) < 16:
        raise WavError(f"fmt chunk of {len(body)} bytes is too short (at least 16)")
    code, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", body)
    if code == WAVE_FORMAT_EXTENSIBLE:
        if len(body) < 40:
            raise WavError("WAVE_FORMAT_EXTENSIBLE fmt chunk is too short (at least 40 bytes)")
        subformat = body[24:40]
        if subformat[2:] != _GUID_TAIL:
            raise WavError(f"unsupported WAVE_FORMAT_EXTENSIBLE sub-format {subformat.hex()}")
        (code,) = struct.unpack_from("<H", subformat)
    encoding = FORMAT_CODES.get(code)
    if encoding is None:
        raise WavError(
            f"unsupported WAV encoding (format code {code}); "
            "supported: PCM 8/16/24/32-bit, float, μ-law and A-law"
        )
    if bits not in _BITS[encoding]:
        raise WavError(f"unsupported {encoding} sample size {bits} bits; supported: {_BITS[encoding]}")
    if not 1 <= channels <= MAX_CHANNELS:
        raise WavError(f"unsupported channel count {channels}")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise WavError(f"unsupported sample rate {rate} Hz")
    found = WavFormat(encoding, channels, rate, bits)
    if block_align != found.frame_bytes:
        raise WavError(f"inconsistent fmt chunk: block_align {block_align}, expected {found.frame_bytes}")
    return found


def _alaw_table() -> npt.NDArray[np.int16]:
    """G.711 A-law byte → 16-bit linear (ITU-T G.711 decoding, as in Sun's g711.c)."""
    out = np.empty(256, dtype=np.int16)
    for byte in range(256):
        a = byte ^ 0x55
        magnitude = (a & 0x0F) << 4
        segment = (a & 0x70) >> 4
        magnitude += 8 if segment == 0 else 0x108
        if segment > 1:
            magnitude <<= segment - 1
        out[byte] = magnitude if a & 0x80 else -magnitude
    return out


_ALAW = _alaw_table()
_ULAW = np.frombuffer(ulaw_to_pcm16(bytes(range(256))), dtype="<i2")


def to_float(fmt: WavFormat, samples: bytes) -> npt.NDArray[np.float64]:
    """Samples as float64 in 16-bit units, shape (frames, channels)."""
    raw = np.frombuffer(samples, dtype=np.uint8)
    values: npt.NDArray[np.float64]
    if fmt.encoding == "ulaw":
        values = _ULAW[raw].astype(np.float64)
    elif fmt.encoding == "alaw":
        values = _ALAW[raw].astype(np.float64)
    elif fmt.encoding == "float":
        floats = np.frombuffer(samples, dtype="<f4" if fmt.bits == 32 else "<f8")
        values = np.clip(np.nan_to_num(floats.astype(np.float64)), -1.0, 1.0) * 32767.0
    elif fmt.bits == 8:  # 8-bit PCM is unsigned, centred on 128
        values = (raw.astype(np.float64) - 128.0) * 256.0
    elif fmt.bits == 16:
        values = np.frombuffer(samples, dtype="<i2").astype(np.float64)
    elif fmt.bits == 24:
        triples = raw.reshape(-1, 3).astype(np.int32)
        ints = triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)
        ints = np.where(ints & 0x800000, ints - (1 << 24), ints)  # sign-extend
        values = ints.astype(np.float64) / 256.0
    else:
        values = np.frombuffer(samples, dtype="<i4").astype(np.float64) / 65536.0
    return values.reshape(-1, fmt.channels)


def to_mono_pcm16(fmt: WavFormat, samples: bytes) -> bytes:
    """Mono 16-bit little-endian PCM at the file's rate (channels averaged)."""
    mono = to_float(fmt, samples).mean(axis=1)
    return bytes(np.clip(np.rint(mono), -32768, 32767).astype("<i2").tobytes())


def wav_to_ulaw8k(data: bytes) -> bytes:
    """A WAV file's bytes as 8 kHz mono μ-law, what a phone line carries; WavError if unreadable."""
    fmt, samples = parse_wav(data)
    if fmt.channels == 1 and fmt.rate == ULAW_RATE and fmt.encoding in ("ulaw", "alaw"):
        return samples if fmt.encoding == "ulaw" else alaw_to_ulaw(samples)  # already phone audio
    pcm = to_mono_pcm16(fmt, samples)
    if fmt.rate != ULAW_RATE:
        pcm = Resampler(fmt.rate, ULAW_RATE, quality="HQ").process(pcm, last=True)
    return pcm16_to_ulaw(pcm)
