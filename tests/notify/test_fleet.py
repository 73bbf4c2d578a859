"""A sender daemon reports its calls to a central daemon (real processes over loopback), through an outage of the central."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import aiohttp
import pytest

from patterd.notify.signing import signed_headers
from tests.daemon_process import run_daemon
from tests.notify.fleet import (
    SOURCE,
    TOKEN,
    central_config,
    hang_up,
    notify_metrics,
    open_call,
    record,
    sender_config,
    softphone_call,
    wait_delivered,
)

pytestmark = pytest.mark.e2e

# Failed retries of the sender to wait for while the central is down (the bench holds it down for 30 s).
OUTAGE_RETRIES = int(os.environ.get("NOTIFY_OUTAGE_RETRIES", "3"))


async def test_calls_reach_the_central_through_an_outage_once_each_in_order(tmp_path: Path) -> None:
    with run_daemon(central_config(tmp_path), token=TOKEN) as central:
        port = urlparse(central.base_url).port
        assert port is not None
        with run_daemon(sender_config(tmp_path, central.base_url)) as sender:
            async with aiohttp.ClientSession() as session:
                calls = [await softphone_call(session, sender.base_url)]
                await wait_delivered(sender, central, calls, timeout=20)
                status, listing = central.request("GET", "/api/v1/calls")
                assert status == 200
                assert [(c["call_id"], c["source"]) for c in listing["calls"]] == [(calls[0], SOURCE)]
                # A call live across the outage: its start and greeting reach the central before it stops.
                spanning, ws = await open_call(session, sender.base_url)
                calls.append(spanning)
                await wait_until(lambda: len(record(central, spanning).get("transcript", [])) == 1)

                assert central.stop() == 0  # the central goes away; calls go on on the sender
                await hang_up(ws)
                calls.append(await softphone_call(session, sender.base_url))
                calls.append(await softphone_call(session, sender.base_url))
                deadline = time.monotonic() + 30
                while notify_metrics(sender)["patterd_fleet_notify_failures"] < OUTAGE_RETRIES:
                    assert time.monotonic() < deadline, notify_metrics(sender)
                    await _tick()
                held = notify_metrics(sender)
                assert held["patterd_fleet_notify_queue_depth"] > 0

                with run_daemon(central_config(tmp_path), token=TOKEN, port=port) as back:
                    await wait_delivered(sender, back, calls, timeout=30)
                    status, listing = back.request("GET", "/api/v1/calls")
                    assert {(c["call_id"], c["source"], c["status"]) for c in listing["calls"]} == {
                        (c, SOURCE, "completed") for c in calls
                    }
                    for call_id in calls:  # the spanning call too: its record continued, not restarted
                        mine, theirs = record(sender, call_id), record(back, call_id)
                        for key in (
                            "status",
                            "turns",
                            "duration_ms",
                            "started_at",
                            "ended_at",
                            "agent",
                            "caller",
                        ):
                            assert mine["metadata"][key] == theirs["metadata"][key], (call_id, key)
                        assert theirs["metadata"]["error"] is None and theirs["metadata"]["source"] == SOURCE
                        assert theirs["transcript"] and theirs["transcript"][0]["role"] == "assistant"
                    final = notify_metrics(sender)
                    assert final["patterd_fleet_notify_queue_depth"] == 0
                    assert final["patterd_fleet_notify_events:dropped"] == 0
                    stored = sum(
                        len(record(sender, c)["events"]) + len(record(sender, c)["transcript"]) for c in calls
                    )
                    assert final["patterd_fleet_notify_events:sent"] == stored
    assert not any(TOKEN in line for line in sender.log_lines)


async def _tick() -> None:
    await asyncio.sleep(0.1)


async def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        assert time.monotonic() < deadline, "condition not met in time"
        await _tick()


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


@pytest.mark.parametrize("switch", ["off", " FALSE ", "0", "No"])
def test_switch_values(switch: str) -> None:
    from patterd.notify.sender import notify_switched_off

    assert notify_switched_off({"PATTER_DASHBOARD_NOTIFY": switch})
    assert not notify_switched_off({"PATTER_DASHBOARD_NOTIFY": "1"})
    assert not notify_switched_off({})


async def test_switched_off_sends_nothing_and_the_fleet_route_is_guarded(tmp_path: Path) -> None:
    with run_daemon(central_config(tmp_path), token=TOKEN) as central:
        env = {"PATTER_DASHBOARD_NOTIFY": "Off"}
        with run_daemon(sender_config(tmp_path, central.base_url), env=env) as sender:
            async with aiohttp.ClientSession() as session:
                call_id = await softphone_call(session, sender.base_url)
                status, page = sender.request("GET", "/")
                assert status == 200 and "<html" in page.lower()  # the local dashboard is still served
            assert notify_metrics(sender) == {}
            assert sender.stop() == 0  # a notifier would flush here: after it, nothing more can come
        assert record(central, call_id) == {}
        assert central.request("GET", "/api/v1/calls")[1]["calls"] == []

        url = central.base_url + "/api/v1/fleet/events"
        batch = {
            "source": "edge-9",
            "events": [
                {
                    "id": "c1:0",
                    "call_id": "c1",
                    "seq": 0,
                    "type": "call_started",
                    "ts": "2026-01-01T00:00:00.000Z",
                    "data": {"direction": "inbound", "agent": "desk"},
                }
            ],
        }
        body = json.dumps(batch).encode()
        assert _post(url, body, {}) == 401  # unsigned
        assert (
            _post(url, body, {"Authorization": f"Bearer {TOKEN}"}) == 401
        )  # the token itself is not the signature
        assert _post(url, body, signed_headers("wrong-token-0123456789", body, time.time())) == 401
        assert _post(url, body, signed_headers(TOKEN, body, time.time() - 3600)) == 401  # stale
        bad = json.dumps(
            {**batch, "events": [*batch["events"], {"call_id": "c1", "seq": 1, "type": "nope"}]}
        ).encode()
        assert _post(url, bad, signed_headers(TOKEN, bad, time.time())) == 400  # one bad event: none stored
        assert central.request("GET", "/api/v1/calls")[1]["calls"] == []
        assert _post(url, body, signed_headers(TOKEN, body, time.time())) == 200
        assert _post(url, body, signed_headers(TOKEN, body, time.time())) == 200  # a retry: applied once
        detail = record(central, "c1")
        assert detail["metadata"]["source"] == "edge-9" and len(detail["events"]) == 1
