"""Benchmark: CPU per call-second of μ-law 8 kHz ⇄ PCM16 24 kHz transcoding: patterd's FIR vs soxr (each quality) vs audioop.ratecv.

Run: `python bench/transcode.py`. One call-second is 50 caller frames up (160 B μ-law → PCM24)
and 50 frames of agent audio down (960 B PCM24 → μ-law), each including the G.711 step.
Quality: SNR against a 100-3000 Hz sweep generated directly at the target rate (after aligning
by the method's delay), the level of a 6 kHz tone after 24→8 kHz (aliasing; lower is better),
the audio held back at the end of the sweep (not returned yet), and the delay of what is returned.
CPU is process time (`time.process_time`), the best of 5 runs: the machine is shared.

First, issue 14's per-frame budget (≤ 10 µs per 20 ms frame): FirResampler alone for each ratio and
the whole per-frame paths the daemon runs (UlawToPcm24, Pcm24ToUlaw, audio.Resampler 8 ⇄ 16 kHz),
each paired with `MatmulFir`, the frame path as it was before (commit ae8da71), in the same process:
blocks of frames alternate A B A B, and each side reports the min and median µs per frame.
"""

from __future__ import annotations

import os
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import soxr

from patterd.protocols.audio import Pcm24ToUlaw, Resampler, UlawToPcm24, pcm16_to_ulaw, ulaw_to_pcm16
from patterd.protocols.resample import FirResampler, _clip, _design

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


class MatmulFir:
    """The reference: FirResampler as it was before (ae8da71), same taps and results (±1 LSB).

    A 20 ms frame: one int16 → float32 copy of [history | frame], `np.matmul` over the overlapping
    rows as a strided view, then clip and rint(casting="unsafe") into int16, numpy scalars as the clip
    bounds. Any other chunk: a matmul of every output's window (a strided view) with the taps.
    """

    __slots__ = ("_buf", "_count", "_d", "_frame", "_out", "_pairs", "_w", "_xi", "_xm", "_y", "_yflat")

    def __init__(self, in_rate: int, out_rate: int) -> None:
        d = self._d = _design(in_rate, out_rate)
        self._frame = in_rate // 50
        self._xi = np.zeros(d.span + self._frame, dtype="<i2")
        self._xm = self._xi.data.cast("B")
        self._buf = np.zeros(d.span + self._frame, dtype=np.float32)
        rows = self._frame // d.row
        self._pairs = np.ndarray((rows, d.span + d.row), np.float32, self._buf, 0, (d.row * 4, 4))
        self._y = np.empty((rows, d.t.shape[1]), dtype=np.float32)
        self._yflat = self._y.reshape(-1)
        self._out = np.empty(self._yflat.shape, dtype="<i2")
        self._count = 0
        # The window weights, oldest sample first (up: a column per phase): the Toeplitz block's first row.
        w = d.t[: d.span + 1, : d.up]
        self._w = np.ascontiguousarray(w if d.up > 1 else w.ravel())

    def process(self, pcm: bytes) -> bytes:
        n = len(pcm) // 2
        hist = self._d.span
        if n == self._frame and n and self._count == 0:
            xm = self._xm
            xm[2 * hist :] = pcm
            np.copyto(self._buf, self._xi)
            xm[: 2 * hist] = xm[2 * n :]
            np.matmul(self._pairs, self._d.t, out=self._y)
            y, out = self._yflat, self._out
            _clip(y, _OLD_LO, _OLD_HI, out=y)
            np.rint(y, out=out, casting="unsafe")
            return out.tobytes()
        if n == 0:
            return b""
        xh = np.concatenate((self._xi[:hist], np.frombuffer(pcm, dtype="<i2")), dtype=np.float32)
        self._xi[:hist] = xh[-hist:]
        if self._d.up > 1:
            y = np.ascontiguousarray(np.ndarray((n, hist + 1), np.float32, xh, 0, (4, 4)) @ self._w).ravel()
        else:
            factor = self._d.down
            first = (-self._count) % factor
            self._count = (self._count + n) % factor
            outs = (n - first + factor - 1) // factor if n > first else 0
            windows = np.ndarray((outs, hist + 1), np.float32, xh, first * 4, (4 * factor, 4))
            y = np.asarray(windows @ self._w, dtype=np.float32)
        _clip(y, _OLD_LO, _OLD_HI, out=y)
        return np.rint(y).astype("<i2").tobytes()


