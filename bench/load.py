"""Load benchmark: N concurrent fake Twilio callers against a real patterd process with the fake Realtime engine.

Run: `python bench/load.py --calls 25 50 100 --secs 20`. The daemon runs in its own process
pinned to one core; the fakes (callers, Twilio REST, Realtime engine) share this process, pinned
to another core where the machine has one. Each caller streams real-time μ-law speech made by
espeak-ng (continuous 20 ms frames, silence between turns); the engine's VAD ends each turn after
its scripted `silence_duration_ms` and answers with speech, PCM16 24 kHz (the daemon transcodes).

Reported per N:
- added turn latency p50/p99: caller speech end → first agent frame at the caller, minus the
  engine's scripted end-of-turn silence and minus the fake engine's own median processing time
  (speech_stopped → first audio delta, measured inside the fake and reported as `engine_ms`);
- outbound lateness p99 ("jitter"): how late each agent frame arrives against the real-time
  playout schedule of its response (0 when the daemon keeps ahead of playback);
- errors (calls that failed to connect, dropped or saw no reply);
- daemon CPU (utime+stime from /proc/PID/stat over the measured window) in % of one core,
  total and per call, and RSS growth per call (VmRSS under load minus idle).
`PATTERD_BENCH_PROFILE=path` runs the daemon under cProfile (writes `path` when it stops).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tests.fakes.openai_realtime as fake_rt
from patterd.protocols.audio import FRAME_BYTES, rms_pcm16, ulaw_to_pcm16
from tests.daemon_process import run_daemon
from tests.fakes.openai_realtime import FakeRealtimeServer, Say
from tests.fakes.twilio import FakeCall, FakeTwilio, FakeTwilioRest, spoken_ulaw

PUBLIC_HOST = "gw.example.com"
NUMBER = "+15550001234"
SILENCE_MS = 500  # the engine's end-of-turn silence (DEFAULT_TURN_DETECTION)
VAD_RMS = 300
CALLER_TEXT = "Hello, I would like to know my account balance please."
REPLY_TEXT = "Sure, your balance is twelve dollars."
CLK_TCK = os.sysconf("SC_CLK_TCK")

# The fake validates every client event with jsonschema: right for tests, far too slow for
# 20 000 audio appends a second. The bench trusts the daemon's shapes (the e2e tests check them).
fake_rt.jsonschema = SimpleNamespace(validate=lambda *a, **k: None, ValidationError=Exception)  # type: ignore[attr-defined]


@dataclass
class EngineClock:
    """Timestamps the fake engine's own processing: speech_stopped → first audio delta of the answer."""

    stopped: dict[int, float] = field(default_factory=dict)
    delays_ms: list[float] = field(default_factory=list)


ENGINE = EngineClock()
_original_send = fake_rt._Session.send


async def _timed_send(self: Any, event: dict[str, Any]) -> None:
    etype = event.get("type")
    if etype == "input_audio_buffer.speech_stopped":
        ENGINE.stopped[id(self)] = asyncio.get_running_loop().time()
    elif etype == "response.output_audio.delta":
        t0 = ENGINE.stopped.pop(id(self), None)
        if t0 is not None:
            ENGINE.delays_ms.append((asyncio.get_running_loop().time() - t0) * 1000)
    await _original_send(self, event)


fake_rt._Session.send = _timed_send  # type: ignore[method-assign]


class BenchEngine(FakeRealtimeServer):
    """Answers every turn with the same short speech; transcribes every turn as the same text."""

    def next_reply(self) -> Say:
        return Say(REPLY_TEXT)

    def next_transcript(self) -> str:
        return CALLER_TEXT


def trimmed_speech(text: str) -> bytes:
    """espeak-ng speech with trailing quiet frames cut, so 'speech end' is the engine VAD's speech end."""
    ulaw = spoken_ulaw(text)
    ulaw = ulaw[: len(ulaw) - len(ulaw) % FRAME_BYTES]
    end = len(ulaw)
    while end > 0 and rms_pcm16(ulaw_to_pcm16(ulaw[end - FRAME_BYTES : end])) <= VAD_RMS:
        end -= FRAME_BYTES
    return ulaw[:end]


