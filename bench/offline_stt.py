"""Benchmark of the offline built-ins: pocketsphinx WER and real-time factor on phone-band espeak-ng speech,
espeak-ng time to first audio, and webrtcvad vs an energy VAD on noisy 8 kHz μ-law. Run: python bench/offline_stt.py [MODE ...]
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from patterd.protocols.audio import FRAME_BYTES, pcm16_to_ulaw, silence_ulaw, ulaw_to_pcm16, wav_to_ulaw8k
from patterd.providers.offline_stt import SPEC as STT_SPEC
from patterd.providers.offline_stt import OfflineSTT, OfflineSTTOptions
from patterd.providers.offline_tts import SPEC as TTS_SPEC
from patterd.providers.offline_tts import OfflineTTSOptions
from patterd.providers.offline_vad import OfflineVADOptions, OfflineVADStream
from patterd.providers.spec import BuildContext

SENTENCES = [
    "what are your opening hours",
    "i would like to book an appointment",
    "my name is john smith",
    "can i come in on tuesday",
    "where are you located",
    "thank you very much goodbye",
    "what time do you open tomorrow",
    "i need to speak to a person",
    "is the office open on saturday",
    "please call me back at five",
]
FRONT_DESK = ["hi", "what time do you open", "bye", "what are your opening hours"]  # simulate + browser test
VOICES = {"en-us 175wpm": ["-v", "en-us"], "en-us+m3 150wpm": ["-v", "en-us+m3", "-s", "150"]}
SHIPPED = Path(__file__).resolve().parents[1] / "config" / "patter.yaml"


def speak(text: str, args: list[str]) -> bytes:
    return wav_to_ulaw8k(
        subprocess.run(["espeak-ng", "--stdout", *args, text], capture_output=True, check=True).stdout
    )


def word_errors(ref: str, hyp: str) -> tuple[int, int]:
    r, h = ref.split(), hyp.split()
    row = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        prev, row[0] = row[:], i
        for j, hw in enumerate(h, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (rw != hw))
    return row[-1], len(r)


async def transcribe(stt: OfflineSTT, ulaw: bytes) -> tuple[str, float]:
    """Final text and decode wall time for one utterance pushed as 20 ms frames."""
    texts: list[str] = []
    start = time.perf_counter()
    async with stt.stream() as stream:

        async def read() -> None:
            async for t in stream:
                if t.is_final and t.text:
                    texts.append(t.text)

        reader = asyncio.create_task(read())
        for i in range(0, len(ulaw), FRAME_BYTES):
            stream.push_audio(ulaw[i : i + FRAME_BYTES])
        await stream.flush()
        elapsed = time.perf_counter() - start
    await reader
    return " ".join(texts), elapsed


async def caller_voice(texts: list[str]) -> dict[str, bytes]:
    """`patterd simulate`'s synthetic caller: tts.offline with its default options."""
    audio: dict[str, bytes] = {}
    async with TTS_SPEC.build(OfflineTTSOptions(), BuildContext()) as tts:
        for text in texts:
            chunks = [chunk async for chunk in tts.synthesize(text)]
            audio[text] = b"".join(chunks)
    return audio


async def score(options: OfflineSTTOptions, audio: dict[str, bytes]) -> tuple[float, float, list[str]]:
    """WER, RTF and the misrecognized sentences of one configuration."""
    async with STT_SPEC.build(options, BuildContext()) as stt:
        await transcribe(stt, silence_ulaw(100))  # warm up: first decoder load
        errors = words = 0
        decode = duration = 0.0
        wrong = []
        for sentence, ulaw in audio.items():
            hyp, elapsed = await transcribe(stt, silence_ulaw(200) + ulaw + silence_ulaw(300))
            e, n = word_errors(sentence, hyp)
            errors, words = errors + e, words + n
            decode, duration = decode + elapsed, duration + len(ulaw) / 8000 + 0.5
            if e:
                wrong.append(f"{sentence!r}→{hyp!r}")
    return errors / words, decode / duration, wrong


