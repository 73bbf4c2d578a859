"""Load benchmark: N concurrent fake Twilio callers against a real patterd process with the fake Realtime engine.

Run: `python bench/load.py --calls 25 50 100 200 400 --secs 15` (the defaults but for --secs); it ends with
the rows judged against issue 4's targets (TARGET_* below). The daemon runs in its own process
pinned to one core. The fakes run on the other cores: the Realtime engine and the Twilio REST
fake in this process, the callers spread over `--workers` processes (default: one per 100 calls).
On a 2-core machine every fake shares the second core, so the fakes' own CPU is reported too: a
level whose fakes use ≥ 90 % of their cores, or whose callers fell more than 20 ms behind their
send schedule, is marked `fakes saturated`, and its latency numbers
measure the fakes, not the daemon (its daemon CPU per call is still right).

Each caller streams real-time μ-law speech made by espeak-ng (continuous 20 ms frames, silence
between turns, callers spread evenly over the 20 ms tick like independent phone lines); the
engine's VAD ends each turn after its scripted `silence_duration_ms` and answers with speech,
PCM16 24 kHz (the daemon transcodes). Callers play agent audio back in real time the way Twilio
does (marks echoed when playback passes them, cleared on `clear`), computed from timestamps
rather than a 20 ms timer per call, and send pre-rendered frames, so a fake caller costs a few
µs per frame: the fakes stay cheaper than the daemon they measure.

Reported per N:
- added turn latency p50/p99: caller speech end → first agent frame at the caller, minus the
  engine's scripted end-of-turn silence and minus the fake engine's own median processing time
  (speech_stopped → first audio delta, measured inside the fake and reported as `engine_ms`);
- outbound lateness p99 ("jitter"): how late each agent frame arrives against the real-time
  playout schedule of its response (0 when the daemon keeps ahead of playback);
- errors (calls that failed to connect, dropped or saw no reply);
- daemon CPU (utime+stime from /proc/PID/stat over the measured window) in % of one core,
  total, split user/sys, and per call; RSS growth per call (VmRSS under load minus idle);
- the fakes' CPU in % of one core (all fake processes together).
`--generator c` runs both fakes in bench/loadgen.c instead (one C process, far cheaper per call;
bench/README.md, loadgen.c). `--pyspy PATH` records the daemon with py-spy (raw collapsed stacks)
during the measured window;
`PATTERD_BENCH_PROFILE=path` runs the daemon under cProfile instead (writes `path` when it stops).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import multiprocessing as mp
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


import tests.fakes.openai_realtime as fake_rt
from bench.load_callers import CallerStats as CallerStats
from bench.load_callers import LeanStream as LeanStream
from bench.load_callers import Ticker as Ticker
from bench.load_callers import _worker
from bench.load_callers import caller as caller
from bench.load_callers import lateness as lateness
from bench.load_common import CALLER_TEXT as CALLER_TEXT
from bench.load_common import CORES as CORES
from bench.load_common import FRAME_SECS as FRAME_SECS
from bench.load_common import NUMBER as NUMBER
from bench.load_common import PUBLIC_HOST as PUBLIC_HOST
from bench.load_common import REPLY_TEXT as REPLY_TEXT
from bench.load_common import SATURATED_PCT as SATURATED_PCT
from bench.load_common import SETTLE_SECS
from bench.load_common import SILENCE_MS as SILENCE_MS
from bench.load_common import TICK_GROUPS as TICK_GROUPS
from bench.load_common import VAD_RMS as VAD_RMS
from bench.load_common import pct as pct
from bench.load_common import trimmed_speech as trimmed_speech
from bench.load_window import _fakes_cpu as _fakes_cpu
from bench.load_window import _profiled, make_row, measure, own_port_args, pin, write_config
from bench.load_window import descendants as descendants
from bench.procstat import rss_kb
from tests.daemon_process import run_daemon
from tests.fakes.openai_realtime import FakeRealtimeServer, Say
from tests.fakes.twilio import FakeTwilioRest

# Issue 4's targets, with PCM24 transcoding on: one core carries TARGET_CALLS calls with p99
# added latency ≤ TARGET_P99_MS and no errors, each call costing ≤ these shares of a core and RSS.
TARGET_CALLS = 300
TARGET_P99_MS = 50.0
TARGET_CPU_PCT_PER_CALL = 0.3
TARGET_RSS_MB_PER_CALL = 0.2

# The fake validates every client event with jsonschema: right for tests, far too slow for
# 20 000 audio appends a second. The bench trusts the daemon's shapes (the e2e tests check them);
# appends skip validation in BenchSession.handle. A fake that re-checked its schema per event
# (jsonschema.validate) was far too slow even for the rest: stub it there.
if not hasattr(fake_rt, "_validator"):
    fake_rt.jsonschema = SimpleNamespace(validate=lambda *a, **k: None, ValidationError=Exception)  # type: ignore[attr-defined]


# ------------------------------------------------------------------ the engine (this process)


@dataclass
class EngineClock:
    """Timestamps the fake engine's own processing: speech_stopped → first audio delta of the answer."""

    stopped: dict[int, float] = field(default_factory=dict)
    delays_ms: list[float] = field(default_factory=list)