@dataclass
class CallerStats:
    latencies_ms: list[float] = field(default_factory=list)
    lateness_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def proc_cpu_secs(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def proc_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def lateness(times: list[float]) -> list[float]:
    """Per frame: ms behind the real-time schedule that starts at the response's first frame."""
    if not times:
        return []
    t0 = times[0]
    return [max(0.0, (t - (t0 + k * 0.02)) * 1000) for k, t in enumerate(times)]


async def caller(
    net: FakeTwilio, index: int, speech: bytes, until: float, measure_from: float, stats: CallerStats
) -> None:
    loop = asyncio.get_running_loop()
    try:
        call: FakeCall = await net.inbound_call(f"+1555{index:07d}", NUMBER)
        if call.twiml is None or not call.twiml.stream_url or call.closed:
            stats.errors.append(f"caller {index}: not connected (webhook {call.webhook_status})")
            return
        await call.wait_for_audio(1, timeout=20)  # the greeting started
        await asyncio.sleep(2.0)  # let it play out
        while loop.time() < until and not call.closed:
            await call.say(speech)
            spoke_end = loop.time()
            frames_before = len(call.media_times)
            try:
                await call.wait_until(
                    lambda n=frames_before: len(call.media_times) > n,  # type: ignore[misc]
                    timeout=10,
                    what="the agent's answer",
                )
            except AssertionError:
                stats.errors.append(f"caller {index}: no answer to a turn")
                continue
            if spoke_end >= measure_from:
                stats.latencies_ms.append((call.media_times[frames_before] - spoke_end) * 1000)
            await asyncio.sleep(2.2)  # the answer plays (about 2 s), then the caller speaks again
            if spoke_end >= measure_from:
                stats.lateness_ms.extend(lateness(call.media_times[frames_before:]))
        if call.closed:
            stats.errors.append(f"caller {index}: the daemon closed the stream")
        stats.errors.extend(f"caller {index}: {v}" for v in call.violations[:3])
        await call.stop()
    except Exception as exc:
        stats.errors.append(f"caller {index}: {type(exc).__name__}: {exc}")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_level(n: int, secs: float, ramp_secs: float, speech: bytes) -> dict[str, Any]:
    ENGINE.stopped.clear()
    ENGINE.delays_ms.clear()
    rest = FakeTwilioRest()
    await rest.start()
    tmp = Path(tempfile.mkdtemp(prefix="patterd-bench-"))
    async with BenchEngine(api_key="sk-bench", pace=4.0) as engine:
        fake_rt.speak_pcm24(REPLY_TEXT)  # rendered once, before the clock starts
        config = tmp / "patter.yaml"
        config.write_text(
            f"""carrier: {{type: twilio, account_sid: {rest.account_sid}, auth_token: {rest.auth_token}, base_url: '{rest.base_url}'}}
phone_number: "{NUMBER}"
webhook_url: {PUBLIC_HOST}
persist: {tmp / "records"}
logging: {{level: warning}}
agents:
  - name: bench
    engine: {{type: openai_realtime, base_url: '{engine.url}', api_key: sk-bench}}
    system_prompt: You are a load test.
    first_message: Hello, how can I help?
"""
        )
        profile = os.environ.get("PATTERD_BENCH_PROFILE")
        cm = _profiled(config, profile) if profile else run_daemon(config)
        daemon = await asyncio.to_thread(cm.__enter__)
        pid = daemon.proc.pid  # the profiling wrapper `exec`s, so the pid is the daemon's
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) >= 2:
            os.sched_setaffinity(pid, {cores[0]})
            os.sched_setaffinity(0, set(cores[1:]))
        try:
            rss_idle = proc_rss_kb(pid)
            stats = CallerStats()
            loop = asyncio.get_running_loop()
            start = loop.time()
            measure_from = start + ramp_secs + 3.0
            until = measure_from + secs
            async with FakeTwilio(daemon.base_url, PUBLIC_HOST, rest=rest) as net:
                tasks = []
                for i in range(n):
                    tasks.append(asyncio.create_task(caller(net, i, speech, until, measure_from, stats)))
                    await asyncio.sleep(ramp_secs / n)  # ramp: spread the call setups
                await asyncio.sleep(max(0.0, measure_from - loop.time()))
                cpu0, wall0 = proc_cpu_secs(pid), time.monotonic()
                rss_samples = []
                while loop.time() < until:
                    await asyncio.sleep(1.0)
                    rss_samples.append(proc_rss_kb(pid))
                cpu1, wall1 = proc_cpu_secs(pid), time.monotonic()
                await asyncio.gather(*tasks)
        finally:
            await asyncio.to_thread(cm.__exit__, None, None, None)
            await rest.close()
    cpu_pct = (cpu1 - cpu0) / (wall1 - wall0) * 100
    rss_load = statistics.median(rss_samples) if rss_samples else rss_idle
    engine_ms = statistics.median(ENGINE.delays_ms) if ENGINE.delays_ms else 0.0
    added = [lat - SILENCE_MS - engine_ms for lat in stats.latencies_ms]
    return {
        "calls": n,
        "turns": len(added),
        "added_p50_ms": round(pct(added, 0.5), 1),
        "added_p99_ms": round(pct(added, 0.99), 1),
        "late_p99_ms": round(pct(stats.lateness_ms, 0.99), 1),
        "engine_ms_p50": round(engine_ms, 1),
        "engine_ms_p99": round(pct(ENGINE.delays_ms, 0.99), 1),
        "errors": len(stats.errors),
        "cpu_pct": round(cpu_pct, 1),
        "cpu_pct_per_call": round(cpu_pct / n, 3),
        "rss_idle_mb": round(rss_idle / 1024, 1),
        "rss_per_call_mb": round((rss_load - rss_idle) / 1024 / n, 3),
        "error_samples": stats.errors[:5],
    }


