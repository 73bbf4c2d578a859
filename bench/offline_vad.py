"""Benchmark of vad.offline's detectors (webrtc, silero, energy) on noisy 8 kHz μ-law phone speech.

A scene is espeak-ng utterances (two voices) separated by silence, each gap holding a line click or a
cough; white, pink or babble noise is added at several RMS levels, then the whole is μ-law encoded.
Per detector and condition it prints frame accuracy, turns found of those wanted, turns split in two,
false starts (in the gaps) and of those how many came from a click or cough, and CPU µs per 20 ms frame.
Silero's threshold is tuned on a separate scene (other sentences, other noise seeds) first.
Run: python bench/offline_vad.py [--quick]
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from patterd.errors import ProviderError
from patterd.protocols.audio import FRAME_BYTES, FRAME_MS, pcm16_to_ulaw, ulaw_to_pcm16, wav_to_ulaw8k
from patterd.providers.offline_vad import OfflineVADOptions, OfflineVADStream, load_silero

TEST_SENTENCES = [
    "what are your opening hours",
    "i would like to book an appointment",
    "my name is john smith",
    "can i come in on tuesday",
    "where are you located",
    "thank you very much goodbye",
]
TUNE_SENTENCES = [
    "what time do you open tomorrow",
    "i need to speak to a person",
    "is the office open on saturday",
    "please call me back at five",
]
BABBLE_SENTENCES = [
    "the meeting moved to the second floor after lunch",
    "did you see the game last night it was close",
    "we are out of coffee again somebody should order more",
    "turn left at the bank and keep going past the school",
]
VOICES = [["-v", "en-us"], ["-v", "en-us+f3", "-s", "150"]]
# noise RMS in 16-bit PCM units per kind; the speech is about RMS 3200, so 300 is -20 dB SNR, 1000 -10 dB
LEVELS = {"white": (300, 1000, 2000), "pink": (300, 1000, 2000), "babble": (100, 300, 1000)}
Pcm = np.ndarray  # int16 / float64 sample arrays


def speak(text: str, args: list[str]) -> Pcm:
    wav = subprocess.run(["espeak-ng", "--stdout", *args, text], capture_output=True, check=True).stdout
    return np.frombuffer(ulaw_to_pcm16(wav_to_ulaw8k(wav)), dtype="<i2").astype(np.float64)


def trim(pcm: Pcm, floor: float = 200.0) -> Pcm:
    """Cut espeak's leading and trailing silence so the truth is the spoken part only."""
    loud = np.flatnonzero(np.abs(pcm) > floor)
    return pcm[loud[0] : loud[-1] + 1] if len(loud) else pcm


def click(rng: np.random.Generator) -> Pcm:
    """A line click: 30 ms of loud broadband crackle."""
    return rng.uniform(-14000, 14000, 8 * 30)


def cough(rng: np.random.Generator) -> Pcm:
    """A cough: 250 ms of low-passed noise with a sharp attack and exponential decay."""
    n = 8 * 250
    noise = np.convolve(rng.normal(0.0, 1.0, n), np.ones(4) / 4, mode="same")
    envelope = np.exp(-np.arange(n) / (8 * 60.0))
    return noise / np.std(noise) * 9000 * envelope


@dataclass
class Scene:
    """A mono 8 kHz signal with where its utterances and its distractors are, in frames."""

    pcm: Pcm
    utterances: list[tuple[int, int]] = field(default_factory=list)
    distractors: list[tuple[int, int]] = field(default_factory=list)


def scene(sentences: list[str], seed: int) -> Scene:
    rng = np.random.default_rng(seed)
    parts: list[Pcm] = []
    out = Scene(np.zeros(0))
    pos = 0

    def add(pcm: Pcm) -> tuple[int, int]:
        nonlocal pos
        parts.append(pcm)
        start, pos = pos, pos + len(pcm)
        return start // 160, -(-pos // 160)

    for i, voice in enumerate(v for v in VOICES for _ in sentences):
        text = sentences[i % len(sentences)]
        add(np.zeros(8 * int(rng.integers(500, 900))))
        out.distractors.append(add(click(rng) if i % 2 else cough(rng)))
        add(np.zeros(8 * int(rng.integers(500, 900))))
        out.utterances.append(add(trim(speak(text, voice))))
    add(np.zeros(8 * 1000))
    out.pcm = np.concatenate(parts)
    return out


def white(n: int, rng: np.random.Generator) -> Pcm:
    return rng.normal(0.0, 1.0, n)


