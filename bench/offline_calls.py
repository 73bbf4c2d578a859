"""Turn latency and CPU per concurrent call of the offline front desk (pocketsphinx + script + espeak-ng).

Runs N simulated calls at once in this process against the shipped config's agent: each synthetic caller
waits for the greeting, then asks the same questions in turn, in real time, like `patterd simulate`.
Reports turn latency (caller speech end → first agent audio, from the call records' transcript lines),
the process's CPU time per call-second and the peak RSS.

Usage::

    python bench/offline_calls.py                 # N = 1, 5, 10
    python bench/offline_calls.py --calls 1 20    # other sizes
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from patterd.calls.session import CallSpec
from patterd.calls.switchboard import Switchboard, new_call_id
from patterd.config import load_config
from patterd.graph import build_graph
from patterd.logs import configure_logging
from patterd.plugins import load_registry
from patterd.protocols.events import CallEvent, TranscriptLine
from patterd.providers.spec import BuildContext
from patterd.simulate import SimulatedCaller

ROOT = Path(__file__).resolve().parents[1]
LINES = ["what time do you open", "where are you located", "what are your opening hours"]


async def run(n: int) -> dict[str, Any]:
    registry = load_registry()
    config = load_config(ROOT / "config" / "patter.yaml", registry)
    graph = await build_graph(config, registry, local_url="http://127.0.0.1:0")
    latencies: list[float] = []

    def emit(event: CallEvent) -> None:
        if isinstance(event, TranscriptLine) and event.role == "assistant" and event.latency_ms is not None:
            latencies.append(event.latency_ms)

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
            caller = SimulatedCaller()
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
    return {
        "calls": n,
        "turns": len(latencies),
        "p50_ms": statistics.median(latencies) if latencies else float("nan"),
        "p95_ms": latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan"),
        "cpu_pct_per_call": 100 * cpu / wall / n,
        "wall_s": wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 5, 10])
    args = parser.parse_args()
    configure_logging("warning")
    print(
        f"{'calls':>5} {'turns':>5} {'p50 ms':>7} {'p95 ms':>7} {'CPU %/call':>10} {'wall s':>7} {'peak RSS MB':>11}"
    )
    for n in args.calls:
        r = asyncio.run(run(n))
        print(
            f"{r['calls']:>5} {r['turns']:>5} {r['p50_ms']:>7.0f} {r['p95_ms']:>7.0f} {r['cpu_pct_per_call']:>10.1f}"
            f" {r['wall_s']:>7.1f} {r['peak_rss_mb']:>11.0f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
