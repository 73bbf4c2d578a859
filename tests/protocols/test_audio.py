"""G.711, stateful transcoding μ-law 8 kHz ⇄ PCM16 24 kHz, framing and WAV reading."""

from __future__ import annotations

import numpy as np

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
    out = (
        b"".join(up.process(ulaw[i : i + FRAME_BYTES]) for i in range(0, len(ulaw), FRAME_BYTES)) + up.flush()
    )
    got = np.frombuffer(out, "<i2")
    assert len(got) == 3 * len(src)
    # Against the same sweep generated directly at 24 kHz: only G.711 noise is left.
    assert snr_db(sweep(24000), got, 240) > 30
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
    assert abs(len(got) - 8000) <= 1
    assert snr_db(sweep(8000), got, 80) > 30


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
    assert down._stream is None  # no resampler memory while the agent is silent
    assert down.process(src) + down.flush() == first  # nothing of the last response leaks in


def test_frame_splitter_and_resampler() -> None:
    split = FrameSplitter()
    assert split.push(b"\x00" * 100) == []
    frames = split.push(b"\x00" * 300)
    assert [len(f) for f in frames] == [160, 160] and split.flush() == [b"\x00" * 80 + b"\xff" * 80]
    assert len(Resampler(16000, 8000).process(b"\x00\x00" * 1600, last=True)) == 1600


def test_wav_to_ulaw8k_resamples() -> None:
    wav = pcm16_to_wav(sweep(24000, 0.5).tobytes(), 24000)
    assert len(wav_to_ulaw8k(wav)) == 4000
