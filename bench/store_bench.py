"""Benchmark of the call store at scale: hydrate N records cold and warm, then list_calls latency.

Run: `python bench/store_bench.py [--records 100000] [--keep DIR]`. Targets (issue 6): hydrate of
100,000 records ≤ 5 s, list_calls(limit=50) p99 ≤ 50 ms at 100,000 records.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from patterd.clock import iso_ms
from patterd.protocols.events import CallEnded, CallStarted, TranscriptLine
from patterd.store import CallStore
from patterd.store.index import INDEX_NAME

AGENTS = ("receptionist", "support", "sales")
STATUSES = ("completed", "completed", "completed", "failed", "no-answer", "busy", "voicemail")


def generate(root: Path, records: int, per_day: int = 1000) -> None:
    """Write `records` call directories straight to disk (metadata.json + a small transcript)."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(records):
        started = start + timedelta(days=n // per_day, seconds=(n % per_day) * 80)
        call_id = f"call-{n:07d}"
        day = iso_ms(started)
        directory = root / "calls" / day[0:4] / day[5:7] / day[8:10] / call_id
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "schema_version": "1.0",
            "call_id": call_id,
            "trace_id": f"{n:032x}",
            "started_at": day,
            "ended_at": iso_ms(started + timedelta(seconds=75)),
            "duration_ms": 75_000,
            "status": STATUSES[n % len(STATUSES)],
            "caller": "***4567",
            "callee": "***1234",
            "telephony_provider": "twilio",
            "provider_mode": "realtime",
            "agent": {"name": AGENTS[n % len(AGENTS)], "provider": "openai_realtime"},
            "turns": 6,
            "cost": {"total": 0.21, "stt": 0.0, "tts": 0.0, "llm": 0.19, "telephony": 0.02},
            "latency": {"p50_ms": 610.0, "p95_ms": 900.0, "p99_ms": 950.0},
            "error": None,
            "direction": "inbound",
        }
        (directory / "metadata.json").write_text(json.dumps(meta))
        line = json.dumps({"schema_version": "1.0", "ts": day, "role": "user", "text": "hello"})
        (directory / "transcript.jsonl").write_text((line + "\n") * 6)


def timed_hydrate(root: Path, label: str) -> float:
    store = CallStore(root)
    began = time.perf_counter()
    report = store.hydrate()
    seconds = time.perf_counter() - began
    store.close()
    print(
        f"{label}: {seconds:.2f} s  (records={report.records} parsed={report.parsed} unchanged={report.unchanged})"
    )
    return seconds


def run_calls(store: CallStore, stop: threading.Event) -> int:
    """Feed calls through the store (20 in flight) until `stop`; the number of events handled."""
    start = datetime(2026, 6, 1, tzinfo=UTC)
    live: list[str] = []
    n = handled = 0
    while not stop.is_set():
        ts = start + timedelta(milliseconds=handled)
        while len(live) < 20:
            live.append(f"live-{n:06d}")
            store.handle(
                CallStarted(live[-1], ts, agent="support", agent_provider="pipeline", carrier="twilio")
            )
            n += 1
        for call_id in live:
            store.handle(TranscriptLine(call_id, ts, role="assistant", text="hello there", latency_ms=600.0))
        handled += len(live)
        if handled % 100 == 0:
            store.handle(CallEnded(live.pop(0), ts))
        time.sleep(0.001)  # pace: ~20k lines/s would be far beyond a real load
    return handled


def list_latencies(root: Path, rounds: int) -> None:
    store = CallStore(root)
    stop = threading.Event()
    feeder = threading.Thread(target=run_calls, args=(store, stop), daemon=True)
    feeder.start()
    cases: dict[str, dict[str, object]] = {
        "newest page": {},
        "status=failed": {"status": "failed"},
        "agent=support": {"agent": "support"},
        "since+until": {
            "since": datetime(2026, 2, 1, tzinfo=UTC),
            "until": datetime(2026, 2, 15, tzinfo=UTC),
        },
    }
    for label, filters in cases.items():
        samples: list[float] = []
        cursor = None
        for _ in range(rounds):
            began = time.perf_counter()
            _page, cursor = store.list_calls(limit=50, cursor=cursor, **filters)  # type: ignore[arg-type]
            samples.append((time.perf_counter() - began) * 1000)
        samples.sort()
        p50 = statistics.median(samples)
        p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
        print(f"list_calls(limit=50, {label}, paging, 20 calls running): p50 {p50:.2f} ms  p99 {p99:.2f} ms")
    stop.set()
    feeder.join()
    store.flush()
    print(f"store write errors: {store.write_errors}, live calls at the end: {len(store.live_calls())}")
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--keep", type=Path, help="use (and keep) this directory instead of a temporary one")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="patterd-bench-"))
    try:
        if not (root / "calls").exists():
            began = time.perf_counter()
            generate(root, args.records)
            print(f"generated {args.records} records in {time.perf_counter() - began:.1f} s at {root}")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{root / INDEX_NAME}{suffix}").unlink(missing_ok=True)
        os.sync()
        timed_hydrate(root, "hydrate, no index (cold)")
        timed_hydrate(root, "re-hydrate, warm index")
        list_latencies(root, args.rounds)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