ENGINE = EngineClock()
APPEND_PREFIX = '{"type":"input_audio_buffer.append","audio":"'


class BenchSession(fake_rt._Session):
    """The fake's session with a fast path for audio appends and no per-event history (memory)."""

    async def send(self, event: dict[str, Any]) -> None:
        etype = event.get("type")
        if etype == "input_audio_buffer.speech_stopped":
            ENGINE.stopped[id(self)] = asyncio.get_running_loop().time()
        elif etype == "response.output_audio.delta":
            t0 = ENGINE.stopped.pop(id(self), None)
            if t0 is not None:
                ENGINE.delays_ms.append((asyncio.get_running_loop().time() - t0) * 1000)
        event.setdefault("event_id", self.server.new_id("event"))
        async with self.send_lock:
            await self.ws.send(json.dumps(event))

    async def handle(self, raw: str | bytes) -> None:
        if isinstance(raw, str) and raw.startswith(APPEND_PREFIX) and raw.endswith('"}'):
            # The daemon's appends are built by hand in exactly this shape: decode just the audio.
            await self.on_input_audio_buffer_append({"audio": raw[len(APPEND_PREFIX) : -2]})
            return
        await super().handle(raw)
        self.server.received.clear()


class BenchEngine(FakeRealtimeServer):
    """Answers every turn with the same short speech; transcribes every turn as the same text."""

    def next_reply(self) -> Say:
        return Say(REPLY_TEXT)

    def next_transcript(self) -> str:
        return CALLER_TEXT


fake_rt._Session = BenchSession  # type: ignore[misc]
# The fake converts each reply to the session's format per response; the bench says the same line
# thousands of times, so convert it once (μ-law output would otherwise cost the fakes a resample each).
fake_rt.pcm24_to_format = functools.lru_cache(maxsize=4)(fake_rt.pcm24_to_format)


# ------------------------------------------------------------------ a level


