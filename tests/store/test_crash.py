"""Crash safety: a process writing records is SIGKILLed mid-stream; re-hydrate loses and duplicates nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from patterd.store import CallStore

REPO = Path(__file__).resolve().parents[2]

# Keeps 20 calls in flight forever, reporting on stdout which calls are on disk (after a flush).
CHILD = r"""
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from patterd.protocols.events import CallEnded, CallStarted, CallStatusChanged, TranscriptLine, Usage
from patterd.store import CallStore

store = CallStore(Path(sys.argv[1]), redact_phone="mask")
t0 = datetime(2026, 3, 14, 23, 59, tzinfo=UTC)
live, n, step = [], 0, 0
while True:
    step += 1
    ts = t0 + timedelta(milliseconds=step * 10)
    while len(live) < 20:
        cid = f"call-{n:05d}"
        n += 1
        live.append(cid)
        store.handle(CallStarted(cid, ts, agent="a", agent_provider="pipeline", carrier="twilio", caller="+15551234567"))
        store.handle(CallStatusChanged(cid, ts, status="in_progress"))
    for cid in live:
        store.handle(TranscriptLine(cid, ts, role="assistant", text="word " * 40, latency_ms=500.0))
        store.handle(Usage(cid, ts, component="tts", provider="elevenlabs", quantities={"characters": 200}))
    if step % 3 == 0:
        store.handle(CallEnded(live.pop(0), ts, status="completed"))
    if step % 5 == 0:
        store.flush()
        print("on-disk", n, flush=True)
"""


def test_sigkill_mid_stream_loses_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert child.stdout is not None
    started_on_disk = 0
    try:
        for line in child.stdout:
            started_on_disk = int(line.split()[1])
            if started_on_disk >= 60:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert started_on_disk >= 60

    store = CallStore(tmp_path)
    report = store.hydrate()
    assert report.skipped_corrupt == 0
    assert report.records >= started_on_disk
    assert report.recovered_in_progress >= 1  # calls in flight at the kill
    ids: list[str] = []
    cursor = None
    while True:
        page, cursor = store.list_calls(limit=37, cursor=cursor)
        ids.extend(c["call_id"] for c in page)
        if cursor is None:
            break
    assert len(ids) == len(set(ids)) == report.records
    assert {f"call-{n:05d}" for n in range(started_on_disk)} <= set(ids)
    for path in (tmp_path / "calls").rglob("metadata.json"):
        meta = json.loads(path.read_bytes())
        assert meta["status"] in {"completed", "failed"}
        assert meta["caller"] == "***4567"
        assert path.parent.parent.name == "14"  # start day, although the calls ran past midnight
    assert not list(tmp_path.rglob("*.tmp"))
    for path in (tmp_path / "calls").rglob("*.jsonl"):
        chunks = path.read_bytes().split(b"\n")
        for chunk in chunks[:-1]:
            json.loads(chunk)  # only the last line may be torn
    detail = store.get_call(ids[0])
    assert detail is not None and detail["metadata"]["call_id"] == ids[0]
    again = store.hydrate()
    assert (again.records, again.parsed, again.recovered_in_progress) == (report.records, 0, 0)
    store.close()
