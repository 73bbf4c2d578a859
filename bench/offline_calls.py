"""Turn latency and CPU per concurrent call of the offline front desk (pocketsphinx + script + espeak-ng).

Runs N simulated calls at once in this process against the shipped config's agent: each synthetic caller
waits for the greeting, then asks the same questions in turn, in real time, like `patterd simulate`.
Reports turn latency two ways: as recorded on the transcript lines (`latency_ms`), and as the caller
measures it (its last voiced frame handed to the daemon → the first agent audio it gets back), the
recorded stage p50s, the process's CPU time per call-second and the peak RSS.

Usage::

    python bench/offline_calls.py                 # N = 1, 5, 10
    python bench/offline_calls.py --calls 1 20    # other sizes
"""

from __future__ import annotations

import argparse
import asyncio
import audioop
import resource
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from patterd.calls.session import CallSpec
from patterd.calls.switchboard import Switchboard, new_call_id
from patterd.config import load_config_text
from patterd.graph import build_graph
from patterd.logs import configure_logging
from patterd.plugins import load_registry
from patterd.protocols.events import CallerAudio, CallEvent, MediaEvent, TranscriptLine
from patterd.providers.spec import BuildContext
from patterd.simulate import SimulatedCaller

ROOT = Path(__file__).resolve().parents[1]
LINES = ["what time do you open", "where are you located", "what are your opening hours"]
# The caller knows what it said: a frame of its speech is voiced from this RMS (-36 dBFS, the daemon's
# VOICED_RMS; espeak-ng's pauses and tail are digital silence).
CALLER_VOICED_RMS = 500
STAGES = ("endpointing_ms", "stt_ms", "llm_ttft_ms", "tts_ttfb_ms", "transport_ms")


class TimingCaller(SimulatedCaller):
    """The simulated caller, noting when it hands over its last voiced frame and hears the agent back."""

    def __init__(self) -> None:
        super().__init__()
        self.last_voiced_sent: float | None = None
        self.heard_at: float | None = None  # the first agent audio after the last voiced frame
        self.turns_ms: list[float] = []

    async def events(self) -> AsyncIterator[MediaEvent]:
        async for event in super().events():
            if (
                isinstance(event, CallerAudio)
                and audioop.rms(audioop.ulaw2lin(event.payload, 2), 2) >= CALLER_VOICED_RMS
            ):
                self.last_voiced_sent, self.heard_at = self.clock.monotonic(), None
            yield event

    async def send_audio(self, ulaw: bytes) -> None:
        if self.last_voiced_sent is not None and self.heard_at is None:
            self.heard_at = self.clock.monotonic()
            self.turns_ms.append((self.heard_at - self.last_voiced_sent) * 1000)
        await super().send_audio(ulaw)


async def run(n: int, stt_engine: str) -> dict[str, Any]:
    registry = load_registry()
    text = (ROOT / "config" / "patter.yaml").read_text()
    if stt_engine != "auto":  # the shipped config says auto: whisper where its extra is installed
        shipped = yaml.safe_load(text)
        for agent in shipped["agents"]:
            agent["stt"]["engine"] = stt_engine
        text = yaml.safe_dump(shipped, sort_keys=False)
    config = load_config_text(text, registry, source="config/patter.yaml")
    graph = await build_graph(config, registry, local_url="http://127.0.0.1:0")
    latencies: list[float] = []
    lines: dict[str, list[TranscriptLine]] = {}  # call_id → its timed assistant lines, in order
    callers: dict[str, TimingCaller] = {}

    def emit(event: CallEvent) -> None:
        if isinstance(event, TranscriptLine) and event.role == "assistant" and event.latency_ms is not None:
            latencies.append(event.latency_ms)
            lines.setdefault(event.call_id, []).append(event)

    spec = registry.get("tts", "offline")
    async with spec.build(spec.options(), BuildContext()) as voice:
        speech = []
        for line in LINES:
            audio = bytearray()
            async for chunk in voice.synthesize(line):
                audio.extend(chunk)
            speech.append(bytes(audio))

    async with aiohttp.ClientSession() as http:
        board = Switchboard(graph, emit=emit, http=http)

        async def one_call(index: int) -> None:
            session = board.open_call(
                CallSpec(new_call_id(), "inbound", "local", "", f"+1555000{index:04d}", ""), agent_name=None
            )
            caller = TimingCaller()
            callers[session.call_id] = caller
            call = asyncio.create_task(board.run_media(session.call_id, caller))
            line_open = asyncio.create_task(caller.keep_line_open())
            await caller.wait_agent_done(caller.clock.monotonic() - 1)
            for audio in speech:
                sent = caller.clock.monotonic()
                await caller.speak(audio)
                await caller.wait_agent_done(sent)
            caller.hang_up()
            await call
            line_open.cancel()

        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.gather(*(one_call(i) for i in range(n)))
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    await graph.aclose()
    latencies.sort()
    heard = [ms for caller in callers.values() for ms in caller.turns_ms]
    # Recorded minus caller-measured, turn by turn (the same turns, in order, per call).
    gaps = [
        line.latency_ms - ms
        for call_id, caller in callers.items()
        for line, ms in zip(lines.get(call_id, []), caller.turns_ms, strict=False)
        if line.latency_ms is not None
    ]
    stages = {
        key: statistics.median(v)
        for key in STAGES
        if (v := [x for ls in lines.values() for line in ls if (x := getattr(line, key, None)) is not None])
    }
    return {
        "calls": n,
        "turns": len(latencies),
        "p50_ms": statistics.median(latencies) if latencies else float("nan"),
        "caller_p50_ms": statistics.median(heard) if heard else float("nan"),
        "gap_ms": (min(gaps), max(gaps)) if gaps else (float("nan"), float("nan")),
        "stages": stages,
        "p95_ms": latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan"),
        "cpu_pct_per_call": 100 * cpu / wall / n,
        "wall_s": wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--stt-engine", choices=("auto", "pocketsphinx", "whisper"), default="pocketsphinx")
    args = parser.parse_args()
    configure_logging("warning")
    print(
        f"{'calls':>5} {'turns':>5} {'p50 ms':>7} {'p95 ms':>7} {'caller p50':>10} {'rec-caller ms':>15}"
        f" {'CPU %/call':>10} {'wall s':>7} {'peak RSS MB':>11}  stage p50s (ms)"
    )
    for n in args.calls:
        r = asyncio.run(run(n, args.stt_engine))
        gap = f"{r['gap_ms'][0]:+.1f}..{r['gap_ms'][1]:+.1f}"
        stages = ", ".join(f"{k.removesuffix('_ms')} {v:.0f}" for k, v in r["stages"].items())
        print(
            f"{r['calls']:>5} {r['turns']:>5} {r['p50_ms']:>7.0f} {r['p95_ms']:>7.0f} {r['caller_p50_ms']:>10.0f}"
            f" {gap:>15} {r['cpu_pct_per_call']:>10.1f} {r['wall_s']:>7.1f} {r['peak_rss_mb']:>11.0f}  {stages}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
