"""`recording.wav`: a stereo 8 kHz μ-law WAV appended as a call goes, its header always within what is on disk.

Layout (WAVE_FORMAT_MULAW = 7, so a `fact` chunk as the RIFF spec asks of non-PCM formats):
RIFF size | WAVE | fmt (18 bytes: tag 7, 2 channels, 8000 Hz, 16000 B/s, align 2, 8 bits, cbSize 0) |
fact (sample frames) | data. Each append writes the audio first and only then raises the three size
fields, so a process killed between the two leaves a header that claims less than the file holds: a
reader sees a shorter, still valid recording. No fsync: a killed process loses nothing the kernel
already has; a machine crash may lose what the page cache held (the records' JSON files are the
durable part of a call).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

RECORDING = "recording.wav"
RATE = 8000
CHANNELS = 2
WAVE_FORMAT_MULAW = 7

_FMT = struct.pack("<HHIIHHH", WAVE_FORMAT_MULAW, CHANNELS, RATE, RATE * CHANNELS, CHANNELS, 8, 0)
# Offsets of the size fields the appends raise.
RIFF_SIZE_AT = 4
FACT_SAMPLES_AT = 12 + 8 + len(_FMT) + 8
DATA_SIZE_AT = FACT_SAMPLES_AT + 4 + 4
HEADER_BYTES = DATA_SIZE_AT + 4


def header(data_bytes: int) -> bytes:
    """The whole header for `data_bytes` of interleaved audio (always even: 2 bytes a sample frame)."""
    return (
        b"RIFF"
        + struct.pack("<I", HEADER_BYTES - 8 + data_bytes)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(_FMT))
        + _FMT
        + b"fact"
        + struct.pack("<II", 4, data_bytes // CHANNELS)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


class RecordingFile:
    """One call's recording file, open for appending interleaved (left, right) μ-law sample frames."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data_bytes = 0
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            self._write_all(header(0))
        except OSError:
            os.close(self._fd)
            raise
        self._size = struct.Struct("<I")

    def append(self, interleaved: memoryview) -> None:
        """Write sample frames after what is there, then raise the sizes to cover them."""
        if not interleaved.nbytes or self._fd < 0:
            return
        if interleaved.nbytes % CHANNELS:
            raise ValueError("interleaved stereo audio is a whole number of 2-byte sample frames")
        self._write_all(interleaved)
        self.data_bytes += interleaved.nbytes
        # Sizes after the data: each only grows, so any prefix of these writes still under-claims.
        pack = self._size.pack
        os.pwrite(self._fd, pack(self.data_bytes), DATA_SIZE_AT)
        os.pwrite(self._fd, pack(self.data_bytes // CHANNELS), FACT_SAMPLES_AT)
        os.pwrite(self._fd, pack(HEADER_BYTES - 8 + self.data_bytes), RIFF_SIZE_AT)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _write_all(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view.nbytes:
            written = os.write(self._fd, view)
            view = view[written:]


def read_recording(path: Path) -> tuple[bytes, bytes]:
    """(left, right) μ-law channels of a recording, as far as its header claims; ValueError if not one."""
    raw = path.read_bytes()
    if len(raw) < HEADER_BYTES or raw[0:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise ValueError(f"{path} is not a RIFF/WAVE file")
    if raw[20 : 20 + len(_FMT)] != _FMT:
        raise ValueError(f"{path} is not stereo 8 kHz μ-law")
    (riff,) = struct.unpack_from("<I", raw, RIFF_SIZE_AT)
    (frames,) = struct.unpack_from("<I", raw, FACT_SAMPLES_AT)
    (size,) = struct.unpack_from("<I", raw, DATA_SIZE_AT)
    if size > len(raw) - HEADER_BYTES or riff != HEADER_BYTES - 8 + size or frames * CHANNELS != size:
        raise ValueError(f"{path}: header sizes disagree or claim more than the file holds")
    data = raw[HEADER_BYTES : HEADER_BYTES + size]
    return data[0::2], data[1::2]
