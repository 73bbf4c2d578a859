"""bench/turn_latency.py's C harness: callers and Realtime engine in bench/loadgen/loadgen.c's turn mode.

The same scenario and figures as the Python harness (bench/turn_python.py) at ~0.2 % of a core per call
instead of ~1 %: the callers and the engine in one C epoll thread; the signed voice webhooks stay in
Python (bench/loadgen.py's Generator.plan), before the measured window.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import loadgen
from bench.load_common import (
    CALLER_TEXT,
    CORES,
    GREETING_SECS,
    NUMBER,
    PUBLIC_HOST,
    REPLY_TEXT,
    SETTLE_SECS,
)
from bench.load_window import _fakes_cpu
from bench.turn_report import LATE_MS, LISTEN_SECS, RULE_FRAMES, make_row
from bench.turn_targets import target
from tests.fakes.twilio import FakeTwilioRest


async def run_level(
    kind: str,
    n: int,
    secs: float,
    ramp_secs: float,
    speech: bytes,
    *,
    settle_secs: float = SETTLE_SECS,
    greeting_secs: float = GREETING_SECS,
) -> dict[str, Any]:
    """One target at n calls, driven by the C generator: its row (bench/turn_report.make_row)."""
    rest = FakeTwilioRest()
    await rest.start()
    tmp = Path(tempfile.mkdtemp(prefix="patterd-turn-"))
    fake_cores = set(CORES[1:]) if len(CORES) >= 2 else set(CORES)
    try:
        async with loadgen.generator("sk-bench", REPLY_TEXT, CALLER_TEXT, speech) as gen:
            cm = target(kind, gen.engine_url, rest, tmp)
            pid, url = await asyncio.to_thread(cm.__enter__)
            try:
                if len(CORES) >= 2:  # the target alone on the first core, every fake on the others
                    os.sched_setaffinity(pid, {CORES[0]})
                    os.sched_setaffinity(gen.pid, fake_cores)
                    os.sched_setaffinity(0, fake_cores)
                planned, net = await gen.plan(url, PUBLIC_HOST, NUMBER, rest.account_sid, rest.auth_token, n)
                try:
                    loop = asyncio.get_running_loop()
                    start = loop.time() + 0.5
                    measure_from = start + ramp_secs + settle_secs
                    until = measure_from + secs
                    plans = [p for p in planned if isinstance(p, loadgen.CallPlan)]
                    for k, p in enumerate(plans):
                        p.start_at = start + ramp_secs * k / n
                    turn = (RULE_FRAMES, LISTEN_SECS, LATE_MS)
                    result = asyncio.ensure_future(
                        gen.run(url, plans, measure_from, until, greeting_secs, turn=turn)
                    )
                    fake_pids = [os.getpid(), gen.pid]
                    await asyncio.sleep(max(0.0, measure_from - loop.time()))
                    cpu0, fakes0, wall0 = _fakes_cpu([pid]), _fakes_cpu(fake_pids), time.monotonic()
                    await asyncio.sleep(max(0.0, until - loop.time()))
                    cpu1, fakes1, wall1 = _fakes_cpu([pid]), _fakes_cpu(fake_pids), time.monotonic()
                    res = await result
                finally:
                    await net.__aexit__(None, None, None)
            finally:
                await asyncio.to_thread(cm.__exit__, None, None, None)
    finally:
        await rest.close()
        shutil.rmtree(tmp, ignore_errors=True)
    wall = wall1 - wall0
    fakes_pct = (fakes1 - fakes0) / wall * 100
    errors = [p for p in planned if isinstance(p, str)] + list(res["errors"])
    row = make_row(
        kind,
        n,
        "c",
        added=res["latencies_ms"],
        jitter=res["jitter_ms"],
        late=res["late"],
        frames=res["frames"],
        engine_delays=res["engine_delays_ms"],
        errors=errors,
        cpu_pct=(cpu1 - cpu0) / wall * 100,
        fakes_pct=fakes_pct,
        fake_cores=fake_cores,
        tick_lag_ms=res["tick_lag_ms"],
    )
    row["engine_appends"] = res["engine"]["appends"]
    row["engine_connections"] = res["engine"]["connections"]
    row["engine_audio_bytes"] = res["engine"]["audio_bytes_in"]
    return row