_OLD_HI, _OLD_LO = np.float32(32767), np.float32(-32768)


def with_reference(path: object, in_rate: int, out_rate: int) -> object:
    """`path` (a daemon transcoder) with MatmulFir in place of its FirResampler: the same wrapper code."""
    setattr(path, "_fir", MatmulFir(in_rate, out_rate))  # noqa: B010 - the slot is typed FirResampler
    return path


def paired_us(fns: dict[str, Fn], frame: bytes, rounds: int = 15, n: int = 2000) -> dict[str, list[float]]:
    """µs of CPU per call for each fn, timed in alternating blocks of n calls (A B A B ...)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.process_time()
            for _ in range(n):
                fn(frame)
            times[name].append((time.process_time() - start) / n * 1e6)
    return times


def per_frame_budget() -> None:
    """Issue 14's budget, paired before/after: each ratio alone, then the daemon's whole per-frame paths."""
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"Per 20 ms of audio, µs of CPU, min / median of 15 alternating blocks (load average {load}):")
    print(f"  {'path':34} {'before (ae8da71)':>17} {'now':>15} {'now/before':>10}")
    cases: list[tuple[str, bytes, Fn, Fn]] = []
    for in_rate, out_rate in ((8000, 24000), (24000, 8000), (8000, 16000), (16000, 8000)):
        frame = sweep(in_rate)[: in_rate // 50].tobytes()
        name = f"FirResampler {in_rate // 1000} → {out_rate // 1000} kHz"
        cases.append(
            (name, frame, MatmulFir(in_rate, out_rate).process, FirResampler(in_rate, out_rate).process)
        )
    ulaw = pcm16_to_ulaw(sweep(8000)[:160].tobytes())
    pcm24 = sweep(24000)[:480].tobytes()
    old_up = with_reference(UlawToPcm24(), 8000, 24000)
    old_down = with_reference(Pcm24ToUlaw(), 24000, 8000)
    cases.append(("UlawToPcm24 (μ-law 8 → 24)", ulaw, old_up.process, UlawToPcm24().process))  # type: ignore[attr-defined]
    cases.append(("Pcm24ToUlaw (24 → μ-law 8)", pcm24, old_down.process, Pcm24ToUlaw().process))  # type: ignore[attr-defined]
    for in_rate, out_rate in ((8000, 16000), (16000, 8000)):
        frame = sweep(in_rate)[: in_rate // 50].tobytes()
        old = with_reference(Resampler(in_rate, out_rate), in_rate, out_rate)
        name = f"Resampler {in_rate // 1000} → {out_rate // 1000} kHz"
        cases.append((name, frame, old.process, Resampler(in_rate, out_rate).process))  # type: ignore[attr-defined]
    # Engine deltas and TTS bodies are not always whole frames: 481 samples (the phase moves every
    # call), and 100 ms at once.
    for size in (962, 4800):
        old = with_reference(Pcm24ToUlaw(), 24000, 8000)
        chunk = sweep(24000)[: size // 2].tobytes()
        cases.append((f"Pcm24ToUlaw, {size} B deltas", chunk, old.process, Pcm24ToUlaw().process))  # type: ignore[attr-defined]
    for name, chunk, before, now in cases:
        per_frame = 960 if name.startswith("Pcm24ToUlaw,") else len(chunk)  # bytes in 20 ms at the input rate
        t = paired_us({"before": before, "now": now}, chunk, n=max(200, 2000 * per_frame // len(chunk)))
        scale = per_frame / len(chunk)
        b_min, b_med = min(t["before"]) * scale, statistics.median(t["before"]) * scale
        n_min, n_med = min(t["now"]) * scale, statistics.median(t["now"]) * scale
        print(f"  {name:34} {b_min:7.2f} / {b_med:7.2f} {n_min:6.2f} / {n_med:6.2f} {n_med / b_med:10.2f}")
    print()


def main() -> None:
    per_frame_budget()
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
