"""CPU and disk per call-hour of `recording: local`: simulated calls through the recording leg and its writer.

Each call is a leg yielding a caller frame every 20 ms of simulated time while the agent answers in
bursts (1.6 s of audio every 4 s, handed over in 200 ms chunks like a TTS stream, every third reply
cut by a barge-in clear). The clock is simulated, so an hour of call runs in well under a second;
the recording's ticker (every 0.5 s in a daemon) is driven from the simulated clock. The same calls
run once without recording: the difference is what recording costs. CPU is user+system time of this
process (resource.getrusage), disk the bytes of the files written.

    python bench/recording.py [--calls 20] [--minutes 30] [--dir /tmp/recbench]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from patterd.calls.recording import RecordingLeg, record_leg
from patterd.protocols.events import CallerAudio, MediaEvent
from patterd.providers.kinds import CarrierLeg
from patterd.store.recording_file import RECORDING, RecordingFile

FRAME = 160
TICK_FRAMES = 25  # the recording ticker's 0.5 s in frames
REPLY_EVERY = 200  # frames (4 s)
REPLY_CHUNKS = 8  # 8 × 200 ms = 1.6 s of agent audio per reply


class SimClock:
    """Simulated time: 20 ms per caller frame."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)

    def monotonic(self) -> float:
        return self.t


class SimLeg:
    """A carrier leg producing `frames` caller frames; agent audio goes nowhere."""

    def __init__(self, clock: SimClock, frames: int) -> None:
        self.clock = clock
        self.frames = frames
        self.payload = bytes(range(96, 96 + FRAME))  # not silence: the writer copies real bytes

    async def events(self) -> AsyncIterator[MediaEvent]:
        for _ in range(self.frames):
            await asyncio.sleep(0)  # a socket read suspends: the session runs between frames
            self.clock.t += 0.02
            yield CallerAudio(self.payload)

    async def send_audio(self, ulaw: bytes) -> None:
        return None

    async def send_mark(self, name: str) -> None:
        return None

    async def clear(self) -> None:
        return None

    async def close(self) -> None:
        return None


async def one_call(directory: Path | None, frames: int) -> None:
    """A call of `frames` caller frames, recorded into `directory` (None: not recorded)."""
    clock = SimClock()
    leg: CarrierLeg = SimLeg(clock, frames)
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        leg = record_leg(leg, RecordingFile(directory / RECORDING), clock)
    chunk = bytes(range(0, 256, 1)) * 6 + bytes(64)  # 1600 bytes: 200 ms
    replies = 0
    n = 0
    async for _event in leg.events():
        n += 1
        if n % REPLY_EVERY == 0:
            replies += 1
            for _ in range(REPLY_CHUNKS):
                await leg.send_audio(chunk)
            await leg.send_mark(f"m{replies}")
        if replies % 3 == 0 and n % REPLY_EVERY == REPLY_EVERY // 5:
            await leg.clear()  # barge-in 0.8 s into every third reply
        if isinstance(leg, RecordingLeg) and n % TICK_FRAMES == 0:
            leg.timeline.tick()
    await leg.close()


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(calls: int, minutes: float, root: Path) -> dict[str, float]:
    frames = int(minutes * 60 * 50)
    start = cpu()
    for _ in range(calls):
        await one_call(None, frames)
    base = cpu() - start
    start = cpu()
    for i in range(calls):
        await one_call(root / f"call{i}", frames)
    recorded = cpu() - start
    hours = calls * minutes / 60
    written = sum(p.stat().st_size for p in root.rglob("recording.wav"))
    return {
        "call_hours": hours,
        "cpu_s_without": base,
        "cpu_s_with": recorded,
        "cpu_s_per_call_hour": (recorded - base) / hours,
        "core_pct_per_call": (recorded - base) / (hours * 3600) * 100,
        "mb_per_call_hour": written / hours / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--dir", type=Path, default=None, help="where the files go (default: a temp dir)")
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="recbench-"))
    try:
        result = asyncio.run(run(args.calls, args.minutes, root))
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    print(
        f"{args.calls} calls × {args.minutes:g} min = {result['call_hours']:.1f} call-hours\n"
        f"CPU without recording {result['cpu_s_without']:.2f} s, with {result['cpu_s_with']:.2f} s\n"
        f"recording: {result['cpu_s_per_call_hour']:.2f} CPU-s per call-hour "
        f"({result['core_pct_per_call']:.3f} % of a core per live call), "
        f"{result['mb_per_call_hour']:.1f} MB per call-hour on disk"
    )


if __name__ == "__main__":
    main()
