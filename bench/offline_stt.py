"""Benchmark of the offline built-ins: stt.offline's engines (whisper and pocketsphinx) on phone-band espeak-ng
speech — WER overall and per voice, pocketsphinx's modes and live vs batch CMN, the turn latency split of the
front desk on each engine — and espeak-ng time to first audio (the VAD comparison is bench/offline_vad.py).

Run: python bench/offline_stt.py [engines|modes|turns|tts ...]   (default: all)
"""

from __future__ import annotations

import asyncio
import io
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from patterd.config import load_config
from patterd.plugins import load_registry
from patterd.protocols.audio import FRAME_BYTES, silence_ulaw, wav_to_ulaw8k
from patterd.providers.offline_stt import SPEC as STT_SPEC
from patterd.providers.offline_stt import OfflineSTT, OfflineSTTOptions
from patterd.providers.offline_tts import SPEC as TTS_SPEC
from patterd.providers.offline_tts import OfflineTTSOptions
from patterd.providers.spec import BuildContext
from patterd.simulate import run_simulation
from tests.providers.phone_speech import make_clips
from tests.providers.phone_speech import word_errors as normalized_errors

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
                    {"engine": "pocketsphinx", "sample_rate_mode": rate, "mode": mode, "phrases": tests}
                )
                wer, rtf, wrong = await score(options, audio)
                print(f"{voice:22} {rate:12} {mode:8} {wer:6.2f} {rtf:6.3f}  {'; '.join(wrong[:4])}")
    shipped = {
        k: v for k, v in yaml.safe_load(SHIPPED.read_text())["agents"][0]["stt"].items() if k != "type"
    }
    audio = await caller_voice(FRONT_DESK)
    for engine in ("pocketsphinx", "whisper"):
        print(
            f"\n## the shipped config's stt on {engine} (mode {shipped.get('mode', 'auto')}) on the front-desk lines"
        )
        wer, rtf, wrong = await score(OfflineSTTOptions(**{**shipped, "engine": engine}), audio)
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


async def bench_engines() -> None:
    """Both engines on tests/providers/phone_speech.py's callers (the test set of test_offline_whisper.py)."""
    clips = make_clips(Path(tempfile.mkdtemp(prefix="phone-speech-")))
    print(f"\n## stt.offline engines on {len(clips)} phone-band utterances (espeak-ng + sox, 8 kHz μ-law)")
    configs = {
        "whisper": OfflineSTTOptions(engine="whisper"),
        "pocketsphinx open, live CMN": OfflineSTTOptions(engine="pocketsphinx", mode="open"),
        "pocketsphinx open, batch CMN": OfflineSTTOptions(engine="pocketsphinx", mode="open", live_cmn=False),
    }
    for name, options in configs.items():
        async with STT_SPEC.build(options, BuildContext()) as stt:
            await transcribe(
                stt, silence_ulaw(200) + clips[0].ulaw + silence_ulaw(300)
            )  # warm up (model load)
            errors: dict[str, list[int]] = {}
            cpu0, wall = time.process_time(), 0.0
            for clip in clips:
                hyp, elapsed = await transcribe(stt, silence_ulaw(200) + clip.ulaw + silence_ulaw(300))
                e, n = normalized_errors(clip.text, hyp)
                errors.setdefault(clip.voice, [0, 0])
                errors[clip.voice][0] += e
                errors[clip.voice][1] += n
                wall += elapsed
            cpu = time.process_time() - cpu0
        total = sum(e for e, _ in errors.values()) / sum(n for _, n in errors.values())
        voices = ", ".join(f"{v} {e / n:.2f}" for v, (e, n) in errors.items())
        print(
            f"{name:30} WER {total:.3f}  per voice: {voices}; per utterance {wall / len(clips):.2f} s wall, "
            f"{cpu / len(clips):.2f} s CPU"
        )


async def bench_turns(
    lines: tuple[str, ...] = ("hi", "what time do you open", "where are you located", "bye"),
) -> None:
    """The shipped front desk through `patterd simulate` on each engine: the p50 of each turn stage."""
    print("\n## turn latency split of the shipped front desk (patterd simulate, p50 over the turns, ms)")
    registry = load_registry()
    for engine in ("pocketsphinx", "whisper"):
        config = yaml.safe_load(SHIPPED.read_text())
        config["agents"][0]["stt"]["engine"] = engine
        path = Path(tempfile.mkdtemp(prefix="turns-")) / "patter.yaml"
        path.write_text(yaml.safe_dump(config))
        out = io.StringIO()
        cpu0 = time.process_time()
        await run_simulation(load_config(path, registry, environ={}), registry, say=list(lines), out=out)
        stages = [
            line for line in out.getvalue().splitlines() if "turn stages p50" in line or " user:" in line
        ]
        print(
            f"{engine:12} {'; '.join(s.strip() for s in stages)}  (process CPU {time.process_time() - cpu0:.1f} s)"
        )


async def main() -> None:
    parts = set(sys.argv[1:]) or {"engines", "modes", "turns", "tts"}
    if "engines" in parts:
        await bench_engines()
    if "modes" in parts:
        await bench_stt()
    if "turns" in parts:
        await bench_turns()
    if "tts" in parts:
        await bench_tts()


if __name__ == "__main__":
    asyncio.run(main())
