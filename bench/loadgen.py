"""Driver of the C load generator (bench/loadgen/loadgen.c): builds it, feeds it the calls, reads its result.

The C process is both fakes the daemon talks to during a bench level: the OpenAI Realtime engine
(a websocket server on 127.0.0.1 whose port it prints first) and the Twilio callers (websocket
clients to the daemon's media URL). Python keeps what happens once per call before the measured
window: the signed voice webhooks (tests/fakes/twilio.py), which give each call its stream URL,
signature and `customParameters` (the call token). They go to the binary as a job file: one
tab-separated line per call. The binary prints one JSON object when the last caller is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tests.fakes.openai_realtime as fake_rt
from bench.load_common import CALLER_TEXT, GREETING_SECS, NUMBER, PUBLIC_HOST, REPLY_TEXT, SETTLE_SECS
from bench.load_window import make_row, measure, own_port_args, pin, write_config
from bench.procstat import rss_kb
from tests.daemon_process import DaemonProcess, run_daemon
from tests.fakes.twilio import FakeTwilio, FakeTwilioRest, new_sid

SOURCE = Path(__file__).resolve().parent / "loadgen" / "loadgen.c"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "patterd-bench"
CFLAGS = ["-std=c11", "-O2", "-Wall", "-Wextra"]
WEBHOOK_CONCURRENCY = 16  # webhooks in flight at once (before the measured window)


def build(cache: Path | None = None, *, werror: bool = False) -> Path:
    """The compiled generator, rebuilt when the source is newer than the binary (werror: warnings fail)."""
    cache = cache or CACHE
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("the C load generator needs gcc")
    binary = cache / "loadgen"
    if binary.exists() and binary.stat().st_mtime >= SOURCE.stat().st_mtime:
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    # Built under a temporary name and renamed: two benches starting at once never run half a binary.
    tmp = cache / f"loadgen.{os.getpid()}.tmp"
    flags = [*CFLAGS, "-Werror"] if werror else CFLAGS
    done = subprocess.run([gcc, *flags, "-o", str(tmp), str(SOURCE), "-lm"], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"gcc failed to build {SOURCE}:\n{done.stderr}")
    tmp.replace(binary)
    return binary


def _reply_files(workdir: Path, reply_text: str) -> tuple[Path, Path]:
    """The reply the engine speaks, rendered once by the Python fake's own code, in both session formats."""
    pcm24 = fake_rt.speak_pcm24(reply_text)
    pcm_path, ulaw_path = workdir / "reply.pcm24", workdir / "reply.ulaw"
    pcm_path.write_bytes(fake_rt.pcm24_to_format(pcm24, "audio/pcm"))
    ulaw_path.write_bytes(fake_rt.pcm24_to_format(pcm24, "audio/pcmu"))
    return pcm_path, ulaw_path


@dataclass
class CallPlan:
    """One caller: when it dials and what it sends first (from the voice webhook's TwiML)."""

    index: int
    start_at: float
    stream_sid: str
    path: str
    signature: str
    connected: str
    start: str

    def line(self) -> str:
        fields = [
            "call",
            str(self.index),
            f"{self.start_at:.6f}",
            self.stream_sid,
            self.path,
            self.signature,
            self.connected,
            self.start,
        ]
        assert all("\t" not in f and "\n" not in f for f in fields), fields
        return "\t".join(fields)


