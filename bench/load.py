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
`--pyspy PATH` records the daemon with py-spy (raw collapsed stacks) during the measured window;
`PATTERD_BENCH_PROFILE=path` runs the daemon under cProfile instead (writes `path` when it stops).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import json
import math
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

import tests.fakes.openai_realtime as fake_rt
from bench.procstat import cpu_times, rss_kb
from patterd.protocols.audio import FRAME_BYTES, rms_pcm16, ulaw_to_pcm16
from tests.daemon_process import run_daemon
from tests.fakes.openai_realtime import FakeRealtimeServer, Say
from tests.fakes.twilio import FakeTwilio, FakeTwilioRest, new_sid, spoken_ulaw

PUBLIC_HOST = "gw.example.com"
NUMBER = "+15550001234"
SILENCE_MS = 500  # the engine's end-of-turn silence (DEFAULT_TURN_DETECTION)
VAD_RMS = 300
CALLER_TEXT = "Hello, I would like to know my account balance please."
REPLY_TEXT = "Sure, your balance is twelve dollars."
# Read once, before the first level narrows this process to the fake cores: read again at the
# second level, it would put the daemon on the fakes' core (which made every level after the
# first look throttled in earlier runs).
CORES = sorted(os.sched_getaffinity(0))
FRAME_SECS = 0.02
TICK_GROUPS = 10  # callers are spread over 10 send slots per 20 ms tick
SATURATED_PCT = 90.0
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


def trimmed_speech(text: str) -> bytes:
    """espeak-ng speech with trailing quiet frames cut, so 'speech end' is the engine VAD's speech end."""
    ulaw = spoken_ulaw(text)
    ulaw = ulaw[: len(ulaw) - len(ulaw) % FRAME_BYTES]
    end = len(ulaw)
    while end > 0 and rms_pcm16(ulaw_to_pcm16(ulaw[end - FRAME_BYTES : end])) <= VAD_RMS:
        end -= FRAME_BYTES
    return ulaw[:end]


# ------------------------------------------------------------------ the callers (worker processes)


@dataclass
class CallerStats:
    latencies_ms: list[float] = field(default_factory=list)
    lateness_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class LeanStream:
    """One caller's Media Stream, cheap per frame: pre-encoded payloads, playback computed from timestamps."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, stream_sid: str) -> None:
        self.ws = ws
        self.stream_sid = stream_sid
        self.loop = asyncio.get_running_loop()
        self.media_times: list[float] = []
        self.closed = False
        self.speech: list[str] = []  # b64 payloads still to say
        self.said: asyncio.Future[None] | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.chunk = 0
        self._play_end = 0.0  # when Twilio's playback buffer runs dry
        self._marks: dict[str, asyncio.TimerHandle] = {}  # marks waiting for playback to pass them
        self._sends: set[asyncio.Future[None]] = set()
        self._prefix = '{"event":"media","streamSid":' + json.dumps(stream_sid) + ',"sequenceNumber":"'

    def frame(self, silence_b64: str) -> str | None:
        """The next 20 ms media message (speech if queued, else silence)."""
        if self.closed:
            return None
        self.chunk += 1
        if self.speech:
            payload = self.speech.pop()
            if not self.speech and self.said is not None and not self.said.done():
                self.said.set_result(None)
        else:
            payload = silence_b64
        n = self.chunk
        return (
            f'{self._prefix}{n + 1}","media":{{"track":"inbound","chunk":"{n}",'
            f'"timestamp":"{(n - 1) * 20}","payload":"{payload}"}}}}'
        )

    async def say(self, payloads: list[str]) -> None:
        self.said = self.loop.create_future()
        self.speech = payloads[::-1]
        await self.said

    def _echo(self, name: str) -> None:
        self._marks.pop(name, None)
        if not self.closed:
            msg = json.dumps({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})
            task = asyncio.ensure_future(self._send(msg))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    async def _send(self, text: str) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.send_str(text)

    async def read(self) -> None:
        media_prefix = '{"event":"media"'
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            now = self.loop.time()
            data: str = msg.data
            if data.startswith(media_prefix):
                self.media_times.append(now)
                self._play_end = max(now, self._play_end) + FRAME_SECS
                if self.waiter is not None and not self.waiter.done():
                    self.waiter.set_result(None)
                continue
            event = json.loads(data)
            if event.get("event") == "mark":
                name = str(event["mark"]["name"])
                if self._play_end <= now:
                    self._echo(name)
                else:
                    self._marks[name] = self.loop.call_at(self._play_end, self._echo, name)
            elif event.get("event") == "clear":
                self._play_end = now
                for name, timer in list(self._marks.items()):
                    timer.cancel()
                    self._echo(name)  # the marks still pending come back at once on clear
        self.closed = True

    async def stop(self) -> None:
        self.closed = True
        await self._send(json.dumps({"event": "stop", "streamSid": self.stream_sid, "stop": {}}))
        await self.ws.close()


class Ticker:
    """Sends every caller's next frame each 20 ms; callers spread over TICK_GROUPS slots of the tick."""

    def __init__(self, silence_b64: str) -> None:
        self.groups: list[list[LeanStream]] = [[] for _ in range(TICK_GROUPS)]
        self.silence_b64 = silence_b64
        self._n = 0
        self.max_lag_ms = 0.0  # how far the sends fell behind their slot (the fakes' own health)
        self.lags: list[tuple[float, int]] = []
        self.origin = 0.0

    def add(self, stream: LeanStream) -> None:
        self.groups[self._n % TICK_GROUPS].append(stream)
        self._n += 1

    async def run(self, until: float) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        tick = 0
        while loop.time() < until:
            for g, group in enumerate(self.groups):
                delay = t0 + (tick + g / TICK_GROUPS) * FRAME_SECS - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif tick > 50:
                    self.max_lag_ms = max(self.max_lag_ms, -delay * 1000)
                    if -delay > 0.02:
                        self.lags.append((round(loop.time() - self.origin, 2), round(-delay * 1000)))
                for stream in group:
                    text = stream.frame(self.silence_b64)
                    if text is not None:
                        with contextlib.suppress(ConnectionError, RuntimeError):
                            await stream.ws.send_str(text)
            tick += 1


