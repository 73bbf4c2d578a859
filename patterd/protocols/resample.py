"""Zero-hold polyphase FIR resampling for the telephony ratios (8 ⇄ 24 kHz, 8 ⇄ 16 kHz).

Why not soxr's streaming resampler: it releases audio in blocks (fed 20 ms frames, 8 → 24 kHz
returns 0, 0, 900, 900, 0, 900 … samples), so caller audio reaches the engine up to ~40 ms late
and the agent's frames leave in pairs. Here every call returns exactly `n × factor` samples
upsampling (`n // factor` downsampling, the remainder carried to the next call): nothing is held
but the filter's own group delay.

The filter is one linear-phase Kaiser-windowed sinc, designed once per ratio at the high rate,
2.0 ms group delay (97 taps at 24 kHz, 65 at 16 kHz). Measured response: flat within 0.05 dB to
3 kHz, -2.1 dB at 3.4 kHz, ≥ 58 dB down from 4 kHz (the 8 kHz side's Nyquist) up. A minimum-phase
filter twice as long would be flat to 3.4 kHz with ≥ 70 dB and 0.3-1.2 ms of (frequency-dependent)
delay, at twice the CPU; a linear-phase filter flat to 3.4 kHz needs ≥ 4 ms.

Speed: numpy's per-call overhead (~0.5 µs) costs more than the arithmetic, so the work is one
matrix product per chunk. A 20 ms frame is cut into rows of R input samples (R ≥ the filter's
span in input samples); a strided view pairs each row with the one before it (no copy), and the
product with the filter's 2R-row Toeplitz block gives each row's outputs, already interleaved.
Chunks that are not whole rows (engine deltas cut anywhere) take a strided window path that
computes the same sums.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]

GROUP_DELAY_S = 0.002  # the filter's delay: 48 samples at 24 kHz, 32 at 16 kHz
CUTOFF = 0.8875  # of the low rate's Nyquist: 3550 Hz for 8 kHz (-6 dB point)
KAISER_BETA = 5.5  # ≈ 58 dB sidelobes for this length and cutoff


def kaiser_lowpass(rate: int, cutoff_hz: float, ntaps: int, beta: float = KAISER_BETA) -> F64:
    """Linear-phase low-pass FIR taps (windowed sinc, unity DC gain) at `rate`."""
    n = np.arange(ntaps) - (ntaps - 1) / 2
    h = 2 * cutoff_hz / rate * np.sinc(2 * cutoff_hz / rate * n) * np.kaiser(ntaps, beta)
    return np.asarray(h / h.sum(), dtype=np.float64)


def telephony_taps(low_rate: int, high_rate: int) -> F64:
    """The anti-alias / anti-image filter for low ⇄ high, at the high rate."""
    half = round(GROUP_DELAY_S * high_rate)
    return kaiser_lowpass(high_rate, CUTOFF * low_rate / 2, 2 * half + 1)


def _row_len(span: int, unit: int) -> int:
    """Smallest row of input samples that covers the filter's span, is a multiple of `unit`,
    and divides a 20 ms frame of 8 kHz-based input when it can (so frames take the fast path)."""
    row = -(-max(span, 1) // unit) * unit
    for frame in (160 * unit, 480, 320):
        for r in range(row, frame + 1, unit):
            if frame % r == 0:
                return r
    return row


_HI, _LO = np.float32(32767), np.float32(-32768)  # numpy scalars: a Python int is converted per call


def _to_int16(y: F32) -> bytes:
    np.rint(y, out=y)
    # Two ufuncs: np.clip's Python wrapper alone costs more than the filter's arithmetic.
    np.minimum(y, _HI, out=y)
    np.maximum(y, _LO, out=y)
    return y.astype("<i2").tobytes()


class FirResampler:
    """Streaming 16-bit mono PCM resampler by an integer factor, no audio held beyond the filter delay.

    `process(pcm)` → bytes: n samples in → n × factor out (up), or every sample whose index is a
    multiple of the factor (down: n // factor per call when chunks are multiples of the factor).
    Filter state (the last R input samples) carries across calls, so audio cut into frames comes
    out exactly as if converted whole (up to ±1 LSB rounding).
    """

    __slots__ = ("_count", "_hist", "_row", "_span", "_t", "_w", "delay", "down", "in_rate", "out_rate", "up")

    def __init__(self, in_rate: int, out_rate: int) -> None:
        low, high = min(in_rate, out_rate), max(in_rate, out_rate)
        if high % low:
            raise ValueError(f"{in_rate} → {out_rate} Hz is not an integer ratio")
        self.in_rate, self.out_rate = in_rate, out_rate
        factor = high // low
        self.up = factor if out_rate >= in_rate else 1
        self.down = factor if in_rate > out_rate else 1
        h = telephony_taps(low, high)
        self.delay = round(GROUP_DELAY_S * out_rate)  # the filter's group delay in output samples
        if self.up > 1:
            # Polyphase: output phase p of input n is factor × Σ_k h[p + k·factor] x[n - k].
            phases = -(-len(h) // factor)
            h = np.concatenate((h, np.zeros(phases * factor - len(h)))) * factor
            span = phases - 1
            # w[i, p]: weight of window sample i (oldest first) for output phase p.
            w = np.ascontiguousarray(h.reshape(phases, factor)[::-1])
            row = _row_len(span, 1)
            t = np.zeros((2 * row, row * factor))
            for j in range(row):
                t[row + j - span : row + j + 1, j * factor : (j + 1) * factor] = w
        else:
            span = len(h) - 1
            w = np.ascontiguousarray(h[::-1])  # the taps reversed: weights of window samples, oldest first
            row = _row_len(span, factor)
            outs = row // factor
            t = np.zeros((2 * row, outs))
            for q in range(outs):
                t[row + q * factor - span : row + q * factor + 1, q] = w
        self._row = row
        self._span = span
        # float32: BLAS's single-precision products are faster and ~1e-3 LSB is plenty for 16-bit audio.
        self._w: F32 = w.astype(np.float32)
        # Rows [previous R samples | this row's R samples] @ _t: one row's outputs per row.
        self._t: F32 = np.ascontiguousarray(t, dtype=np.float32)
        self._hist: F32 = np.zeros(row, dtype=np.float32)  # the last `row` input samples
        self._count = 0  # input samples seen, modulo the down factor (output phase)

    def reset(self) -> None:
        """Forget the filter state (a new stream starts from silence)."""
        self._hist = np.zeros(self._row, dtype=np.float32)
        self._count = 0

    def process(self, pcm: bytes) -> bytes:
        """Resample one chunk of 16-bit LE samples (even length)."""
        x = np.frombuffer(pcm, dtype="<i2")
        n = len(x)
        if n == 0:
            return b""
        row = self._row
        xh = np.concatenate((self._hist, x))  # int16 promoted to float32 in the same copy
        self._hist = xh[-row:]
        if n % row == 0 and self._count == 0:
            # Overlapping rows straight over xh's memory (no copy): row c = samples [cR, cR + 2R).
            pairs = np.ndarray((n // row, 2 * row), np.float32, xh, 0, (row * 4, 4))
            return _to_int16((pairs @ self._t).ravel())
        return _to_int16(self._strided(xh, n))

    def _strided(self, xh: F32, n: int) -> F32:
        """Any chunk length or phase: the same sums through a strided window view."""
        row, span = self._row, self._span
        if self.up > 1:
            windows = np.ndarray((n, span + 1), np.float32, xh, (row - span) * 4, (4, 4))
            return np.ascontiguousarray(windows @ self._w).ravel()
        factor = self.down
        first = (-self._count) % factor
        self._count = (self._count + n) % factor
        outs = (n - first + factor - 1) // factor if n > first else 0
        if outs == 0:
            return np.zeros(0, dtype=np.float32)
        windows = np.ndarray((outs, span + 1), np.float32, xh, (row + first - span) * 4, (4 * factor, 4))
        return np.asarray(windows @ self._w, dtype=np.float32)

    def tail(self) -> bytes:
        """The filter's delayed tail: what silence would push out over one group delay (then reset)."""
        ahead = round(GROUP_DELAY_S * self.in_rate)
        ahead += (-(self._count + ahead)) % self.down  # end on an output boundary
        out = self.process(bytes(2 * ahead))
        self.reset()
        return out
