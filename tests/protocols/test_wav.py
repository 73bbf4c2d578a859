"""protocols.wav: files made by sox in every format callers send, hand-built headers, and clear refusals."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from patterd.protocols.audio import pcm16_to_ulaw, ulaw_to_pcm16
from patterd.protocols.wav import WavError, parse_wav, to_mono_pcm16, wav_to_ulaw8k

needs_sox = pytest.mark.skipif(shutil.which("sox") is None, reason="needs the sox program")
TONE = ["synth", "0.5", "sine", "440", "vol", "0.5"]


def sox(tmp_path: Path, name: str, *args: str) -> bytes:
    """A 0.5 s 440 Hz tone written by sox with the given output options."""
    out = tmp_path / name
    subprocess.run(["sox", "-n", *args, str(out), *TONE], check=True, capture_output=True, timeout=30)
    return out.read_bytes()


def samples(ulaw: bytes) -> npt.NDArray[np.float64]:
    return np.frombuffer(ulaw_to_pcm16(ulaw), dtype="<i2").astype(np.float64)


def snr_db(got: npt.NDArray[np.float64], want: npt.NDArray[np.float64]) -> float:
    edge = 160  # 20 ms at each end, where resampling filters ramp
    got, want = got[edge:-edge], want[edge:-edge]
    return float(10 * np.log10(np.sum(want**2) / max(np.sum((got - want) ** 2), 1e-9)))


def riff(*chunks: tuple[bytes, bytes]) -> bytes:
    """A RIFF/WAVE file from (id, body) chunks, each padded to an even size."""
    body = b"".join(
        cid + struct.pack("<I", len(data)) + data + b"\0" * (len(data) & 1) for cid, data in chunks
    )
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def fmt_chunk(code: int, channels: int, rate: int, bits: int) -> tuple[bytes, bytes]:
    align = channels * bits // 8
    return b"fmt ", struct.pack("<HHIIHH", code, channels, rate, rate * align, align, bits)


def extensible(code: int, channels: int, rate: int, bits: int) -> tuple[bytes, bytes]:
    _, base = fmt_chunk(0xFFFE, channels, rate, bits)
    guid = struct.pack("<H", code) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    return b"fmt ", base + struct.pack("<HHI", 22, bits, 0) + guid


@needs_sox
@pytest.mark.parametrize(
    "name,args",
    [
        ("ulaw8k.wav", ["-r", "8000", "-e", "u-law"]),
        ("alaw8k.wav", ["-r", "8000", "-e", "a-law"]),
        ("ulaw16k_stereo.wav", ["-r", "16000", "-c", "2", "-e", "u-law"]),
        ("pcm8_22k.wav", ["-r", "22050", "-b", "8"]),
        ("pcm16_8k.wav", ["-r", "8000", "-b", "16"]),
        ("pcm16_44k_stereo.wav", ["-r", "44100", "-b", "16", "-c", "2"]),
        ("pcm24_48k_stereo.wav", ["-r", "48000", "-b", "24", "-c", "2"]),  # WAVE_FORMAT_EXTENSIBLE
        ("pcm32_16k.wav", ["-r", "16000", "-b", "32"]),  # WAVE_FORMAT_EXTENSIBLE
        ("float32_24k.wav", ["-r", "24000", "-e", "floating-point", "-b", "32"]),
        ("pcm16_11k.wav", ["-r", "11025", "-b", "16"]),
    ],
)
def test_sox_files_become_the_same_phone_audio(tmp_path: Path, name: str, args: list[str]) -> None:
    reference = 0.5 * 32767 * np.sin(2 * np.pi * 440 * np.arange(4000) / 8000)  # what sox synthesised
    got = samples(wav_to_ulaw8k(sox(tmp_path, name, *args)))
    assert abs(len(got) - len(reference)) <= 1
    n = min(len(got), len(reference))
    assert snr_db(got[:n], reference[:n]) > 25  # μ-law itself is ~38 dB; a wrong decode is < 0 dB


@needs_sox
def test_ulaw_and_alaw_decode_exactly_like_sox(tmp_path: Path) -> None:
    for encoding in ("u-law", "a-law"):
        data = sox(tmp_path, f"{encoding}.wav", "-r", "8000", "-e", encoding)
        raw = tmp_path / f"{encoding}.raw"
        subprocess.run(
            ["sox", str(tmp_path / f"{encoding}.wav"), "-e", "signed", "-b", "16", "-t", "raw", str(raw)],
            check=True,
        )
        fmt, body = parse_wav(data)
        assert to_mono_pcm16(fmt, body) == raw.read_bytes()


def test_ulaw_8k_mono_passes_through_unchanged() -> None:
    ulaw = bytes(range(256)) * 4
    assert wav_to_ulaw8k(riff(fmt_chunk(7, 1, 8000, 8), (b"data", ulaw))) == ulaw
    assert wav_to_ulaw8k(riff(extensible(7, 1, 8000, 8), (b"data", ulaw))) == ulaw


def test_chunks_in_any_order_with_padding_and_unsized_data() -> None:
    pcm = np.arange(-800, 800, 2, dtype="<i2").tobytes()
    expected = pcm16_to_ulaw(pcm)
    odd_list = (b"LIST", b"INFOISFT\x05\x00\x00\x00sox!\x00")  # odd size: a pad byte follows
    assert wav_to_ulaw8k(riff(odd_list, fmt_chunk(1, 1, 8000, 16), (b"data", pcm))) == expected
    assert wav_to_ulaw8k(riff((b"data", pcm), fmt_chunk(1, 1, 8000, 16))) == expected  # fmt after data
    # written to a pipe: the data size is unknown (0xFFFFFFFF) and the samples run to the end
    streamed = riff(fmt_chunk(1, 1, 8000, 16)) + b"data" + struct.pack("<I", 0xFFFFFFFF) + pcm
    assert wav_to_ulaw8k(streamed) == expected
    # a torn last frame is dropped, not misread
    assert wav_to_ulaw8k(riff(fmt_chunk(1, 1, 8000, 16), (b"data", pcm + b"\x01"))) == expected


def test_stereo_is_averaged_and_pcm_widths_agree() -> None:
    left = np.full(400, 8000, dtype="<i2")
    right = np.full(400, -2000, dtype="<i2")
    stereo = np.column_stack([left, right]).astype("<i2").tobytes()
    fmt, body = parse_wav(riff(fmt_chunk(1, 2, 8000, 16), (b"data", stereo)))
    assert set(np.frombuffer(to_mono_pcm16(fmt, body), dtype="<i2")) == {3000}
    value = 0x123456  # 24-bit sample; its top 16 bits are 0x1234
    for bits, sample in ((24, value.to_bytes(3, "little")), (32, (value << 8).to_bytes(4, "little"))):
        fmt, body = parse_wav(riff(fmt_chunk(1, 1, 8000, bits), (b"data", sample * 10)))
        assert set(np.frombuffer(to_mono_pcm16(fmt, body), dtype="<i2")) == {0x1234}
    negative = (-256).to_bytes(3, "little", signed=True)
    fmt, body = parse_wav(riff(fmt_chunk(1, 1, 8000, 24), (b"data", negative * 10)))
    assert set(np.frombuffer(to_mono_pcm16(fmt, body), dtype="<i2")) == {-1}
    fmt, body = parse_wav(riff(fmt_chunk(1, 1, 8000, 8), (b"data", bytes([0, 128, 255]))))
    assert list(np.frombuffer(to_mono_pcm16(fmt, body), dtype="<i2")) == [-32768, 0, 32512]


@pytest.mark.parametrize(
    "data,message",
    [
        (b"", "empty"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb" * 100, "an MP3 file, not a WAV"),
        (b"\xff\xfb\x90\x64" + b"\x00" * 100, "an MP3 file, not a WAV"),
        (b"fLaC" + b"\x00" * 100, "a FLAC file, not a WAV"),
        (b"hello, this is a text file\n", "not a RIFF/WAVE file"),
        (
            riff(fmt_chunk(1, 1, 8000, 16), (b"data", b"\x00" * 1000))[:500],
            "truncated: the data chunk declares 1000 bytes",
        ),
        (riff(fmt_chunk(1, 1, 8000, 16))[:30], "truncated inside the fmt chunk"),
        (riff(fmt_chunk(1, 1, 8000, 16)), "no data chunk"),
        (riff((b"data", b"\x00" * 100)), "no fmt chunk"),
        (riff(fmt_chunk(2, 1, 8000, 4), (b"data", b"\x00" * 100)), "format code 2"),
        (riff(fmt_chunk(1, 1, 8000, 12), (b"data", b"\x00" * 100)), "sample size 12 bits"),
        (riff(fmt_chunk(1, 0, 8000, 16), (b"data", b"\x00" * 100)), "channel count 0"),
        (riff(fmt_chunk(1, 1, 0, 16), (b"data", b"\x00" * 100)), "sample rate 0 Hz"),
        (riff(fmt_chunk(1, 1, 8000, 16), (b"data", b"")), "holds no audio"),
        (riff((b"fmt ", b"\x01\x00")), "too short"),
    ],
)
def test_unreadable_files_get_one_line_reasons(data: bytes, message: str) -> None:
    with pytest.raises(WavError, match=message) as caught:
        wav_to_ulaw8k(data)
    assert "\n" not in str(caught.value)