@contextlib.contextmanager
def _profiled(config: Path, out: str) -> Any:
    """The daemon under cProfile (python -m cProfile -o out -m patterd ...)."""
    import tests.daemon_process as dp

    original = sys.executable
    wrapper = Path(tempfile.mkdtemp()) / "python-profiled"
    wrapper.write_text(f'#!/bin/sh\nexec {original} -m cProfile -o {out} "$@"\n')
    wrapper.chmod(0o755)
    setattr(dp, "sys", SimpleNamespace(executable=str(wrapper)))  # noqa: B010 - run_daemon reads sys.executable
    try:
        with run_daemon(config) as daemon:
            yield daemon
    finally:
        setattr(dp, "sys", sys)  # noqa: B010


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, nargs="+", default=[25, 50, 100, 200, 400])
    parser.add_argument("--secs", type=float, default=20.0, help="measured seconds per level")
    parser.add_argument("--ramp-secs", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    speech = trimmed_speech(CALLER_TEXT)
    rows = [asyncio.run(run_level(n, args.secs, args.ramp_secs, speech)) for n in args.calls]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    head = "| calls | turns | added p50 ms | added p99 ms | late p99 ms | engine p50/p99 ms | errors | daemon CPU % | CPU %/call | RSS MB/call |"
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for r in rows:
        print(
            f"| {r['calls']} | {r['turns']} | {r['added_p50_ms']} | {r['added_p99_ms']} | {r['late_p99_ms']} "
            f"| {r['engine_ms_p50']}/{r['engine_ms_p99']} | {r['errors']} | {r['cpu_pct']} "
            f"| {r['cpu_pct_per_call']} | {r['rss_per_call_mb']} |"
        )
        for sample in r["error_samples"]:
            print(f"    e.g. {sample}")


if __name__ == "__main__":
    main()