async def run_level(
    n: int,
    secs: float,
    ramp_secs: float,
    speech: bytes,
    workers: int,
    pyspy: str | None,
    audio_format: str = "pcm",
    server_workers: int = 1,
    generator: str = "python",
) -> dict[str, Any]:
    """One level: n callers through a real daemon; `generator` c runs both fakes in bench/loadgen.c."""
    if generator == "c":
        from bench import loadgen

        return await loadgen.run_level(n, secs, ramp_secs, speech, pyspy, audio_format, server_workers)
    ENGINE.stopped.clear()
    ENGINE.delays_ms.clear()
    rest = FakeTwilioRest()
    await rest.start()
    tmp = Path(tempfile.mkdtemp(prefix="patterd-bench-"))
    async with BenchEngine(api_key="sk-bench", pace=4.0) as engine:
        fake_rt.speak_pcm24(REPLY_TEXT)  # rendered once, before the clock starts
        config = write_config(tmp, rest, engine.url, audio_format, server_workers)
        profile = os.environ.get("PATTERD_BENCH_PROFILE")
        args, own_port = own_port_args(server_workers)
        cm = _profiled(config, profile) if profile else run_daemon(config, args=args)
        daemon = await asyncio.to_thread(cm.__enter__)
        if own_port is not None and not profile:
            daemon.base_url = f"http://127.0.0.1:{own_port}"
        procs: list[tuple[Any, Any]] = []
        try:
            daemon_pids, fake_cores = pin(daemon.proc.pid, server_workers)
            rss_idle = sum(rss_kb(p) for p in daemon_pids)
            loop = asyncio.get_running_loop()
            start = loop.time() + 1.5  # the workers' interpreters start meanwhile
            measure_from = start + ramp_secs + SETTLE_SECS
            until = measure_from + secs
            ctx = mp.get_context("spawn")
            for w in range(workers):
                starts = [(i, start + ramp_secs * i / n) for i in range(w, n, workers)]
                job = {
                    "speech": speech,
                    "daemon_url": daemon.base_url,
                    "account_sid": rest.account_sid,
                    "auth_token": rest.auth_token,
                    "starts": starts,
                    "until": until,
                    "measure_from": measure_from,
                }
                parent, child = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_worker, args=(job, child, fake_cores), daemon=True)
                proc.start()
                procs.append((proc, parent))
            fake_pids = [os.getpid()] + [p.pid for p, _ in procs]
            window = await measure(daemon.proc.pid, daemon_pids, fake_pids, measure_from, until, pyspy)
            results = [await asyncio.to_thread(conn.recv) for _, conn in procs]
            await window.wait_spy()
        finally:
            for proc, _ in procs:
                proc.join(timeout=30)
                if proc.is_alive():
                    proc.kill()
            await asyncio.to_thread(cm.__exit__, None, None, None)
            await rest.close()
    return make_row(n, audio_format, results, ENGINE.delays_ms, window, rss_idle, fake_cores, daemon_pids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, nargs="+", default=[25, 50, 100, 200, 400])
    parser.add_argument("--secs", type=float, default=20.0, help="measured seconds per level")
    parser.add_argument("--ramp-secs", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=0, help="caller processes (0: one per 100 calls)")
    parser.add_argument("--pyspy", help="record the daemon with py-spy into PATH.N (raw stacks)")
    parser.add_argument(
        "--audio-format",
        choices=["pcm", "pcmu"],
        default="pcm",
        help="the engine's audio: pcm (PCM16 24 kHz, the daemon transcodes; the targets' setting) or pcmu (μ-law passed through)",
    )
    parser.add_argument(
        "--generator",
        choices=["python", "c"],
        default="python",
        help="the fakes: python (engine and callers in Python) or c (both in bench/loadgen.c, far cheaper)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    speech = trimmed_speech(CALLER_TEXT)
    rows = []
    for n in args.calls:
        workers = args.workers or max(1, math.ceil(n / 100))
        spy = f"{args.pyspy}.{n}" if args.pyspy else None
        rows.append(
            asyncio.run(
                run_level(
                    n,
                    args.secs,
                    args.ramp_secs,
                    speech,
                    workers,
                    spy,
                    args.audio_format,
                    generator=args.generator,
                )
            )
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    head = (
        "| calls | turns | added p50 ms | added p99 ms | late p99 ms | engine p50/p99 ms | errors "
        "| daemon CPU % (user+sys) | CPU %/call | RSS MB/call | fakes CPU % | fakes' max send lag ms |"
    )
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for r in rows:
        flag = " (fakes saturated)" if r["fakes_saturated"] else ""
        print(
            f"| {r['calls']} | {r['turns']} | {r['added_p50_ms']} | {r['added_p99_ms']} | {r['late_p99_ms']} "
            f"| {r['engine_ms_p50']}/{r['engine_ms_p99']} | {r['errors']} "
            f"| {r['cpu_pct']} ({r['cpu_user_pct']}+{r['cpu_sys_pct']}) "
            f"| {r['cpu_pct_per_call']} | {r['rss_per_call_mb']} | {r['fakes_cpu_pct']}{flag} | {r['tick_lag_ms']} |"
        )
        for sample in r["error_samples"]:
            print(f"    e.g. {sample}")
    print()
    if args.audio_format != "pcm":
        print("(engine audio pcmu: no transcoding; the targets are stated with PCM24 transcoding on)")
    for line in verdict(rows):
        print(line)


def verdict(rows: list[dict[str, Any]]) -> list[str]:
    """The rows against the targets: capacity (calls within latency, no errors) and cost per call there."""
    fit = [
        r
        for r in rows
        if r["errors"] == 0 and r["added_p99_ms"] <= TARGET_P99_MS and not r["fakes_saturated"]
    ]
    if not fit:
        return [f"targets: no level kept p99 added latency ≤ {TARGET_P99_MS:g} ms with zero errors"]
    best = max(fit, key=lambda r: r["calls"])
    tested_beyond = any(r["calls"] > best["calls"] for r in rows)

    def mark(ok: bool) -> str:
        return "met" if ok else "MISSED"

    capacity = f"≥ {best['calls']}" if not tested_beyond else f"{best['calls']}"
    return [
        f"targets at {best['calls']} calls (the largest level within p99 ≤ {TARGET_P99_MS:g} ms, zero errors):",
        f"  calls per core {capacity} (target ≥ {TARGET_CALLS}): {mark(best['calls'] >= TARGET_CALLS)}",
        f"  CPU {best['cpu_pct_per_call']} % per call (target ≤ {TARGET_CPU_PCT_PER_CALL}): "
        f"{mark(best['cpu_pct_per_call'] <= TARGET_CPU_PCT_PER_CALL)}",
        f"  RSS {best['rss_per_call_mb']} MB per call (target ≤ {TARGET_RSS_MB_PER_CALL}): "
        f"{mark(best['rss_per_call_mb'] <= TARGET_RSS_MB_PER_CALL)}",
    ]


if __name__ == "__main__":
    main()
