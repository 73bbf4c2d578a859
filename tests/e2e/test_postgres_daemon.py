"""The real daemon with `persist: postgresql://…` takes a call; the API lists and shows it from the database."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest

from patterd.protocols.audio import silence_ulaw
from tests.daemon_process import DaemonProcess, run_daemon
from tests.services import postgres_url  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e


async def get(session: aiohttp.ClientSession, daemon: DaemonProcess, path: str) -> Any:
    async with session.get(daemon.base_url + path) as resp:
        assert resp.status == 200, (path, resp.status, await resp.text())
        return await resp.json()


@pytest.fixture
async def role(postgres_url: str) -> AsyncIterator[tuple[str, str]]:  # noqa: F811
    """A login role of this test with a password found nowhere else (to look for in the logs)."""
    name, password = "patterd_r_" + secrets.token_hex(4), "pw-" + secrets.token_hex(12)
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        await conn.execute(f"GRANT CREATE ON SCHEMA public TO {name}")
        yield name, password
        await conn.execute(f"DROP OWNED BY {name}")
        await conn.execute(f"DROP ROLE {name}")
    finally:
        await conn.close()


async def test_a_call_recorded_in_postgresql(
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
    role: tuple[str, str],
) -> None:
    parts = urlsplit(postgres_url)
    user, password = role
    host = parts.netloc.rpartition("@")[2]
    in_config = urlunsplit((parts.scheme, f"{user}:${{PG_PASSWORD}}@{host}", parts.path, "", ""))
    config = tmp_path / "patter.yaml"
    config.write_text(
        f"""carrier: {{type: local}}
persist: {in_config}
server: {{drain_timeout_secs: 5}}
agents:
  - name: desk
    stt: {{type: offline}}
    llm: {{type: script}}
    tts: {{type: offline}}
"""
    )
    with run_daemon(config, env={"PG_PASSWORD": password}) as daemon:
        async with aiohttp.ClientSession() as session:
            async with session.post(daemon.base_url + "/webhooks/local/voice", json={}) as resp:
                assert resp.status == 201
                body = await resp.json()
            call_id = body["call_id"]
            ws = await session.ws_connect(daemon.base_url.replace("http", "ws") + body["media_path"])
            await ws.send_str(json.dumps({"event": "start"}))
            payload = base64.b64encode(silence_ulaw(20)).decode()
            await ws.send_str(json.dumps({"event": "media", "media": {"payload": payload}}))
            await asyncio.to_thread(daemon.wait_log, lambda e: e.get("event") == "call connected")
            await ws.send_str(json.dumps({"event": "stop"}))  # the caller hangs up
            await ws.close()

            deadline = time.monotonic() + 20
            while True:  # the end is written behind the call: poll the API (bounded)
                listing = await get(session, daemon, "/api/v1/calls?limit=10")
                if listing["calls"] and listing["calls"][0]["status"] == "completed":
                    break
                assert time.monotonic() < deadline, listing
                await asyncio.sleep(0.05)
            assert [c["call_id"] for c in listing["calls"]] == [call_id]
            detail = await get(session, daemon, f"/api/v1/calls/{call_id}")
            assert detail["metadata"]["call_id"] == call_id
            assert detail["events"][0]["type"] == "call_started"
            status = await get(session, daemon, "/api/v1/status")
            assert status["store"]["database_up"] == 1 and status["store"]["records"] == 1
    assert daemon.proc.returncode == 0
    assert not any(password in line for line in daemon.log_lines)

    # The rows are there for every other replica: read them straight from the database.
    conn = await asyncpg.connect(postgres_url)
    try:
        row = await conn.fetchrow(
            "SELECT status, agent, metadata::text FROM calls WHERE call_id = $1", call_id
        )
        events = await conn.fetchval("SELECT count(*) FROM call_events WHERE call_id = $1", call_id)
    finally:
        await conn.close()
    assert row is not None and (row["status"], row["agent"]) == ("completed", "desk")
    assert json.loads(row["metadata"]) == detail["metadata"]
    assert events == len(detail["events"])