def pink(n: int, rng: np.random.Generator) -> Pcm:
    """1/f noise: white noise shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.normal(0.0, 1.0, n))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
    return np.fft.irfft(spectrum, n)


def babble_source() -> Pcm:
    voices = [["-v", "en-us+m3"], ["-v", "en-gb"], ["-v", "en-us+f2"], ["-v", "en-us+m7"]]
    return np.concatenate([speak(t, v) for t, v in zip(BABBLE_SENTENCES, voices, strict=True)])


def babble(n: int, rng: np.random.Generator, source: Pcm) -> Pcm:
    """Four talkers at once: the babble source looped from four random offsets and summed."""
    tiled = np.tile(source, n // len(source) + 2)
    return sum((tiled[o : o + n] for o in rng.integers(0, len(source), 4)), np.zeros(n))


def to_ulaw(pcm: Pcm) -> bytes:
    return pcm16_to_ulaw(np.clip(np.round(pcm), -32768, 32767).astype("<i2").tobytes())


def with_noise(sc: Scene, kind: str, rms: int, seed: int, source: Pcm) -> bytes:
    if kind == "clean":
        return to_ulaw(sc.pcm)
    rng = np.random.default_rng(seed)
    n = len(sc.pcm)
    noise = white(n, rng) if kind == "white" else pink(n, rng) if kind == "pink" else babble(n, rng, source)
    return to_ulaw(sc.pcm + noise / np.sqrt(np.mean(noise**2)) * rms)


@dataclass
class Score:
    accuracy: float
    found: int
    wanted: int
    split: int
    false_starts: int
    from_distractor: int
    us_per_frame: float
    start_lags: list[int]  # ms from an utterance's first sample to its speech_start
    end_lags: list[int]  # ms from an utterance's last sample to the speech_end that closed it


def run(options: OfflineVADOptions, sc: Scene, ulaw: bytes) -> Score:
    """Frame accuracy and turn counts of one detector on one noisy scene.

    Truth is speech from an utterance's first to last loud sample. Frames the debouncer must get wrong
    by design (the first min_speech_ms of speech, the min_silence_ms hangover after it) count either way.
    """
    frames = len(ulaw) // FRAME_BYTES
    truth = np.zeros(frames, dtype=np.int8)  # 0 silence, 1 speech, 2 don't care
    lead = (options.min_speech_ms + 60) // FRAME_MS
    tail = (options.min_silence_ms + 60) // FRAME_MS
    for a, b in sc.utterances:
        truth[a : min(b, frames)] = 1
        truth[a : min(a + lead, b)] = 2
        truth[b : min(b + tail, frames)] = 2
    stream = OfflineVADStream(options)
    starts: list[int] = []
    ends: list[int] = []
    state = np.zeros(frames, dtype=bool)
    begin = time.process_time()
    for n in range(frames):
        change = stream.process(ulaw[n * FRAME_BYTES : (n + 1) * FRAME_BYTES])
        if change is not None:
            (starts if change == "speech_start" else ends).append(n)
        state[n] = stream.speaking
    cpu = time.process_time() - begin
    judged = truth != 2
    accuracy = float(np.mean(state[judged] == (truth[judged] == 1)))
    found = split = false_starts = from_distractor = 0
    start_lags: list[int] = []
    end_lags: list[int] = []
    for a, b in sc.utterances:
        inside = [s for s in starts if a <= s < b + tail]
        found += bool(inside)
        split += max(len(inside) - 1, 0)
        if inside:
            start_lags.append((inside[0] + 1 - a) * FRAME_MS)
            closing = [e for e in ends if b - tail <= e < b + 2 * tail]
            end_lags += [(closing[0] + 1 - b) * FRAME_MS] if closing else []
    for s in starts:
        if any(a <= s < b + tail for a, b in sc.utterances):
            continue
        false_starts += 1
        # a start within min_speech + 300 ms after a click/cough began is blamed on it
        from_distractor += any(a <= s <= b + lead + 15 for a, b in sc.distractors)
    return Score(
        accuracy,
        found,
        len(sc.utterances),
        split,
        false_starts,
        from_distractor,
        1e6 * cpu / frames,
        start_lags,
        end_lags,
    )


def median_ms(values: list[int]) -> str:
    return f"{np.median(values):.0f}" if values else "-"


def conditions(quick: bool) -> list[tuple[str, int]]:
    picked = {kind: levels[1:2] if quick else levels for kind, levels in LEVELS.items()}
    return [("clean", 0)] + [(kind, rms) for kind, levels in picked.items() for rms in levels]


def tune_silero(quick: bool, source: Pcm) -> float:
    """The silero threshold with the best mean accuracy minus turn errors on the tuning scene."""
    sc = scene(TUNE_SENTENCES, seed=11)
    print("## silero threshold sweep on the tuning scene (other sentences and noise seeds)")
    print(f"{'threshold':>9} {'mean acc':>8} {'missed':>6} {'split':>5} {'false':>5}  score")
    best, best_score = 0.5, -1e9
    for threshold in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        scores = [
            run(
                OfflineVADOptions(detector="silero", threshold=threshold),
                sc,
                with_noise(sc, k, r, 21, source),
            )
            for k, r in conditions(quick)
        ]
        acc = float(np.mean([s.accuracy for s in scores]))
        missed = sum(s.wanted - s.found for s in scores)
        split = sum(s.split for s in scores)
        false = sum(s.false_starts for s in scores)
        total = sum(s.wanted for s in scores)
        value = acc - (missed + split + false) / total  # a wrong turn costs as much as 1/total of accuracy
        print(f"{threshold:9.1f} {acc:8.3f} {missed:6} {split:5} {false:5}  {value:.3f}")
        if value > best_score:
            best, best_score = threshold, value
    print(f"tuned threshold: {best}\n")
    return best


def main() -> None:
    quick = "--quick" in sys.argv[1:]
    source = babble_source()
    detectors: list[tuple[str, OfflineVADOptions]] = [
        ("webrtc aggr 2", OfflineVADOptions()),
        ("webrtc aggr 3", OfflineVADOptions(aggressiveness=3)),
        ("energy rms>500", OfflineVADOptions(detector="energy")),
        ("energy rms>1500", OfflineVADOptions(detector="energy", energy_threshold=1500)),
    ]
    try:
        load_silero()
    except ProviderError as exc:
        print(f"silero skipped: {exc}\n")
    else:
        tuned = tune_silero(quick, source)
        detectors.append(("silero 0.5", OfflineVADOptions(detector="silero", threshold=0.5)))
        if tuned != 0.5:
            detectors.append((f"silero {tuned}", OfflineVADOptions(detector="silero", threshold=tuned)))
        # silero ignores coughs and clicks by itself, so the min-speech guard can be shorter
        quicker = OfflineVADOptions(detector="silero", threshold=tuned, min_speech_ms=100)
        detectors.append((f"silero {tuned} ms100", quicker))
    sc = scene(TEST_SENTENCES, seed=3)
    speech_rms = float(
        np.sqrt(np.mean(np.concatenate([sc.pcm[a * 160 : b * 160] for a, b in sc.utterances]) ** 2))
    )
    print(
        f"## vad.offline on 8 kHz μ-law: {len(sc.utterances)} utterances (2 voices), each after a click or a"
        f" cough; speech RMS {speech_rms:.0f}; min_speech 200 ms (unless ms100), min_silence 300 ms"
    )
    header = f"{'noise':12} {'detector':16} {'frame acc':>9} {'turns':>7} {'split':>5} {'false':>5} {'click/cough':>11} {'start ms':>8} {'end ms':>6} {'µs/frame':>8}"
    print(header)
    totals: dict[str, list[Score]] = {}
    for kind, rms in conditions(quick):
        ulaw = with_noise(sc, kind, rms, 5, source)
        for label, options in detectors:
            s = run(options, sc, ulaw)
            totals.setdefault(label, []).append(s)
            noise = kind if kind == "clean" else f"{kind} {rms}"
            print(
                f"{noise:12} {label:16} {s.accuracy:9.3f} {s.found:>3}/{s.wanted:<3} {s.split:5} "
                f"{s.false_starts:5} {s.from_distractor:11} {median_ms(s.start_lags):>8} {median_ms(s.end_lags):>6} "
                f"{s.us_per_frame:8.1f}"
            )
        print()
    print("## totals over all conditions")
    print(header)
    for label, scores in totals.items():
        found, wanted = sum(s.found for s in scores), sum(s.wanted for s in scores)
        print(
            f"{'all':12} {label:16} {np.mean([s.accuracy for s in scores]):9.3f} {found:>3}/{wanted:<3} "
            f"{sum(s.split for s in scores):5} {sum(s.false_starts for s in scores):5} "
            f"{sum(s.from_distractor for s in scores):11} "
            f"{median_ms([x for s in scores for x in s.start_lags]):>8} "
            f"{median_ms([x for s in scores for x in s.end_lags]):>6} "
            f"{np.median([s.us_per_frame for s in scores]):8.1f}"
        )
    print("(frame acc ignores the first min_speech_ms+60 ms of each utterance and the min_silence_ms+60 ms")
    print(
        " after it; turns = utterances with a speech_start; split = extra starts inside one; false = starts"
    )
    print(
        " in the gaps; click/cough = false starts right after a click or cough; start/end ms = median delay"
    )
    print(
        " from the utterance's first/last sample to speech_start/speech_end (min_speech/min_silence included);"
    )
    print(" µs = CPU per 20 ms frame, μ-law decode and debounce included, median in the totals)")


if __name__ == "__main__":
    main()
