"""The recording timeline and file: placement of both channels on one clock, barge-in cuts, the header rule."""

from __future__ import annotations

import struct
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from patterd.calls.recording_timeline import LAG_SECS, StereoTimeline
from patterd.store.recording_file import (
    DATA_SIZE_AT,
    HEADER_BYTES,
    RecordingFile,
    header,
    read_recording,
)

RATE = 8000


class HandClock:
    """Monotonic time moved by the test."""

    def __init__(self) -> None:
        self.t = 100.0

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)

    def monotonic(self) -> float:
        return self.t

    def advance(self, secs: float) -> None:
        self.t += secs


def frame(byte: int, n: int = 160) -> bytes:
    return bytes([byte]) * n


def timeline(tmp_path: Path) -> tuple[StereoTimeline, HandClock, Path]:
    clock = HandClock()
    path = tmp_path / "recording.wav"
    return StereoTimeline(RecordingFile(path), clock, clock.monotonic()), clock, path


def test_header_is_stereo_mulaw_with_a_fact_chunk() -> None:
    raw = header(320)
    assert raw[:4] == b"RIFF" and raw[8:12] == b"WAVE" and raw[12:16] == b"fmt "
    tag, channels, rate, byte_rate, align, bits, extra = struct.unpack_from("<HHIIHHH", raw, 20)
    assert (tag, channels, rate, byte_rate, align, bits, extra) == (7, 2, 8000, 16000, 2, 8, 0)
    assert raw[38:42] == b"fact" and struct.unpack_from("<II", raw, 42) == (4, 160)
    assert raw[50:54] == b"data" and struct.unpack_from("<I", raw, 54) == (320,)
    assert len(raw) == HEADER_BYTES and struct.unpack_from("<I", raw, 4) == (HEADER_BYTES - 8 + 320,)


def test_caller_and_agent_land_where_they_were_heard(tmp_path: Path) -> None:
    line, clock, path = timeline(tmp_path)
    for _ in range(50):  # one second of caller frames in real time, a tone-like byte
        clock.advance(0.02)
        line.caller(frame(0x10))
    line.agent_audio(frame(0x20, 4000))  # half a second of agent audio queued at 1.0 s
    line.agent_audio(frame(0x30, 800))  # queued behind it: plays from 1.5 s
    clock.advance(2.0)
    line.close()
    left, right = read_recording(path)
    assert len(left) == len(right) == 3 * RATE
    assert left[:RATE] == frame(0x10, RATE) and left[RATE:] == frame(0xFF, 2 * RATE)
    assert right[:RATE] == frame(0xFF, RATE)
    assert right[RATE : RATE + 4000] == frame(0x20, 4000)
    assert right[RATE + 4000 : RATE + 4800] == frame(0x30, 800)
    assert right[RATE + 4800 :] == frame(0xFF, 2 * RATE - 4800)


def test_a_clear_cuts_what_was_queued_but_not_played(tmp_path: Path) -> None:
    line, clock, path = timeline(tmp_path)
    line.agent_audio(frame(0x20, 2 * RATE))  # two seconds queued at 0
    clock.advance(0.5)
    line.clear()  # barge-in at 0.5 s: 1.5 s never played
    clock.advance(0.25)
    line.agent_audio(frame(0x30, 800))  # the next reply starts now, not after the cleared audio
    clock.advance(1.0)
    line.close()
    _, right = read_recording(path)
    assert right[:4000] == frame(0x20, 4000)
    assert right[4000:6000] == frame(0xFF, 2000)
    assert right[6000:6800] == frame(0x30, 800)
    assert set(right[6800:]) == {0xFF}


def test_jitter_is_smoothed_by_frame_count_and_a_stopped_stream_placed_by_arrival(tmp_path: Path) -> None:
    line, clock, path = timeline(tmp_path)
    clock.advance(0.02)
    line.caller(frame(1))
    clock.advance(0.035)  # late by 15 ms (jitter): still right after the first frame
    line.caller(frame(2))
    clock.advance(0.005)
    line.caller(frame(3))
    clock.advance(1.5)  # no frames for 1.5 s: the sender stopped
    line.caller(frame(4))
    line.close()
    left, _ = read_recording(path)
    assert left[0:480] == frame(1) + frame(2) + frame(3)
    at = round((0.02 + 0.035 + 0.005 + 1.5) * RATE) - 160
    assert left[480:at] == frame(0xFF, at - 480)
    assert left[at : at + 160] == frame(4)


def test_a_backlog_read_in_a_burst_is_placed_where_it_was_sent(tmp_path: Path) -> None:
    """Frames queued while the reader was held up arrive at once: they are placed back to back up to the clock."""
    line, clock, path = timeline(tmp_path)
    clock.advance(0.02)
    line.caller(frame(9))  # on time, then the reader stalls for 2 s
    clock.advance(2.0)
    backlog = bytes(range(256)) * (2 * RATE // 256) + bytes(range(2 * RATE % 256))
    for start in range(0, len(backlog), 160):  # the 2 s sent meanwhile, read at once
        line.caller(backlog[start : start + 160])
    for i in range(5):  # on time again
        clock.advance(0.02)
        line.caller(frame(20 + i))
    line.close()
    left, _ = read_recording(path)
    assert left[:160] == frame(9)
    assert left[160 : 160 + len(backlog)] == backlog
    after = 160 + len(backlog)
    assert left[after : after + 800] == b"".join(frame(20 + i) for i in range(5))


def test_at_most_about_a_second_is_held_and_every_flush_leaves_a_valid_file(tmp_path: Path) -> None:
    line, clock, path = timeline(tmp_path)
    for i in range(500):  # ten seconds
        clock.advance(0.02)
        line.caller(frame(i % 200))
        if i % 25 == 24:  # the leg's ticker, every LAG_SECS
            line.tick()
            left, right = read_recording(path)  # readable at every instant: a kill here loses ≤ 1 s
            assert line.now() - len(left) <= 2 * LAG_SECS * RATE
            assert len(left) == len(right) == line.written
    line.close()
    left, _ = read_recording(path)
    assert left == b"".join(frame(i % 200) for i in range(500))


def test_a_header_never_claims_more_than_the_file_holds(tmp_path: Path) -> None:
    """The crash window: data written, sizes not raised yet; the reader sees the older, shorter file."""
    path = tmp_path / "recording.wav"
    out = RecordingFile(path)
    out.append(memoryview(frame(0x11, 640)))
    out.close()
    with path.open("ab") as f:  # what a kill between the write and the size update leaves
        f.write(frame(0x22, 320))
    left, right = read_recording(path)
    assert left == right == frame(0x11, 320)
    raw = bytearray(path.read_bytes())
    raw[DATA_SIZE_AT : DATA_SIZE_AT + 4] = struct.pack("<I", 10_000)
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError):
        read_recording(path)


def test_sox_reads_it(tmp_path: Path) -> None:
    line, clock, path = timeline(tmp_path)
    line.agent_audio(frame(0x20, RATE))
    clock.advance(1.0)
    line.close()
    info = subprocess.run(["soxi", str(path)], capture_output=True, text=True, timeout=30, check=True)
    assert "Channels       : 2" in info.stdout and "Sample Rate    : 8000" in info.stdout
    assert "u-law" in info.stdout and "00:00:01.00" in info.stdout
