"""Start-up with a call history: the daemon serves at once, loads the history behind, and says how far it got.

The hydrate is held mid-way deterministically: the oldest record's metadata.json is a named pipe, so
the hydrate's read of it blocks until the test writes the record into the pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from patterd.clock import iso_ms
from tests.daemon_process import DaemonProcess, run_daemon

pytestmark = pytest.mark.e2e

RECORDS = 3000  # more than one hydrate chunk (2000 rows), so listings fill up while it loads
START = datetime(2026, 1, 1, tzinfo=UTC)


def metadata(call_id: str, started: datetime) -> dict[str, Any]:
    return {
        "schema_version": "1.0",
        "call_id": call_id,
        "started_at": iso_ms(started),
        "ended_at": iso_ms(started + timedelta(seconds=60)),
        "duration_ms": 60_000,
        "status": "completed",
        "agent": {"name": "desk", "provider": "pipeline"},
    }


def write_history(root: Path) -> tuple[Path, bytes]:
    """RECORDS calls, 500 a day from START, plus the held one the day before; returns its pipe and bytes."""
    for n in range(RECORDS):
        started = START + timedelta(days=n // 500, seconds=(n % 500) * 60)
        day = iso_ms(started)
        directory = root / "calls" / day[0:4] / day[5:7] / day[8:10] / f"call-{n:05d}"
        directory.mkdir(parents=True)
        (directory / "metadata.json").write_text(json.dumps(metadata(f"call-{n:05d}", started)))
    held = root / "calls" / "2025" / "12" / "31" / "call-held"
    held.mkdir(parents=True)
    os.mkfifo(held / "metadata.json")
    body = json.dumps(metadata("call-held", START - timedelta(hours=1))).encode()
    return held / "metadata.json", body


def release(pipe: Path, body: bytes) -> None:
    """Write the held record into the pipe the hydrate is reading (a no-op when nobody reads it)."""
    with contextlib.suppress(OSError):  # ENXIO: no reader (the daemon is gone or never got there)
        fd = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.set_blocking(fd, True)
            os.write(fd, body)
        finally:
            os.close(fd)


async def get(session: aiohttp.ClientSession, daemon: DaemonProcess, path: str) -> Any:
    async with session.get(daemon.base_url + path) as resp:
        assert resp.status == 200, (path, resp.status, await resp.text())
        return await resp.json()


async def test_serves_while_the_history_loads(tmp_path: Path) -> None:
    records = tmp_path / "records"
    pipe, body = write_history(records)
    config = tmp_path / "patter.yaml"
    config.write_text(
        f"""carrier: {{type: local}}
persist: {records}
logging: {{retention_days: 0}}
server: {{drain_timeout_secs: 1}}  # the softphone call below never connects: do not wait 30 s for it
agents:
  - name: desk
    stt: {{type: offline}}
    llm: {{type: script}}
    tts: {{type: offline}}
"""
    )
    with run_daemon(config) as daemon:
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(daemon.base_url + "/readyz") as resp:
                    assert resp.status == 200  # serving although the hydrate cannot finish yet
                # Bounded poll for the first committed chunk: the hydrate is held at the pipe meanwhile.
                for _ in range(600):
                    page = await get(session, daemon, "/api/v1/calls?limit=50")
                    if len(page["calls"]) == 50:
                        break
                    await asyncio.sleep(0.05)
                assert page["history"]["loading"] is True
                assert page["history"]["total"] == RECORDS + 1
                # Newest days load first: the first page is already the right one.
                assert [c["call_id"] for c in page["calls"]] == [
                    f"call-{n:05d}" for n in range(2999, 2949, -1)
                ]
                status = await get(session, daemon, "/api/v1/status")
                assert status["history"]["loading"] is True
                assert 2000 <= status["history"]["loaded"] < RECORDS + 1
                # A new call is served meanwhile (and is not taken for one a crash left open).
                async with session.post(daemon.base_url + "/webhooks/local/voice", json={}) as resp:
                    assert resp.status == 201
                    new_call = (await resp.json())["call_id"]

                await asyncio.to_thread(release, pipe, body)
                await asyncio.to_thread(daemon.wait_log, lambda e: e.get("event") == "call records loaded")
                listed: list[str] = []
                cursor = ""
                while True:
                    page = await get(
                        session, daemon, "/api/v1/calls?limit=500" + (f"&cursor={cursor}" if cursor else "")
                    )
                    assert page["history"] == {"loading": False, "loaded": RECORDS + 1, "total": RECORDS + 1}
                    listed += [c["call_id"] for c in page["calls"]]
                    cursor = page["next_cursor"]
                    if not cursor:
                        break
                # the history, the held one and the new call, none doubled
                assert len(listed) == len(set(listed)) == RECORDS + 2
                assert listed[0] == new_call and listed[-1] == "call-held"
                status = await get(session, daemon, "/api/v1/status")
                assert status["store"]["recovered_in_progress"] == 0
        finally:
            await asyncio.to_thread(release, pipe, body)
