"""Bench: what patterd adds to a turn and to the agent's frame timing, against a bare Python relay (the floor).

Run: `python bench/turn_latency.py` (defaults: the floor, patterd pcmu and patterd pcm at 100 calls,
then patterd pcm at 150 200 250 300 calls for capacity; `--calls 50 100` compares at each level).
Each target runs alone on core 0 (affinity set like bench/load.py); the fakes share the other core(s).
It prints a markdown table ready to paste (`--json`: the rows too).

- Callers: N signed Twilio callers (signed voice webhook, then the Media Stream), each streaming
  espeak-ng speech in 20 ms μ-law frames in real time, silence between turns, callers spread over
  the 20 ms tick.
- Engine: a GA-protocol Realtime fake with server VAD in the session's audio format: its turn
  ends after 500 ms of non-loud frames (RMS ≤ 300) following the caller's last loud frame, and
  it answers at once with speech in 20 ms deltas paced to an absolute real-time schedule.
- `--generator c` (the default): callers and engine in bench/loadgen/loadgen.c's turn mode (one C
  epoll thread, ~0.2 % of a core per call; bench/turn_c.py). `--generator python`: load.py's
  LeanStream/Ticker callers and tests/fakes/openai_realtime's PacedSession (bench/turn_python.py,
  ~1 % of a core per call: on 2 cores it starves near 100 calls).
- Targets (bench/turn_targets.py): `relay` — the floor: a bare Python relay on the same stack as
  patterd (Starlette on Hypercorn for the carrier side, an aiohttp client to the engine, uvloop),
  the engine in μ-law, each media payload passed through as the append's base64 and each delta as
  a media payload, nothing decoded; `pcmu` — patterd with `audio_format: pcmu`; `pcm` — patterd
  with the default `audio_format: pcm` (8 kHz μ-law ⇄ 24 kHz PCM16 transcoding both ways).

Per target and N (bench/turn_report.py):
- added p50/p99: first reply frame at the caller − the send time of the caller frame that
  completes the engine's end-of-turn rule (the 25th 20 ms frame after the last loud one). The
  fake's own processing is inside every row, floor included, so compare with the floor;
- reply jitter p99: |gap between consecutive reply frames − 20 ms|;
- late frames: reply frames that reach the caller more than LATE_MS after their real-time slot
  (the response's first frame + k × 20 ms): a playout buffer of half a frame would run dry;
- errors; the target's CPU (utime+stime over the measured window) in % of one core, per call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import turn_c
from bench.load_common import CALLER_TEXT, trimmed_speech
from bench.turn_report import NAMES, TARGET_P99_MS, table, verdict


async def run_level(
    generator: str, kind: str, n: int, secs: float, ramp_secs: float, speech: bytes
) -> dict[str, Any]:
    if generator == "python":
        from bench import turn_python  # imported only here: it patches the Realtime fake

        return await turn_python.run_level(kind, n, secs, ramp_secs, speech)
    return await turn_c.run_level(kind, n, secs, ramp_secs, speech)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--calls", type=int, nargs="+", default=[100], help="the compared levels (floor, pcmu, pcm at each)"
    )
    parser.add_argument("--targets", nargs="+", default=["relay", "pcmu", "pcm"], choices=list(NAMES))
    parser.add_argument(
        "--capacity", type=int, nargs="*", default=[150, 200, 250, 300], help="more pcm levels"
    )
    parser.add_argument(
        "--generator",
        choices=["c", "python"],
        default="c",
        help="callers and engine: bench/loadgen/loadgen.c (default) or the Python fakes",
    )
    parser.add_argument("--secs", type=float, default=20.0, help="measured seconds per level")
    parser.add_argument("--ramp-secs", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    speech = trimmed_speech(CALLER_TEXT)

    def level(kind: str, n: int) -> dict[str, Any]:
        row = asyncio.run(run_level(args.generator, kind, n, args.secs, args.ramp_secs, speech))
        print(
            f"# {kind} at {n} calls: added p50/p99 {row['added_p50_ms']}/{row['added_p99_ms']} ms", flush=True
        )
        return row

    rows = [level(kind, n) for n in args.calls for kind in args.targets]
    for n in args.capacity:
        row = level("pcm", n)
        rows.append(row)
        if row["added_p99_ms"] > TARGET_P99_MS or row["errors"]:
            break  # past capacity: higher levels only take longer
    if args.json:
        print(json.dumps(rows, indent=2))
    at = 100 if 100 in args.calls else max(args.calls)
    for line in [*table(rows), "", *verdict(rows, at)]:
        print(line)


if __name__ == "__main__":
    main()
