"""bench/load.py's measuring: the daemon's config and cores, CPU and RSS over the window, a level's row."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench.load_common import CORES, NUMBER, PUBLIC_HOST, SATURATED_PCT, SILENCE_MS, pct
from bench.procstat import cpu_times, rss_kb
from tests.daemon_process import run_daemon
from tests.fakes.twilio import FakeTwilioRest


def write_config(
    tmp: Path, rest: FakeTwilioRest, engine_url: str, audio_format: str, server_workers: int
) -> Path:
    """The bench daemon's config: Twilio through the REST fake, one agent on the fake engine at engine_url."""
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
    engine: {{type: openai_realtime, base_url: '{engine_url}', api_key: sk-bench, audio_format: {audio_format}}}
    system_prompt: You are a load test.
    first_message: Hello, how can I help?
"""
    )
    return config


def own_port_args(server_workers: int) -> tuple[list[str], int | None]:
    """Daemon arguments so that workers bind `127.0.0.1:PORT` themselves, and that port (None: one worker).

    run_daemon hands the daemon one pre-bound socket (`--bind fd://N`), which every worker then shares:
    each connection goes to whichever worker wakes first, and on a shared socket that piles calls on one
    worker (10 calls split 2/8 in a trial). Bound to a port, the supervisor gives each worker its own
    SO_REUSEPORT socket and the kernel spreads connections by hash, as in a deployment. The later
    `--bind` wins; the inherited socket stays unused.
    """
    if server_workers <= 1:
        return [], None
    with socket.socket() as probe:  # a free port (the race with another bench is accepted)
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    return ["--bind", f"127.0.0.1:{port}"], port


def pin(pid: int, server_workers: int) -> tuple[list[int], set[int]]:
    """The daemon (with server.workers: the supervisor and every worker) on its own cores, this process
    on the rest; returns the daemon's pids and the fakes' cores (every core when none is left)."""
    daemon_cores = set(CORES[:server_workers])
    fake_cores = set(CORES[server_workers:]) or set(CORES)
    daemon_pids = [pid, *descendants(pid)]
    if len(CORES) >= 2:
        for daemon_pid in daemon_pids:
            os.sched_setaffinity(daemon_pid, daemon_cores)
        os.sched_setaffinity(0, fake_cores)
    return daemon_pids, fake_cores


@dataclass
class Window:
    """CPU of the daemon and the fakes over the measured window, and the daemon's RSS samples."""

    wall: float
    daemon_user: float
    daemon_sys: float
    fakes: float
    rss_samples: list[int]
    per_pid: dict[int, float]  # CPU seconds of each fake and daemon process
    spy: subprocess.Popen[bytes] | None = None

    async def wait_spy(self) -> None:
        if self.spy is not None:
            await asyncio.to_thread(self.spy.wait)


async def measure(
    pid: int,
    daemon_pids: list[int],
    fake_pids: list[int],
    measure_from: float,
    until: float,
    pyspy: str | None,
) -> Window:
    """Sleep to the window, then sample CPU (and RSS each second) until `until` (loop.time() clock)."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, measure_from - loop.time()))
    spy = _pyspy(pid, until - measure_from, pyspy) if pyspy else None
    per0 = {p: _fakes_cpu([p]) for p in [*fake_pids, *daemon_pids]}
    cpu0, fakes0, wall0 = _tree_cpu(daemon_pids), _fakes_cpu(fake_pids), time.monotonic()
    rss_samples = []
    while loop.time() < until:
        await asyncio.sleep(1.0)
        rss_samples.append(sum(rss_kb(p) for p in daemon_pids))
    cpu1, fakes1, wall1 = _tree_cpu(daemon_pids), _fakes_cpu(fake_pids), time.monotonic()
    per = {p: _fakes_cpu([p]) - per0[p] for p in per0}
    return Window(wall1 - wall0, cpu1[0] - cpu0[0], cpu1[1] - cpu0[1], fakes1 - fakes0, rss_samples, per, spy)


def make_row(
    n: int,
    audio_format: str,
    results: list[dict[str, Any]],
    engine_delays: list[float],
    window: Window,
    rss_idle: int,
    fake_cores: set[int],
    daemon_pids: list[int],
) -> dict[str, Any]:
    """A level's row from the callers' results, the engine's delays and the window's CPU."""
    wall = window.wall
    user_pct = window.daemon_user / wall * 100
    sys_pct = window.daemon_sys / wall * 100
    cpu_pct = user_pct + sys_pct
    fakes_pct = window.fakes / wall * 100
    rss_samples = window.rss_samples
    rss_load = statistics.median(rss_samples) if rss_samples else rss_idle
    engine_ms = statistics.median(engine_delays) if engine_delays else 0.0
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
        "engine_ms_p99": round(pct(engine_delays, 0.99), 1),
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
        # Each daemon process's share (with server.workers: the supervisor first, then the workers):
        # how evenly the kernel spread the calls, and what the supervisor costs.
        "daemon_cpu_pct_by_process": [round(window.per_pid.get(p, 0.0) / wall * 100, 1) for p in daemon_pids],
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
    cmd = [
        "py-spy",
        "record",
        "-p",
        str(pid),
        "-d",
        str(int(secs)),
        "-r",
        "250",
        "--nonblocking",
        "--subprocesses",
    ]
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