class Generator:
    """A running loadgen process: `engine_url` once started, `run(...)` to place the calls."""

    def __init__(self, proc: asyncio.subprocess.Process, workdir: Path, engine_url: str) -> None:
        self.proc = proc
        self.workdir = workdir
        self.engine_url = engine_url

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def plan(
        self,
        daemon_url: str,
        public_host: str,
        number: str,
        account_sid: str,
        auth_token: str,
        n: int,
    ) -> tuple[list[CallPlan | str], FakeTwilio]:
        """Ring the daemon n times (signed voice webhooks); each call's plan, or the error it met."""
        net = FakeTwilio(daemon_url, public_host, account_sid=account_sid, auth_token=auth_token)
        await net.__aenter__()
        gate = asyncio.Semaphore(WEBHOOK_CONCURRENCY)

        async def one(index: int) -> CallPlan | str:
            async with gate:
                call = await net.inbound_call(f"+1555{index:07d}", number, connect=False)
            if call.twiml is None or not call.twiml.stream_url:
                return f"caller {index}: not connected (webhook {call.webhook_status})"
            public = call.twiml.stream_url
            local = urlsplit(net.local_url(public))  # the daemon's own address: C dials only that
            path = local.path + (f"?{local.query}" if local.query else "")
            sid = new_sid("MZ")
            start = {
                "event": "start",
                "sequenceNumber": "1",
                "start": {
                    "streamSid": sid,
                    "accountSid": net.account_sid,
                    "callSid": call.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": call.twiml.parameters,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
                "streamSid": sid,
            }
            connected = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
            return CallPlan(
                index, 0.0, sid, path, net.sign(public, None), json.dumps(connected), json.dumps(start)
            )

        plans = await asyncio.gather(*(one(i) for i in range(n)))
        return list(plans), net

    async def run(
        self,
        daemon_url: str,
        plans: list[CallPlan],
        measure_from: float,
        until: float,
        greeting_secs: float = GREETING_SECS,
        turn: tuple[int, float, float] | None = None,
    ) -> dict[str, Any]:
        """Hand the calls to the generator; returns its result once every caller is done.

        turn: (rule frames, listen secs, late ms) puts the generator in turn mode (bench/turn_latency.py).
        """
        host, _, port = daemon_url.split("://", 1)[1].rstrip("/").partition(":")
        window = f"window\t{measure_from:.6f}\t{until:.6f}\t{greeting_secs:.3f}"
        lines = [f"daemon\t{host}\t{port}", window]
        if turn is not None:
            lines.append(f"turn\t{turn[0]}\t{turn[1]:.3f}\t{turn[2]:.3f}")
        lines += [p.line() for p in plans]
        job = self.workdir / "job.tsv"
        job.write_text("\n".join(lines) + "\n")
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{job}\n".encode())
        await self.proc.stdin.drain()
        out = await self.proc.stdout.readline()
        await self.proc.wait()
        if not out:
            raise RuntimeError(f"loadgen ended without a result (exit {self.proc.returncode})")
        result: dict[str, Any] = json.loads(out)
        return result


async def _calls_per_worker(daemon: DaemonProcess, at: float) -> list[int]:
    """Live calls per worker at `at` (loop clock), from /api/v1/status: how the kernel spread the calls."""
    await asyncio.sleep(max(0.0, at - asyncio.get_running_loop().time()))
    status, body = await asyncio.to_thread(daemon.request, "GET", "/api/v1/status")
    if status != 200 or not isinstance(body, dict):
        return []
    workers = body.get("workers")
    if not isinstance(workers, list):  # one process: no supervisor, no workers list
        return [len(body.get("live_calls") or [])]
    return [int(w.get("live_calls", -1)) for w in sorted(workers, key=lambda w: str(w.get("worker")))]


@contextlib.asynccontextmanager
async def generator(
    api_key: str, reply_text: str, caller_text: str, speech_ulaw: bytes
) -> AsyncIterator[Generator]:
    """Start the generator (its engine listens at once); killed on exit if still running."""
    binary = await asyncio.to_thread(build)
    workdir = Path(tempfile.mkdtemp(prefix="patterd-loadgen-"))
    for text in (reply_text, caller_text):
        assert '"' not in text and "\\" not in text, "the generator puts these texts into JSON as is"
    pcm_path, ulaw_path = await asyncio.to_thread(_reply_files, workdir, reply_text)
    speech_path = workdir / "speech.ulaw"
    speech_path.write_bytes(speech_ulaw)
    proc = await asyncio.create_subprocess_exec(
        str(binary),
        api_key,
        str(pcm_path),
        str(ulaw_path),
        reply_text,
        caller_text,
        str(speech_path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=1 << 26,  # the result line carries every latency sample
    )
    try:
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        if not first.startswith("port "):
            raise RuntimeError(f"loadgen did not start: {first!r}")
        port = int(first.split()[1])
        yield Generator(proc, workdir, f"ws://127.0.0.1:{port}/v1/realtime")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


async def run_level(
    n: int,
    secs: float,
    ramp_secs: float,
    speech: bytes,
    pyspy: str | None,
    audio_format: str = "pcm",
    server_workers: int = 1,
    *,
    settle_secs: float = SETTLE_SECS,
    greeting_secs: float = GREETING_SECS,
) -> dict[str, Any]:
    """bench/load.py's level with both fakes in the C generator: the same row, plus the generator's CPU."""
    rest = FakeTwilioRest()
    await rest.start()
    tmp = Path(tempfile.mkdtemp(prefix="patterd-bench-"))
    try:
        async with generator("sk-bench", REPLY_TEXT, CALLER_TEXT, speech) as gen:
            config = write_config(tmp, rest, gen.engine_url, audio_format, server_workers)
            args, own_port = own_port_args(server_workers)
            cm = run_daemon(config, args=args)
            daemon = await asyncio.to_thread(cm.__enter__)
            if own_port is not None:
                daemon.base_url = f"http://127.0.0.1:{own_port}"
            try:
                daemon_pids, fake_cores = pin(daemon.proc.pid, server_workers)
                os.sched_setaffinity(gen.pid, fake_cores)
                rss_idle = sum(rss_kb(p) for p in daemon_pids)
                planned, net = await gen.plan(
                    daemon.base_url, PUBLIC_HOST, NUMBER, rest.account_sid, rest.auth_token, n
                )
                try:
                    loop = asyncio.get_running_loop()
                    start = loop.time() + 0.5
                    measure_from = start + ramp_secs + settle_secs
                    until = measure_from + secs
                    plans = [p for p in planned if isinstance(p, CallPlan)]
                    for k, p in enumerate(plans):
                        p.start_at = start + ramp_secs * k / n
                    result = asyncio.ensure_future(
                        gen.run(daemon.base_url, plans, measure_from, until, greeting_secs)
                    )
                    fake_pids = [os.getpid(), gen.pid]
                    spread = asyncio.ensure_future(_calls_per_worker(daemon, (measure_from + until) / 2))
                    window = await measure(
                        daemon.proc.pid, daemon_pids, fake_pids, measure_from, until, pyspy
                    )
                    per_worker = await spread
                    res = await result
                    await window.wait_spy()
                finally:
                    await net.__aexit__(None, None, None)
            finally:
                await asyncio.to_thread(cm.__exit__, None, None, None)
    finally:
        await rest.close()
        shutil.rmtree(tmp, ignore_errors=True)
    res["errors"] = [p for p in planned if isinstance(p, str)] + res["errors"]
    row = make_row(n, audio_format, [res], res["engine_delays_ms"], window, rss_idle, fake_cores, daemon_pids)
    gen_pct = window.per_pid[gen.pid] / window.wall * 100
    row["generator"] = "c"
    row["gen_cpu_pct"] = round(gen_pct, 2)
    row["gen_cpu_pct_per_call"] = round(gen_pct / n, 4)
    row["live_calls_by_worker"] = per_worker
    row["engine_appends"] = res["engine"]["appends"]
    row["engine_connections"] = res["engine"]["connections"]
    row["gen_user_s"], row["gen_sys_s"] = res["cpu_user_s"], res["cpu_sys_s"]
    row["gen_syscalls"] = res.get("syscalls")
    return row
