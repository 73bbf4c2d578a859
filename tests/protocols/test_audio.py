"""G.711, stateful transcoding μ-law 8 kHz ⇄ PCM16 24 kHz, framing and WAV reading (the FIR itself: test_resample.py)."""

from __future__ import annotations

import numpy as np
import pytest

from patterd.protocols.audio import (
    FRAME_BYTES,
    FrameSplitter,
    Pcm24ToUlaw,
    Resampler,
    UlawToPcm24,
    pcm16_to_ulaw,
    pcm16_to_wav,
    rms_pcm16,
    silence_ulaw,
    ulaw_to_pcm16,
    wav_to_ulaw8k,
)


def sweep(
    rate: int, secs: float = 1.0, f0: float = 100.0, f1: float = 3000.0, level: float = 8000
) -> np.ndarray:
    t = np.arange(int(rate * secs)) / rate
    return (np.sin(2 * np.pi * (f0 * t + (f1 - f0) / (2 * secs) * t**2)) * level).astype("<i2")


def snr_db(ref: np.ndarray, got: np.ndarray, skip: int) -> float:
    n = min(len(ref), len(got))
    r, g = ref[skip:n].astype(float), got[skip:n].astype(float)
    return float(10 * np.log10(np.sum(r**2) / max(np.sum((r - g) ** 2), 1e-9)))


def test_ulaw_round_trip_and_silence() -> None:
    pcm = sweep(8000).tobytes()
    back = np.frombuffer(ulaw_to_pcm16(pcm16_to_ulaw(pcm)), "<i2")
    assert snr_db(np.frombuffer(pcm, "<i2"), back, 0) > 30  # G.711's own quantization
    assert rms_pcm16(ulaw_to_pcm16(silence_ulaw(20))) == 0
    assert len(silence_ulaw(20)) == FRAME_BYTES


def test_upsampling_in_frames_is_clean_and_seamless() -> None:
    src = sweep(8000)
    up = UlawToPcm24()
    ulaw = pcm16_to_ulaw(src.tobytes())
    outs = [up.process(ulaw[i : i + FRAME_BYTES]) for i in range(0, len(ulaw), FRAME_BYTES)]
    assert {len(o) for o in outs} == {6 * FRAME_BYTES}  # every 20 ms frame gives one 20 ms frame, none held
    got = np.frombuffer(b"".join(outs) + up.flush(), "<i2")
    assert len(got) == 3 * len(src) + 48  # + the filter's 2 ms tail
    # Against the same sweep generated directly at 24 kHz, 2 ms later: only G.711 noise is left.
    assert snr_db(sweep(24000), got[48:], 240) > 30
    # No clicks at frame edges: no jump between neighbouring samples bigger than the signal allows.
    assert np.max(np.abs(np.diff(got[240:-240].astype(int)))) < 8000 * 2 * np.pi * 3000 / 24000 * 1.3


def test_downsampling_any_chunk_sizes_including_odd_bytes() -> None:
    src = sweep(24000).tobytes()
    down = Pcm24ToUlaw()
    sizes = [1, 777, 3, 960, 4801]
    out, i, k = [], 0, 0
    while i < len(src):
        n = sizes[k % len(sizes)]
        out.append(down.process(src[i : i + n]))
        i, k = i + n, k + 1
    out.append(down.flush())
    got = np.frombuffer(ulaw_to_pcm16(b"".join(out)), "<i2")
    assert len(got) == 8000 + 16
    assert snr_db(sweep(8000), got[16:], 80) > 30


def test_each_20ms_engine_delta_gives_one_carrier_frame_at_once() -> None:
    src = sweep(24000, 0.5).tobytes()
    down = Pcm24ToUlaw()
    assert [len(down.process(src[i : i + 960])) for i in range(0, len(src), 960)] == [FRAME_BYTES] * 25


def test_downsampling_filters_what_the_phone_band_cannot_carry() -> None:
    t = np.arange(24000) / 24000
    tone_6k = (np.sin(2 * np.pi * 6000 * t) * 8000).astype("<i2").tobytes()
    down = Pcm24ToUlaw()
    got = np.frombuffer(ulaw_to_pcm16(down.process(tone_6k) + down.flush()), "<i2")
    assert rms_pcm16(got[400:].tobytes()) < 80  # aliasing would fold it to 2 kHz at full level (~5600)


def test_reset_drops_pending_audio() -> None:
    down = Pcm24ToUlaw()
    down.process(b"\x10\x20" * 4800 + b"\x01")
    down.reset()
    assert down.flush() == b""


def test_each_response_starts_a_fresh_filter_and_none_is_held_between() -> None:
    src = sweep(24000, 0.3).tobytes()
    fresh = Pcm24ToUlaw()
    first = fresh.process(src) + fresh.flush()
    down = Pcm24ToUlaw()
    down.process(sweep(24000, 0.2).tobytes())
    down.flush()
    assert down._fir is None  # no resampler memory while the agent is silent
    assert down.process(src) + down.flush() == first  # nothing of the last response leaks in


def test_frame_splitter() -> None:
    split = FrameSplitter()
    assert split.push(b"\x00" * 100) == []
    frames = split.push(b"\x00" * 300)
    assert [len(f) for f in frames] == [160, 160] and split.flush() == [b"\x00" * 80 + b"\xff" * 80]


@pytest.mark.parametrize(
    ("rate_in", "rate_out"), [(8000, 24000), (24000, 8000), (8000, 16000), (16000, 8000), (22050, 8000)]
)
def test_resampler_whole_buffer_is_exact_length_and_aligned(rate_in: int, rate_out: int) -> None:
    # FIR ratios drop the filter's ramp-in and append its tail; other ratios go through soxr.
    out = np.frombuffer(Resampler(rate_in, rate_out).process(sweep(rate_in).tobytes(), last=True), "<i2")
    assert len(out) == rate_out
    assert snr_db(sweep(rate_out), out, rate_out // 100) > 35


def test_streaming_resampler_holds_nothing_but_the_ramp_in() -> None:
    stream = Resampler(8000, 16000)
    frames = [stream.process(sweep(8000, 0.02, level=1000).tobytes()) for _ in range(5)]
    assert [len(f) for f in frames] == [640 - 64, 640, 640, 640, 640]  # 2 ms ramp-in dropped once


def test_wav_to_ulaw8k_resamples() -> None:
    wav = pcm16_to_wav(sweep(24000, 0.5).tobytes(), 24000)
    assert len(wav_to_ulaw8k(wav)) == 4000