async def caller(
    net: FakeTwilio,
    ws_session: aiohttp.ClientSession,
    ticker: Ticker,
    index: int,
    speech: list[str],
    until: float,
    measure_from: float,
    stats: CallerStats,
) -> None:
    loop = asyncio.get_running_loop()
    try:
        call = await net.inbound_call(f"+1555{index:07d}", NUMBER, connect=False)
        if call.twiml is None or not call.twiml.stream_url:
            stats.errors.append(f"caller {index}: not connected (webhook {call.webhook_status})")
            return
        public = call.twiml.stream_url
        ws = await ws_session.ws_connect(
            net.local_url(public), headers={"X-Twilio-Signature": net.sign(public, None)}
        )
        stream = LeanStream(ws, new_sid("MZ"))
        await ws.send_str(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        start = {
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "streamSid": stream.stream_sid,
                "accountSid": net.account_sid,
                "callSid": call.call_sid,
                "tracks": ["inbound"],
                "customParameters": call.twiml.parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
            "streamSid": stream.stream_sid,
        }
        await ws.send_str(json.dumps(start))
        reader = asyncio.ensure_future(stream.read())
        ticker.add(stream)
        await asyncio.sleep(4.0)  # the greeting plays
        if not stream.media_times:
            stats.errors.append(f"caller {index}: no greeting")
        while loop.time() < until and not stream.closed:
            await stream.say(speech)
            spoke_end = loop.time()
            frames_before = len(stream.media_times)
            stream.waiter = loop.create_future()
            try:
                async with asyncio.timeout(10):
                    await stream.waiter
            except TimeoutError:
                stats.errors.append(f"caller {index}: no answer to a turn")
                continue
            if spoke_end >= measure_from:
                stats.latencies_ms.append((stream.media_times[frames_before] - spoke_end) * 1000)
            await asyncio.sleep(2.2)  # the answer plays (about 2 s), then the caller speaks again
            if spoke_end >= measure_from:
                stats.lateness_ms.extend(lateness(stream.media_times[frames_before:]))
        if stream.closed:
            stats.errors.append(f"caller {index}: the daemon closed the stream")
        await stream.stop()
        reader.cancel()
    except Exception as exc:
        stats.errors.append(f"caller {index}: {type(exc).__name__}: {exc}")


def lateness(times: list[float]) -> list[float]:
    """Per frame: ms behind the real-time schedule that starts at the response's first frame."""
    if not times:
        return []
    t0 = times[0]
    return [max(0.0, (t - (t0 + k * FRAME_SECS)) * 1000) for k, t in enumerate(times)]


async def _worker_main(job: dict[str, Any]) -> dict[str, Any]:
    speech_ulaw: bytes = job["speech"]
    speech = [
        base64.b64encode(speech_ulaw[i : i + FRAME_BYTES]).decode()
        for i in range(0, len(speech_ulaw), FRAME_BYTES)
    ]
    silence = base64.b64encode(b"\xff" * FRAME_BYTES).decode()
    stats = CallerStats()
    loop = asyncio.get_running_loop()
    ticker = Ticker(silence)
    ticker.origin = job["measure_from"]
    until, measure_from = job["until"], job["measure_from"]
    # Media sockets get their own session without aiohttp's default cap of 100 connections.
    async with (
        FakeTwilio(
            job["daemon_url"], PUBLIC_HOST, account_sid=job["account_sid"], auth_token=job["auth_token"]
        ) as net,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as ws_session,
    ):
        tick_task = asyncio.ensure_future(ticker.run(until + 15))
        tasks = []
        for index, at in job["starts"]:
            await asyncio.sleep(max(0.0, at - loop.time()))
            tasks.append(
                asyncio.ensure_future(
                    caller(net, ws_session, ticker, index, speech, until, measure_from, stats)
                )
            )
        await asyncio.gather(*tasks)
        tick_task.cancel()
    return {
        "latencies_ms": stats.latencies_ms,
        "lateness_ms": stats.lateness_ms,
        "errors": stats.errors,
        "tick_lag_ms": ticker.max_lag_ms,
        "lags": ticker.lags[:40],
    }


def _worker(job: dict[str, Any], conn: Any, cores: set[int]) -> None:
    os.sched_setaffinity(0, cores)
    conn.send(asyncio.run(_worker_main(job)))
    conn.close()


# ------------------------------------------------------------------ measuring


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_level(
    n: int,
    secs: float,
    ramp_secs: float,
    speech: bytes,
    workers: int,
    pyspy: str | None,
    audio_format: str = "pcm",
    server_workers: int = 1,
) -> dict[str, Any]:
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
server: {{workers: {server_workers}}}
agents:
  - name: bench
    engine: {{type: openai_realtime, base_url: '{engine.url}', api_key: sk-bench, audio_format: {audio_format}}}
    system_prompt: You are a load test.
    first_message: Hello, how can I help?
"""
        )
        profile = os.environ.get("PATTERD_BENCH_PROFILE")
        cm = _profiled(config, profile) if profile else run_daemon(config)
        daemon = await asyncio.to_thread(cm.__enter__)
        pid = daemon.proc.pid  # the profiling wrapper `exec`s, so the pid is the daemon's
        cores = CORES
        # The daemon (with server.workers: the supervisor and every worker) on its own cores, fakes on the rest.
        daemon_cores = set(cores[:server_workers])
        fake_cores = set(cores[server_workers:]) or set(cores)
        daemon_pids = [pid, *descendants(pid)]
        if len(cores) >= 2:
            for daemon_pid in daemon_pids:
                os.sched_setaffinity(daemon_pid, daemon_cores)
            os.sched_setaffinity(0, fake_cores)
        procs: list[tuple[Any, Any]] = []
        try:
            rss_idle = sum(rss_kb(p) for p in daemon_pids)
            loop = asyncio.get_running_loop()
            start = loop.time() + 1.5  # the workers' interpreters start meanwhile
            measure_from = start + ramp_secs + 6.0
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
            await asyncio.sleep(max(0.0, measure_from - loop.time()))
            spy = _pyspy(pid, secs, pyspy) if pyspy else None
            cpu0, fakes0, wall0 = _tree_cpu(daemon_pids), _fakes_cpu(fake_pids), time.monotonic()
            rss_samples = []
            while loop.time() < until:
                await asyncio.sleep(1.0)
                rss_samples.append(sum(rss_kb(p) for p in daemon_pids))
            cpu1, fakes1, wall1 = _tree_cpu(daemon_pids), _fakes_cpu(fake_pids), time.monotonic()
            results = [await asyncio.to_thread(conn.recv) for _, conn in procs]
            if spy is not None:
                await asyncio.to_thread(spy.wait)
        finally:
            for proc, _ in procs:
                proc.join(timeout=30)
                if proc.is_alive():
                    proc.kill()
            await asyncio.to_thread(cm.__exit__, None, None, None)
            await rest.close()
    wall = wall1 - wall0
    user_pct = (cpu1[0] - cpu0[0]) / wall * 100
    sys_pct = (cpu1[1] - cpu0[1]) / wall * 100
    cpu_pct = user_pct + sys_pct
    fakes_pct = (fakes1 - fakes0) / wall * 100
    rss_load = statistics.median(rss_samples) if rss_samples else rss_idle
    engine_ms = statistics.median(ENGINE.delays_ms) if ENGINE.delays_ms else 0.0
    latencies = [x for r in results for x in r["latencies_ms"]]
    late = [x for r in results for x in r["lateness_ms"]]
    errors = [x for r in results for x in r["errors"]]
    added = [lat - SILENCE_MS - engine_ms for lat in latencies]
    max_lag = max(r["tick_lag_ms"] for r in results)
    return {
        "calls": n,
        "audio_format": audio_format,
        "turns": len(added),
        "added_p50_ms": round(pct(added, 0.5), 1),
        "added_p99_ms": round(pct(added, 0.99), 1),
        "late_p99_ms": round(pct(late, 0.99), 1),
        "engine_ms_p50": round(engine_ms, 1),
        "engine_ms_p99": round(pct(ENGINE.delays_ms, 0.99), 1),
        "errors": len(errors),
        "cpu_pct": round(cpu_pct, 1),
        "cpu_user_pct": round(user_pct, 1),
        "cpu_sys_pct": round(sys_pct, 1),
        "cpu_pct_per_call": round(cpu_pct / n, 3),
        "fakes_cpu_pct": round(fakes_pct, 1),
        "tick_lag_ms": round(max_lag, 1),
        "fakes_saturated": fakes_pct >= SATURATED_PCT * len(fake_cores) or max_lag > 20,
        "rss_idle_mb": round(rss_idle / 1024, 1),
        "rss_per_call_mb": round((rss_load - rss_idle) / 1024 / n, 3),
        "error_samples": errors[:5],
    }


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (a supervisor's workers)."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split():
                out += [int(child), *descendants(int(child))]
    return out


def _tree_cpu(pids: list[int]) -> tuple[float, float]:
    """(user, sys) seconds of the daemon's processes together."""
    times = [cpu_times(p) for p in pids]
    return sum(t[0] for t in times), sum(t[1] for t in times)


def _fakes_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += sum(cpu_times(pid))
    return total


def _pyspy(pid: int, secs: float, out: str) -> subprocess.Popen[bytes]:
    """py-spy on the daemon for the measured window (raw collapsed stacks; --nonblocking: no pauses)."""
    cmd = ["py-spy", "record", "-p", str(pid), "-d", str(int(secs)), "-r", "250", "--nonblocking"]
    return subprocess.Popen(
        [*cmd, "-f", "raw", "-o", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


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
    parser.add_argument("--workers", type=int, default=0, help="caller processes (0: one per 100 calls)")
    parser.add_argument("--pyspy", help="record the daemon with py-spy into PATH.N (raw stacks)")
    parser.add_argument(
        "--audio-format",
        choices=["pcm", "pcmu"],
        default="pcm",
        help="the engine's audio: pcm (PCM16 24 kHz, the daemon transcodes; the targets' setting) or pcmu (μ-law passed through)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    speech = trimmed_speech(CALLER_TEXT)
    rows = []
    for n in args.calls:
        workers = args.workers or max(1, math.ceil(n / 100))
        spy = f"{args.pyspy}.{n}" if args.pyspy else None
        rows.append(
            asyncio.run(run_level(n, args.secs, args.ramp_secs, speech, workers, spy, args.audio_format))
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
