"""Issue 6's scale targets through the real daemon's HTTP API: hydrate and GET /api/v1/calls at 100,000 records.

Run: `python bench/api_bench.py [--records 100000] [--calls 10] [--secs 10] [--keep DIR] [--json]
[--loading-calls N] [--starts-only] [--repeat K]`.

1. Writes N call records under a temporary `persist` root (`generate` from bench/store_bench.py).
2. Starts the real `patterd` (tests/daemon_process.py) on the shipped offline front desk with the
   local softphone carrier, `persist:` at that root and retention off (the records are dated
   2026-01…04), twice: cold (no index: hydrate parses every metadata.json) and warm (index
   present). Ready = start → the daemon's first stdout line, which it prints once serving; since
   issue 14 that is before the hydrate, which runs behind: from ready until the listing reports
   `history.loading` false, this process lists the first page (`?limit=50`) back to back and
   reports that latency ("while loading"); the hydrate's own time comes from its
   `call records loaded` log line. With `--loading-calls N`, N softphone calls (as in 3.) start as
   soon as the daemon is ready and run until the history is loaded; the listings are then measured
   from the moment every call is connected, so each sample is taken while calls stream media.
   `--repeat K` starts the daemon K times per kind (cold, warm, alternating) for min/median figures.
3. On the warm daemon, K softphone calls run in a separate process (POST /webhooks/local/voice,
   then the local media protocol: 20 ms μ-law frames in real time, espeak-ng phrases the agent
   answers, marks echoed once the agent's audio would have played). While they run, this process
   requests the ops API sequentially over one keep-alive connection (latency, not throughput),
   round-robin over the query kinds, for `--secs`, and prints p50/p95/p99/max per kind.

Targets (issue 6): hydrate of 100,000 records ≤ 5 s, `GET /api/v1/calls?limit=50` p99 ≤ 50 ms at
100,000 records while calls are running. `--pyspy PATH` records the daemon with py-spy during the
measured window. `--drop-caches` (root) also times both starts with the kernel's page cache dropped
first, as on the first start after a reboot.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from bench.api_queries import Client, hammer, percentile  # noqa: E402
from bench.procstat import cpu_secs  # noqa: E402
from bench.softphone_callers import run_callers  # noqa: E402
from bench.store_bench import generate  # noqa: E402
from patterd.store.index import INDEX_NAME  # noqa: E402
from tests.daemon_process import DaemonProcess, run_daemon  # noqa: E402
from tests.fakes.twilio import spoken_ulaw  # noqa: E402

TARGET_HYDRATE_SECS = 5.0
TARGET_LIST_P99_MS = 50.0
# What the callers say, in turn (the front desk's grammar knows these); never "bye": calls stay up.
PHRASES = ("hello", "what are your opening hours", "where are you located", "what time do you close today")


# ---------------------------------------------------------------- records and config


def write_config(directory: Path, persist: Path, stt_engine: str | None = None) -> Path:
    """The shipped front desk (config/patter.yaml's agents), softphone carrier, records at `persist`.

    `stt_engine` (pocketsphinx, whisper) pins the offline STT engine the shipped config leaves on auto.
    """
    shipped = yaml.safe_load((ROOT / "config" / "patter.yaml").read_text())
    for agent in shipped["agents"] if stt_engine else ():
        if agent.get("stt", {}).get("type") == "offline":
            agent["stt"]["engine"] = stt_engine
    config = {
        "carrier": {"type": "local"},
        "server": {"host": "127.0.0.1", "port": 0},
        "logging": {"retention_days": 0},  # the generated records are months old: keep them
        "persist": str(persist),
        "agents": shipped["agents"],
    }
    path = directory / "patter.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass
class Start:
    """One daemon start: ready time, the hydrate's own time, and the store stats it reports."""

    label: str
    ready_secs: float
    hydrate: dict[str, float]
    store: dict[str, Any]
    # GET /api/v1/calls?limit=50 latency (ms) between ready and the history loaded (issue 14: the
    # daemon serves first and hydrates behind; listings meanwhile answer from what is loaded)
    while_loading: dict[str, float] = field(default_factory=dict)
    history_secs: float = 0.0  # start → history loaded (the client saw `history.loading` false)
    loading_calls: int = 0  # softphone calls streaming while the listings were measured
    callers: dict[str, Any] = field(default_factory=dict)  # what those callers saw (CallerStats)


def hydrate_report(daemon: DaemonProcess) -> dict[str, float]:
    """The numbers of the hydrate report in the daemon's `call records loaded` log line."""
    entry = daemon.wait_log(lambda e: e.get("event") == "call records loaded", timeout=300.0)
    found = re.findall(r"(\w+)=([0-9.]+)[,)]", str(entry.get("report", "")))
    return {name: float(value) for name, value in found}


def timed_start(
    config: Path, label: str, calls: int = 0, speech: tuple[bytes, ...] = ()
) -> tuple[Start, Any]:
    """Enter run_daemon, timing start → first stdout line; returns the Start and the context manager.

    With `calls`, that many softphone calls run from ready until the history is loaded, and the
    listings are measured once they are all connected.
    """
    began = time.perf_counter()
    ctx = run_daemon(config)
    daemon = ctx.__enter__()
    ready = time.perf_counter() - began
    callers = None
    if calls:
        callers, connected, stop, out = start_callers(daemon.base_url, calls, speech)
        if not connected.wait(60):
            ctx.__exit__(None, None, None)
            raise SystemExit(f"the {calls} softphone calls did not all connect within 60 s")
    samples = list_while_loading(daemon.base_url)
    history = time.perf_counter() - began
    report = hydrate_report(daemon)
    status, body = daemon.request("GET", "/api/v1/status", timeout=60)
    caller_stats: dict[str, Any] = {}
    if callers is not None:  # after the status: ten calls ending at once stall the daemon for seconds
        stop.set()
        caller_stats = out.get(timeout=30)
        callers.join(10)
    if status != 200:
        ctx.__exit__(None, None, None)
        raise SystemExit(f"GET /api/v1/status answered {status}: {body}")
    loading = summary(samples) if samples else {}
    start = Start(label, ready, report, body["store"], loading, history, calls, caller_stats)
    return start, (ctx, daemon)


def start_callers(base_url: str, calls: int, speech: tuple[bytes, ...]) -> tuple[Any, Any, Any, Any]:
    """`calls` softphone callers in their own process: (process, all-connected event, stop event, stats queue)."""
    mpctx = mp.get_context("fork")
    connected, stop, out = mpctx.Event(), mpctx.Event(), mpctx.Queue()
    proc = mpctx.Process(
        target=run_callers, args=(base_url, calls, speech, connected, stop, out), daemon=True
    )
    proc.start()
    return proc, connected, stop, out


def list_while_loading(base_url: str) -> list[float]:
    """First-page listings one after another from ready until the listing says the history is loaded."""
    client = Client(base_url)
    samples: list[float] = []
    while True:
        ms, status, body = client.get("/api/v1/calls?limit=50")
        if status != 200:
            raise SystemExit(f"GET /api/v1/calls answered {status} while the history loaded: {body}")
        if not body.get("history", {}).get("loading"):
            return samples
        samples.append(ms)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=10, help="softphone calls running while measuring")
    parser.add_argument("--secs", type=float, default=10.0, help="length of the measured window")
    parser.add_argument(
        "--keep", type=Path, help="use (and keep) this records root instead of a temporary one"
    )
    parser.add_argument("--pyspy", type=Path, help="record the daemon with py-spy (raw) to this file")
    parser.add_argument(
        "--drop-caches",
        action="store_true",
        help="also time both starts after dropping the page cache (needs root: /proc/sys/vm/drop_caches)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument(
        "--loading-calls", type=int, default=0, help="softphone calls running while the history loads"
    )
    parser.add_argument(
        "--starts-only", action="store_true", help="only the starts (no steady-state window afterwards)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="starts per kind, alternating cold and warm")
    parser.add_argument(
        "--stt-engine", choices=("pocketsphinx", "whisper"), help="the callers' offline STT (default: auto)"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="patterd-api-bench-"))
    root = args.keep or work / "records"
    result: dict[str, Any] = {"records": args.records, "calls": args.calls, "secs": args.secs}
    try:
        if not (root / "calls").exists():
            began = time.perf_counter()
            generate(root, args.records)
            print(f"generated {args.records} records in {time.perf_counter() - began:.1f} s at {root}")
        config = write_config(work, root, args.stt_engine)
        starts: list[Start] = []
        # (drop the page cache first?, delete the index first?); the last start stays up for the load.
        plan = [(False, True), (False, False)] * args.repeat
        plan += [(True, True), (True, False)] if args.drop_caches else []
        speech = tuple(spoken_ulaw(p) for p in PHRASES)
        for drop, no_index in plan:
            if no_index:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{root / INDEX_NAME}{suffix}").unlink(missing_ok=True)
            os.sync()
            if drop:
                Path("/proc/sys/vm/drop_caches").write_text("3\n")  # as after a reboot
            label = ("cold (no index)" if no_index else "warm (index present)") + (
                ", page cache dropped" if drop else ""
            )
            start, (ctx, daemon) = timed_start(config, label, args.loading_calls, speech)
            starts.append(start)
            if len(starts) < len(plan) or args.starts_only:
                ctx.__exit__(None, None, None)
        result["starts"] = [s.__dict__ for s in starts]
        if args.starts_only:
            report(result)
            return 0
        try:
            mpctx = mp.get_context("fork")
            ready, stop, out = mpctx.Event(), mpctx.Event(), mpctx.Queue()
            callers = mpctx.Process(
                target=run_callers, args=(daemon.base_url, args.calls, speech, ready, stop, out), daemon=True
            )
            callers.start()
            if args.calls and not ready.wait(30):
                raise SystemExit("the softphone calls did not all connect within 30 s")
            time.sleep(2.0)  # past the greetings' start: every call is in its steady state
            _, status = daemon.request("GET", "/api/v1/status")
            live_before = len(status["live_calls"])
            spy = None
            if args.pyspy is not None:
                spy = subprocess.Popen(
                    [
                        "py-spy",
                        "record",
                        "--format",
                        "raw",
                        "-r",
                        "200",
                        "--threads",  # the event loop's own thread apart from the STT/TTS workers
                        "--nonblocking",  # pausing the daemon 200 times a second would be the stall measured
                        "--gil",  # only the thread holding the GIL: whose Python work the event loop waits for
                        "-o",
                        str(args.pyspy),
                        "-p",
                        str(daemon.proc.pid),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(1.0)
            cpu0, t0 = cpu_secs(daemon.proc.pid), time.monotonic()
            samples, errors, live_seen = hammer(daemon.base_url, args.records, args.secs)
            cpu1, t1 = cpu_secs(daemon.proc.pid), time.monotonic()
            if spy is not None:
                spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
                spy.wait(30)
            _, status = daemon.request("GET", "/api/v1/status")
            live_after = len(status["live_calls"])
            stop.set()
            caller_stats = out.get(timeout=30)
            callers.join(10)
        finally:
            ctx.__exit__(None, None, None)
        result.update(
            live_calls={"before": live_before, "after": live_after, "in_progress_listed_max": live_seen},
            daemon_cpu_pct=round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
            callers=caller_stats,
            errors=errors,
            latency_ms={kind: summary(values) for kind, values in samples.items()},
        )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    report(result)
    return 0


def summary(values: list[float]) -> dict[str, float]:
    """n, p50, p95, p99, max of latency samples (ms)."""
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 2),
        "p95": round(percentile(ordered, 0.95), 2),
        "p99": round(percentile(ordered, 0.99), 2),
        "max": round(ordered[-1], 2),
    }