async def bench_stt(modes: tuple[str, ...] = ("open", "phrases", "grammar")) -> None:
    tests = SENTENCES + FRONT_DESK
    print(f"## stt.offline (pocketsphinx) on 8 kHz μ-law espeak-ng speech, {len(tests)} sentences")
    print("phrases = the test sentences themselves (open mode ignores them)")
    print(f"{'voice':22} {'rate':12} {'mode':8} {'WER':>6} {'RTF':>6}  errors")
    voices = {"tts.offline (simulate)": await caller_voice(tests)}
    voices |= {v: {s: speak(s, args) for s in tests} for v, args in VOICES.items()}
    for voice, audio in voices.items():
        for rate in ("upsample_16k", "native_8k"):
            for mode in modes:
                options = OfflineSTTOptions.model_validate(
                    {"sample_rate_mode": rate, "mode": mode, "phrases": tests}
                )
                wer, rtf, wrong = await score(options, audio)
                print(f"{voice:22} {rate:12} {mode:8} {wer:6.2f} {rtf:6.3f}  {'; '.join(wrong[:4])}")
    shipped = {
        k: v for k, v in yaml.safe_load(SHIPPED.read_text())["agents"][0]["stt"].items() if k != "type"
    }
    print(f"\n## the shipped config's stt (mode {shipped.get('mode', 'auto')}) on the front-desk lines")
    audio = await caller_voice(FRONT_DESK)
    wer, rtf, wrong = await score(OfflineSTTOptions(**shipped), audio)
    print(f"tts.offline (simulate) WER {wer:.2f} RTF {rtf:.3f}  {'; '.join(wrong)}")
    print("(RTF: wall time of push + flush per second of audio, includes the per-stream decoder load)")


async def bench_tts() -> None:
    print("\n## tts.offline time to first audio (ms), 5 runs each")
    text = "Thanks for calling Acme front desk! How can I help you today?"
    for engine in ("library", "binary"):
        try:
            async with TTS_SPEC.build(OfflineTTSOptions(engine=engine), BuildContext()) as tts:
                firsts, totals = [], []
                for _ in range(5):
                    start, first = time.perf_counter(), None
                    async for _chunk in tts.synthesize(text):
                        if first is None:
                            first = time.perf_counter() - start
                    firsts.append(1000 * (first or 0.0))
                    totals.append(1000 * (time.perf_counter() - start))
            print(
                f"{engine:8} first audio median {statistics.median(firsts):6.1f} ms, whole text {statistics.median(totals):6.1f} ms"
            )
        except Exception as exc:
            print(f"{engine:8} unavailable: {exc}")


def noisy(ulaw: bytes, rms: float, seed: int) -> bytes:
    pcm = np.frombuffer(ulaw_to_pcm16(ulaw), dtype="<i2").astype(np.float64)
    pcm += np.random.default_rng(seed).normal(0.0, rms, pcm.shape)
    return pcm16_to_ulaw(np.clip(pcm, -32768, 32767).astype("<i2").tobytes())


def frame_accuracy(options: OfflineVADOptions, audio: bytes, truth: list[bool]) -> tuple[float, int]:
    """Share of frames whose speaking state matches the truth, and how many turns started."""
    stream, hits, starts = OfflineVADStream(options), 0, 0
    for n, i in enumerate(range(0, len(audio), FRAME_BYTES)):
        if stream.process(audio[i : i + FRAME_BYTES]) == "speech_start":
            starts += 1
        hits += stream.speaking == truth[n]
    return hits / len(truth), starts


def bench_vad() -> None:
    print(
        "\n## vad.offline: webrtcvad vs energy on 8 kHz μ-law with white noise (3 utterances, 1 click each)"
    )
    print(f"{'noise rms':>9} {'detector':22} {'frame acc':>9} {'turns (want 3)':>15}")
    rng = np.random.default_rng(3)
    clickpcm = rng.uniform(-12000, 12000, 8 * 80).astype("<i2").tobytes()  # an 80 ms click/cough
    parts: list[tuple[bytes, bool]] = []
    for s in SENTENCES[:3]:
        parts += [(silence_ulaw(600), False), (pcm16_to_ulaw(clickpcm), False), (silence_ulaw(600), False)]
        parts += [(speak(s, ["-v", "en-us"]), True)]
    parts.append((silence_ulaw(800), False))
    clean = b"".join(p for p, _ in parts)
    truth: list[bool] = []
    for p, is_speech in parts:
        truth += [is_speech] * (len(p) // FRAME_BYTES)
    truth += [False] * (len(clean) // FRAME_BYTES + 1 - len(truth))
    for rms in (0, 300, 1000, 2000):
        audio = noisy(clean, rms, 5) if rms else clean
        for label, options in (
            ("webrtc aggr 2", OfflineVADOptions()),
            ("webrtc aggr 3", OfflineVADOptions(aggressiveness=3)),
            ("energy rms>500", OfflineVADOptions(detector="energy")),
            ("energy rms>1500", OfflineVADOptions(detector="energy", energy_threshold=1500)),
        ):
            acc, starts = frame_accuracy(options, audio, truth)
            print(f"{rms:9} {label:22} {acc:9.2f} {starts:15}")
    print(
        "(truth counts speech from the first to last frame of each utterance, pauses included; the hangover"
    )
    print(" and min-speech delays cost a few % even for a perfect detector)")


async def main() -> None:
    await bench_stt(tuple(sys.argv[1:]) or ("open", "phrases", "grammar"))
    await bench_tts()
    bench_vad()


if __name__ == "__main__":
    asyncio.run(main())
