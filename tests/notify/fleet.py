"""A sender daemon and a central daemon over loopback: configs, softphone calls, and "every event delivered" checks.

Shared by tests/notify/test_fleet.py and bench/notify_outage.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.daemon_process import DaemonProcess

TOKEN = "fleet-shared-token-0123456789"
SOURCE = "edge-1"
AGENT = """
agents:
  - name: desk
    first_message: Hi there.
    stt: {type: offline, engine: pocketsphinx}
    llm: {type: script, intents: [{name: hi, examples: [hello], reply: Hello.}]}
    tts: {type: offline}
"""


def central_config(root: Path) -> Path:
    """The central patterd: a token (so fleet POSTs must be signed with it), records under `root`."""
    path = root / "central.yaml"
    path.write_text(
        f"carrier: {{type: local}}\npersist: {root / 'central-records'}\n"
        f"server: {{dashboard_token: {TOKEN}, drain_timeout_secs: 2}}\n" + AGENT
    )
    return path


def sender_config(root: Path, central_url: str, *, retry_max_secs: float = 0.5) -> Path:
    """A fleet member reporting to `central_url`; short retry cap so a test sees the end of an outage fast."""
    path = root / "sender.yaml"
    path.write_text(
        f"carrier: {{type: local}}\npersist: {root / 'sender-records'}\n"
        "server: {drain_timeout_secs: 2}\n"
        f"dashboard: {{notify_url: {central_url}, notify_token: {TOKEN}, source: {SOURCE}, "
        f"notify_retry_max_secs: {retry_max_secs}}}\n" + AGENT
    )
    return path


async def open_call(
    session: aiohttp.ClientSession, base_url: str
) -> tuple[str, aiohttp.ClientWebSocketResponse]:
    """A call on the browser softphone, up until the agent's greeting was heard (a transcript line)."""
    async with session.post(base_url + "/webhooks/local/voice", json={}) as resp:
        assert resp.status == 201, await resp.text()
        answer = await resp.json()
    ws = await session.ws_connect(base_url.replace("http", "ws") + answer["media_path"])
    await ws.send_str(json.dumps({"event": "start"}))
    async with asyncio.timeout(30):
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            body = json.loads(msg.data)
            if body["event"] == "mark":  # played at once, as far as this caller is concerned
                await ws.send_str(json.dumps({"event": "mark", "mark": {"name": body["mark"]["name"]}}))
            elif body["event"] == "transcript" and not body.get("partial"):
                return str(answer["call_id"]), ws


async def hang_up(ws: aiohttp.ClientWebSocketResponse) -> None:
    await ws.send_str(json.dumps({"event": "stop"}))
    await ws.close()


async def softphone_call(session: aiohttp.ClientSession, base_url: str) -> str:
    """One whole call: the agent greets, the caller hangs up."""
    call_id, ws = await open_call(session, base_url)
    await hang_up(ws)
    return call_id


def record(daemon: DaemonProcess, call_id: str) -> dict[str, Any]:
    status, body = daemon.request("GET", f"/api/v1/calls/{call_id}")
    assert status in (200, 404), body
    return body if status == 200 else {}


def without_source(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Event lines with the central's `source` tag taken out of call_started (the sender's lines have none)."""
    out = []
    for line in events:
        data = {
            k: v for k, v in line["data"].items() if not (line["type"] == "call_started" and k == "source")
        }
        out.append({**line, "data": data})
    return out


def delivered(sender: DaemonProcess, central: DaemonProcess, call_id: str) -> bool:
    """The central holds exactly the sender's record of a finished call: same lines, same order, none twice."""
    mine, theirs = record(sender, call_id), record(central, call_id)
    if not mine or not theirs or mine["metadata"]["status"] == "in_progress":
        return False
    return mine["transcript"] == theirs["transcript"] and without_source(mine["events"]) == without_source(
        theirs["events"]
    )


async def wait_delivered(
    sender: DaemonProcess, central: DaemonProcess, call_ids: list[str], timeout: float
) -> float:
    """Wait until every call is on the central exactly as on the sender; returns the seconds it took."""
    start = time.monotonic()
    while not await asyncio.to_thread(lambda: all(delivered(sender, central, c) for c in call_ids)):
        if time.monotonic() - start > timeout:
            report = {c: (record(sender, c), record(central, c)) for c in call_ids}
            raise AssertionError(f"not delivered within {timeout} s: {json.dumps(report)[:3000]}")
        await asyncio.sleep(0.1)
    return time.monotonic() - start


def notify_metrics(daemon: DaemonProcess) -> dict[str, float]:
    """The sender's patterd_fleet_notify_* samples by name without `_total` (and `:result` label)."""
    status, text = daemon.request("GET", "/metrics")
    assert status == 200
    out: dict[str, float] = {}
    for m in re.finditer(r'^(patterd_fleet_notify_\w+?)(?:\{result="(\w+)"\})? ([0-9.e+]+)$', text, re.M):
        name = m.group(1).removesuffix("_total") + (f":{m.group(2)}" if m.group(2) else "")
        out[name] = float(m.group(3))
    return out