def report(result: dict[str, Any]) -> None:
    """Print the result as tables (or JSON with --json)."""
    if "--json" in sys.argv:
        print(json.dumps(result, indent=2))
        return
    print(f"\n{result['records']} records; target: ready/hydrate ≤ {TARGET_HYDRATE_SECS} s")
    print(
        "| start | ready s | history loaded s | hydrate s | records | parsed/unchanged | skipped corrupt "
        "| list while loading: n, p50/p99/max ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for s in result["starts"]:
        store = s["store"]
        hyd = s["hydrate"]
        wl = s["while_loading"]
        during = f"{wl['n']}, {wl['p50']}/{wl['p99']}/{wl['max']}" if wl else "-"
        if s["loading_calls"]:
            c = s["callers"]
            during += (
                f" ({s['loading_calls']} calls, {c['late_frames']} late frames, {len(c['errors'])} errors)"
            )
        print(
            f"| {s['label']} | {s['ready_secs']:.2f} | {s['history_secs']:.2f} | "
            f"{hyd.get('seconds', float('nan')):.2f} | "
            f"{store.get('records')} | {hyd.get('parsed', 0):.0f}/{hyd.get('unchanged', 0):.0f} | "
            f"{store.get('skipped_corrupt')} | {during} |"
        )
    if "callers" not in result:
        return
    c = result["callers"]
    live = result["live_calls"]
    print(
        f"\nwhile {result['calls']} softphone calls ran (live before/after: {live['before']}/{live['after']}; "
        f"calls started {c['calls_started']}, frames sent {c['frames_sent']}, late frames {c['late_frames']}, "
        f"agent audio {c['agent_audio_secs']:.1f} s, transcript lines {c['transcript_lines']}, "
        f"marks echoed {c['marks_echoed']}); daemon CPU {result['daemon_cpu_pct']} % of a core"
    )
    print(
        f"sequential requests for {result['secs']} s; target: /api/v1/calls p99 ≤ {TARGET_LIST_P99_MS} ms\n"
    )
    print("| query | n | p50 ms | p95 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for kind, s in result["latency_ms"].items():
        print(f"| {kind} | {s['n']} | {s['p50']} | {s['p95']} | {s['p99']} | {s['max']} |")
    errors = result["errors"] + c["errors"]
    print(f"\nerrors: {len(errors)}" + "".join(f"\n  {e}" for e in errors[:10]))


if __name__ == "__main__":
    sys.exit(main())
