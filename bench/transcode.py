"""Benchmark: CPU per call-second of μ-law 8 kHz ⇄ PCM16 24 kHz transcoding: patterd's FIR vs soxr (each quality) vs audioop.ratecv.

Run: `python bench/transcode.py`. One call-second is 50 caller frames up (160 B μ-law → PCM24)
and 50 frames of agent audio down (960 B PCM24 → μ-law), each including the G.711 step.
Quality: SNR against a 100-3000 Hz sweep generated directly at the target rate (after aligning
by the method's delay), the level of a 6 kHz tone after 24→8 kHz (aliasing; lower is better),
the audio held back at the end of the sweep (not returned yet), and the delay of what is returned.
CPU is process time (`time.process_time`), the best of 5 runs: the machine is shared.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import numpy as np
import soxr

from patterd.protocols.audio import Pcm24ToUlaw, UlawToPcm24, pcm16_to_ulaw, ulaw_to_pcm16
from patterd.protocols.resample import FirResampler

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

Fn = Callable[[bytes], bytes]


class RatecvUp:
    """μ-law 8 kHz → PCM 24 kHz with audioop.ratecv carrying its state."""

    def __init__(self) -> None:
        self.state: tuple[int, tuple[tuple[int, int], ...]] | None = None

    def process(self, ulaw: bytes) -> bytes:
        out, self.state = audioop.ratecv(audioop.ulaw2lin(ulaw, 2), 2, 1, 8000, 24000, self.state)
        return bytes(out)


class RatecvDown:
    """PCM 24 kHz → μ-law 8 kHz with audioop.ratecv carrying its state."""

    def __init__(self) -> None:
        self.state: tuple[int, tuple[tuple[int, int], ...]] | None = None

    def process(self, pcm: bytes) -> bytes:
        out, self.state = audioop.ratecv(pcm, 2, 1, 24000, 8000, self.state)
        return bytes(audioop.lin2ulaw(out, 2))


def sweep(rate: int, secs: float = 2.0) -> np.ndarray:
    t = np.arange(int(rate * secs)) / rate
    return (np.sin(2 * np.pi * (100 * t + 2900 / (2 * secs) * t**2)) * 8000).astype("<i2")


class SoxrUp:
    """μ-law 8 kHz → PCM 24 kHz with a soxr stream (what patterd used before the FIR)."""

    def __init__(self, quality: str) -> None:
        self.stream = soxr.ResampleStream(8000, 24000, 1, dtype="int16", quality=quality)

    def process(self, ulaw: bytes) -> bytes:
        return bytes(self.stream.resample_chunk(np.frombuffer(audioop.ulaw2lin(ulaw, 2), "<i2")).tobytes())


class SoxrDown:
    """PCM 24 kHz → μ-law 8 kHz with a soxr stream."""

    def __init__(self, quality: str) -> None:
        self.stream = soxr.ResampleStream(24000, 8000, 1, dtype="int16", quality=quality)

    def process(self, pcm: bytes) -> bytes:
        return bytes(audioop.lin2ulaw(self.stream.resample_chunk(np.frombuffer(pcm, "<i2")), 2))


def snr_at(ref: np.ndarray, got: np.ndarray, skip: int, lag: int) -> float:
    got = got[lag:]
    n = min(len(ref), len(got))
    r, g = ref[skip:n].astype(float), got[skip:n].astype(float)
    return float(10 * np.log10(np.sum(r**2) / max(np.sum((r - g) ** 2), 1e-9)))


def snr(ref: np.ndarray, got: np.ndarray, skip: int, max_lag: int) -> tuple[float, int]:
    """Best SNR over the output delayed by 0..max_lag samples, and that delay."""
    return max((snr_at(ref, got, skip, lag), lag) for lag in range(max_lag + 1))


def run(fn: Fn, data: bytes, size: int) -> bytes:
    return b"".join(fn(data[i : i + size]) for i in range(0, len(data), size))


def cpu_us(fn: Fn, frame: bytes, n: int = 20000) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for _ in range(n):
            fn(frame)
        best = min(best, (time.process_time() - start) / n * 1e6)
    return best


def _soxr_up(quality: str) -> Callable[[], Fn]:
    return lambda: SoxrUp(quality).process


def _soxr_down(quality: str) -> Callable[[], Fn]:
    return lambda: SoxrDown(quality).process


def resampler_alone() -> None:
    """FirResampler by itself, PCM16 in and out (issue 14's budget: ≤ 10 µs per 20 ms frame)."""
    print("FirResampler alone, one 20 ms PCM16 frame per call (best of 5):")
    for in_rate, out_rate in ((8000, 24000), (24000, 8000), (8000, 16000), (16000, 8000)):
        frame = sweep(in_rate)[: in_rate // 50].tobytes()
        print(
            f"  {in_rate // 1000:2} → {out_rate // 1000:2} kHz {cpu_us(FirResampler(in_rate, out_rate).process, frame):6.2f} µs"
        )
    print()


def main() -> None:
    resampler_alone()
    ulaw8 = pcm16_to_ulaw(sweep(8000).tobytes())
    pcm24 = sweep(24000).tobytes()
    t = np.arange(48000) / 24000
    tone6k = (np.sin(2 * np.pi * 6000 * t) * 8000).astype("<i2").tobytes()
    makers: list[tuple[str, Callable[[], Fn], Callable[[], Fn]]] = [
        ("fir", lambda: UlawToPcm24().process, lambda: Pcm24ToUlaw().process)
    ]
    makers += [(f"soxr {q}", _soxr_up(q), _soxr_down(q)) for q in ("QQ", "LQ", "MQ", "HQ")]
    makers.append(("ratecv", lambda: RatecvUp().process, lambda: RatecvDown().process))
    print(
        f"{'method':9} {'up µs/frame':>11} {'down µs/frame':>13} {'µs/call-s':>9} {'%core/call':>10} "
        f"{'up SNR dB':>9} {'down SNR dB':>11} {'6k alias dB':>11} {'held ms':>7} {'delay ms':>8}"
    )
    for name, make_up, make_down in makers:
        up_us = cpu_us(make_up(), ulaw8[:160])
        down_us = cpu_us(make_down(), pcm24[:960])
        per_call_s = 50 * (up_us + down_us)
        up_out = np.frombuffer(run(make_up(), ulaw8, 160), "<i2")
        down_out = np.frombuffer(ulaw_to_pcm16(run(make_down(), pcm24, 960)), "<i2")
        alias = np.frombuffer(ulaw_to_pcm16(run(make_down(), tone6k, 960)), "<i2")[800:]
        alias_db = 20 * np.log10(
            max(1.0, float(np.sqrt(np.mean(alias.astype(float) ** 2)))) / (8000 / np.sqrt(2))
        )
        held_ms = (len(ulaw8) * 3 - len(up_out)) / 24
        up_snr, up_lag = snr(sweep(24000), up_out, 2400, 240)
        down_snr, _ = snr(sweep(8000), down_out, 800, 80)
        print(
            f"{name:9} {up_us:11.2f} {down_us:13.2f} {per_call_s:9.0f} {per_call_s / 1e4:10.3f} "
            f"{up_snr:9.1f} {down_snr:11.1f} {alias_db:11.1f} {held_ms:7.1f} {up_lag / 24:8.1f}"
        )


if __name__ == "__main__":
    main()
