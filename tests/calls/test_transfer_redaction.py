"""A transfer under `redact_phone: mask`: the number never appears in full in the feed or the call's records."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from patterd.daemon import Daemon
from tests.fakes.openai_realtime import CallTool, FakeRealtimeServer
from tests.fakes.twilio import FakeTwilio, FakeTwilioRest
from tests.inprocess_daemon import running_daemon

NUMBER = "+15550001234"
TRANSFER_TO = "+15550009999"


def config_text(rest: FakeTwilioRest, engine_url: str, records: Path) -> str:
    return f"""
carrier: {{type: twilio, account_sid: {rest.account_sid}, auth_token: {rest.auth_token}, base_url: '{rest.base_url}'}}
phone_number: "{NUMBER}"
webhook_url: gw.example.com
persist: {records}
logging: {{redact_phone: mask}}
agents:
  - name: desk
    engine: {{type: openai_realtime, base_url: '{engine_url}', api_key: sk-test}}
    system_prompt: Transfer every caller.
    tools: [{{type: transfer_call, numbers: ["{TRANSFER_TO}"]}}]
"""


async def feed_items(daemon: Daemon, into: list[tuple[str, dict[str, Any]]], ended: asyncio.Event) -> None:
    async for item in daemon.feed.subscribe(last_event_id=0):
        if item is not None:
            into.append((item.name, item.data))
            if item.name == "call.ended":
                ended.set()


async def test_the_transfer_number_is_masked_in_the_call_ended_reason(tmp_path: Path) -> None:
    records = tmp_path / "records"
    async with (
        FakeTwilioRest() as rest,
        FakeRealtimeServer(replies=[CallTool("transfer_call", {"number": TRANSFER_TO})]) as engine,
    ):
        path = tmp_path / "patter.yaml"
        path.write_text(config_text(rest, engine.url, records))
        async with running_daemon(path) as (daemon, url, _):
            items: list[tuple[str, dict[str, Any]]] = []
            ended = asyncio.Event()
            follower = asyncio.create_task(feed_items(daemon, items, ended))
            async with FakeTwilio(url, "gw.example.com", rest=rest) as twilio:
                call = await twilio.inbound_call(to=NUMBER, continuous=False)
                await engine.wait_for(lambda: len(engine.sessions) == 1)
                await call.send_dtmf("0")  # the caller's turn: the model answers with the transfer
                await asyncio.wait_for(ended.wait(), 10)
                assert call.transferred_to == TRANSFER_TO  # the carrier was told the real number
            follower.cancel()
    reason = next(data["reason"] for name, data in items if name == "call.ended")
    assert reason == "transferred to ***9999"
    assert TRANSFER_TO not in json.dumps(items)
    [directory] = list(records.glob("calls/*/*/*/*"))
    events = [json.loads(line) for line in (directory / "events.jsonl").read_text().splitlines()]
    assert [e["data"]["reason"] for e in events if e["type"] == "call_ended"] == ["transferred to ***9999"]
    for file in directory.iterdir():
        assert "5550009999" not in file.read_text(), file.name
