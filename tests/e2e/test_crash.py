"""SIGKILL with 20 calls in flight: on restart every record parses, none is lost or doubled, open ones are failed."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from patterd.store.records import CRASH_ERROR
from tests.daemon_process import run_daemon
from tests.e2e.scenarios import Api, ToolServer, TwilioCarrier, daemon_config, engine_server
from tests.fakes.openai_realtime import Say

pytestmark = pytest.mark.e2e

CALLS = 20


async def test_sigkill_with_calls_in_flight_loses_nothing(tmp_path: Path) -> None:
    records = tmp_path / "records"
    carrier = TwilioCarrier()
    await carrier.start()
    tool = ToolServer()
    await tool.start()
    try:
        async with engine_server(replies=[Say("Hello there.")] * (CALLS * 2)) as engine:
            config = tmp_path / "patter.yaml"
            config.write_text(daemon_config(carrier, engine.url, tool.url, records))
            cm = run_daemon(config)
            daemon = await asyncio.to_thread(cm.__enter__)
            try:
                await carrier.attach(daemon.base_url)
                calls = await asyncio.gather(
                    *(carrier.inbound_call(f"+1555123{i:04d}") for i in range(CALLS))
                )
                ids = {c.call_id for c in calls}
                assert len(ids) == CALLS
                # Every call is live and its opening record is on disk before the kill. The bound is
                # generous: 20 real-time calls on a loaded 2-core machine take a while to all be heard.
                await asyncio.gather(*(c.wait_heard(800, timeout=60) for c in calls))
                async with Api(daemon.base_url) as api:
                    status, body = await api.request("GET", "/api/v1/status")
                    assert status == 200 and len(body["live_calls"]) == CALLS
                for call_id in ids:
                    meta = json.loads(next(records.glob(f"calls/*/*/*/{call_id}/metadata.json")).read_text())
                    assert meta["status"] == "in_progress"
                daemon.proc.send_signal(signal.SIGKILL)
                await asyncio.to_thread(daemon.proc.wait, 10)
            finally:
                # Dead before the fake carrier detaches, on every path: a daemon still running here (an
                # assertion failed above) would hang its calls up over REST as detaching closes their
                # streams, and the fake would post status callbacks from a closing session (the
                # ClientOSError "Can not write request body" once seen in this teardown).
                if daemon.proc.poll() is None:
                    daemon.proc.kill()
                    await asyncio.to_thread(daemon.proc.wait, 10)
                await carrier.detach()
                await asyncio.to_thread(cm.__exit__, None, None, None)

            cm2 = run_daemon(config)
            daemon2 = await asyncio.to_thread(cm2.__enter__)
            try:
                # The history loads in the background once serving: wait for the hydrate's log line.
                await asyncio.to_thread(daemon2.wait_log, lambda e: e.get("event") == "call records loaded")
                async with Api(daemon2.base_url) as api:
                    status, body = await api.request("GET", "/api/v1/status")
                    assert status == 200, body
                    store = body["store"]
                    assert store["records"] == CALLS, store
                    assert store["recovered_in_progress"] == CALLS, store
                    assert store["skipped_corrupt"] == 0, store
                    status, listing = await api.request("GET", f"/api/v1/calls?limit={CALLS + 10}")
                    assert status == 200, listing
                    listed = [c["call_id"] for c in listing["calls"]]
                    assert sorted(listed) == sorted(ids)  # none lost, none doubled
                    for call_id in ids:
                        status, one = await api.request("GET", f"/api/v1/calls/{call_id}")
                        assert status == 200, one
                        assert one["metadata"]["status"] == "failed"
                        assert one["metadata"]["error"] == CRASH_ERROR
                for path in records.glob("calls/*/*/*/*/metadata.json"):
                    meta = json.loads(path.read_text())  # every record parses
                    assert meta["status"] == "failed" and meta["error"] == CRASH_ERROR, meta
                    for name in ("transcript.jsonl", "events.jsonl"):
                        jsonl = path.parent / name
                        if jsonl.exists():
                            lines = [ln for ln in jsonl.read_text().splitlines() if ln.strip()]
                            for line in lines[:-1]:
                                json.loads(line)  # a torn last line is allowed; nothing else is
            finally:
                await asyncio.to_thread(cm2.__exit__, None, None, None)
    finally:
        await carrier.close()
        await tool.close()
