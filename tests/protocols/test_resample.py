"""The zero-hold FIR resampler, always fed frame by frame: delay, response, frame counts, state across frames."""

from __future__ import annotations

import numpy as np
import pytest

from patterd.protocols.resample import GROUP_DELAY_S, FirResampler, telephony_taps

RATIOS = [(8000, 24000), (24000, 8000), (8000, 16000), (16000, 8000)]
PASS_FLAT_DB = 0.1  # stated flatness from 100 Hz to 3 kHz
EDGE_DB = -2.5  # the least gain allowed at 3.4 kHz (measured: -2.1 dB)
STOP_DB = -50.0  # from 4 kHz (the 8 kHz side's Nyquist) up


def frame_len(rate: int) -> int:
    return rate // 50  # samples per 20 ms


def feed(res: FirResampler, x: np.ndarray, sizes: list[int]) -> tuple[np.ndarray, list[int]]:
    """x cut into chunks of `sizes` (cycled): the joined output and each call's output length."""
    outs, i, k = [], 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        outs.append(res.process(x[i : i + n].astype("<i2").tobytes()))
        i, k = i + n, k + 1
    return np.frombuffer(b"".join(outs), "<i2"), [len(o) // 2 for o in outs]


def tone(rate: int, hz: float, secs: float, level: float = 16000) -> np.ndarray:
    return np.round(np.sin(2 * np.pi * hz * np.arange(int(rate * secs)) / rate) * level)


def impulse_response(rate_in: int, rate_out: int) -> np.ndarray:
    """The whole resampler's response at the high rate, measured through 20 ms frames.

    Upsampling, one impulse gives it directly (divided by the factor). Downsampling keeps every
    factor-th sample, so impulses at each input phase are fed and their outputs interleaved.
    """
    n = frame_len(rate_in)
    if rate_out > rate_in:
        x = np.zeros(4 * n)
        x[n] = 1000
        y, _ = feed(FirResampler(rate_in, rate_out), x, [n])
        factor = rate_out // rate_in
        return y[n * factor : n * factor + 40 * factor].astype(float) / 1000 / factor
    factor = rate_in // rate_out
    h = np.zeros(3 * n)
    for phase in range(factor):
        x = np.zeros(4 * n)
        x[n + phase] = 30000
        y, _ = feed(FirResampler(rate_in, rate_out), x, [n])
        # Output m is input time factor·m; the impulse at n + phase shows at factor·m - (n + phase).
        for m in range(len(y)):
            t = factor * m - n - phase
            if 0 <= t < len(h):
                h[t] = y[m] / 30000
    return h


def gain_db(h: np.ndarray, rate: int, hz: float) -> float:
    k = np.arange(len(h))
    return float(20 * np.log10(abs(np.sum(h * np.exp(-2j * np.pi * hz * k / rate))) + 1e-12))


@pytest.mark.parametrize(("rate_in", "rate_out"), RATIOS)
def test_one_output_frame_for_every_input_frame(rate_in: int, rate_out: int) -> None:
    res = FirResampler(rate_in, rate_out)
    x = tone(rate_in, 440, 0.5)
    _, lengths = feed(res, x, [frame_len(rate_in)])
    assert lengths == [frame_len(rate_out)] * 25  # from the very first frame: nothing held back


@pytest.mark.parametrize(("rate_in", "rate_out"), RATIOS)
def test_impulse_comes_out_after_the_group_delay(rate_in: int, rate_out: int) -> None:
    h = impulse_response(rate_in, rate_out)
    high = max(rate_in, rate_out)
    peak_ms = int(np.argmax(np.abs(h))) / high * 1000
    assert peak_ms == pytest.approx(GROUP_DELAY_S * 1000, abs=0.05)
    assert peak_ms <= 2.0
    # Linear phase: the response is symmetric about its peak, so every frequency is delayed 2 ms.
    centre = int(np.argmax(np.abs(h)))
    assert np.allclose(h[: 2 * centre + 1], h[: 2 * centre + 1][::-1], atol=2e-3)


@pytest.mark.parametrize(("rate_in", "rate_out"), RATIOS)
def test_frequency_response_passband_and_stopband(rate_in: int, rate_out: int) -> None:
    h = impulse_response(rate_in, rate_out)
    high = max(rate_in, rate_out)
    passband = [gain_db(h, high, f) for f in range(100, 3001, 100)]
    assert max(abs(g) for g in passband) < PASS_FLAT_DB
    assert EDGE_DB < gain_db(h, high, 3400) < 0
    stopband = [gain_db(h, high, f) for f in range(4000, high // 2 + 1, 25)]
    assert max(stopband) < STOP_DB


@pytest.mark.parametrize("hz", [4000, 4500, 6000, 7900, 9000, 11900])
def test_24k_to_8k_filters_what_the_engine_holds_above_4k(hz: int) -> None:
    # A tone above 4 kHz would fold back into the phone band at full level; it must come out ≥ 50 dB down.
    y, _ = feed(FirResampler(24000, 8000), tone(24000, hz, 0.3), [480])
    rms = float(np.sqrt(np.mean(y[80:].astype(float) ** 2)))
    assert 20 * np.log10(max(rms, 1e-3) / (16000 / np.sqrt(2))) < STOP_DB


@pytest.mark.parametrize("hz", [300, 1000, 3000, 3900])
def test_8k_to_24k_images_are_filtered(hz: int) -> None:
    y, _ = feed(FirResampler(8000, 24000), tone(8000, hz, 0.5), [160])
    seg = y[2400:].astype(float)
    window = np.kaiser(len(seg), 14)
    spectrum = np.abs(np.fft.rfft(seg * window))
    freqs = np.fft.rfftfreq(len(seg), 1 / 24000)
    # The reference: the same tone made directly at 24 kHz (the level the caller's tone had).
    ref = np.abs(np.fft.rfft(tone(24000, hz, len(seg) / 24000) * window)).max()
    images = spectrum[freqs >= 4050]  # the first image of a 3.9 kHz tone is at 4.1 kHz
    assert 20 * np.log10(images.max() / ref) < STOP_DB


@pytest.mark.parametrize(("rate_in", "rate_out"), RATIOS)
def test_a_sine_fed_in_frames_equals_the_same_sine_fed_whole(rate_in: int, rate_out: int) -> None:
    x = tone(rate_in, 1234.5, 1.0)
    whole, _ = feed(FirResampler(rate_in, rate_out), x, [len(x)])
    framed, _ = feed(FirResampler(rate_in, rate_out), x, [frame_len(rate_in)])
    assert len(framed) == len(whole) == len(x) * rate_out // rate_in
    diff = np.abs(framed.astype(int) - whole.astype(int))
    assert diff.max() <= 1 and np.mean(diff) < 0.01  # float32 sums in a different order: rare 1-LSB rounding


@pytest.mark.parametrize(("rate_in", "rate_out"), RATIOS)
def test_arbitrary_frame_sizes_give_the_same_signal(rate_in: int, rate_out: int) -> None:
    x = tone(rate_in, 777, 0.5) + tone(rate_in, 2500, 0.5, 4000)
    whole, _ = feed(FirResampler(rate_in, rate_out), x, [len(x)])
    sizes = [1, 7, 159, 160, 2, 161, 333, 480, 5, 1000, 3]
    odd, lengths = feed(FirResampler(rate_in, rate_out), x, sizes)
    assert len(odd) == len(whole)
    assert np.abs(odd.astype(int) - whole.astype(int)).max() <= 1
    if rate_out > rate_in:  # upsampling: every call gives exactly n × factor
        factor = rate_out // rate_in
        assert lengths[: len(sizes)] == [n * factor for n in sizes]


def reference(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """The same filter done the plain way in float64: zero-stuff or keep every factor-th sample of a
    full convolution with the taps, then round and saturate to 16 bits."""
    h = telephony_taps(min(rate_in, rate_out), max(rate_in, rate_out))
    if rate_out > rate_in:
        factor = rate_out // rate_in
        stuffed = np.zeros(len(x) * factor)
        stuffed[::factor] = x
        y = np.convolve(stuffed, h * factor)[: len(stuffed)]
    else:
        y = np.convolve(x, h)[: len(x)][:: rate_in // rate_out]
    return np.clip(np.rint(y), -32768, 32767)


@pytest.mark.parametrize(("rate_in", "rate_out"), RATIOS)
@pytest.mark.parametrize("sizes", [[0], [1, 7, 159, 2, 161, 333, 5, 1000, 3]], ids=["20ms", "odd"])
def test_output_matches_a_float64_convolution_rounded_and_saturated(
    rate_in: int, rate_out: int, sizes: list[int]
) -> None:
    # A full-scale square wave overshoots past 16 bits after the filter (Gibbs): those samples must
    # saturate, not wrap round to the other sign; speech-like tones underneath check the rounding.
    n = frame_len(rate_in)
    t = np.arange(rate_in // 5)
    square = np.where((t // (rate_in // 500)) % 2, -32768, 32767).astype(float)
    x = np.concatenate((square, tone(rate_in, 440, 0.2, 12000) + tone(rate_in, 2900, 0.2, 9000)))
    got, _ = feed(FirResampler(rate_in, rate_out), x, [n] if sizes == [0] else sizes)
    want = reference(x, rate_in, rate_out)
    assert len(got) == len(want)
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and np.mean(diff) < 0.01  # float32 sums: rare 1-LSB rounding differences
    assert got.max() == 32767 and got.min() == -32768  # the overshoot reached both rails ...
    assert np.array_equal(got[want == 32767], want[want == 32767])  # ... and stayed there


def test_tail_flushes_the_delay_and_resets() -> None:
    res = FirResampler(24000, 8000)
    x = tone(24000, 500, 0.1)
    y, _ = feed(res, x, [480])
    tail = np.frombuffer(res.tail(), "<i2")
    assert len(y) + len(tail) == 800 + 16  # 2 ms of output still in the filter came out
    assert np.abs(tail).max() > 100
    fresh = np.frombuffer(FirResampler(24000, 8000).process(x[:480].astype("<i2").tobytes()), "<i2")
    assert np.array_equal(np.frombuffer(res.process(x[:480].astype("<i2").tobytes()), "<i2"), fresh)
