"""SIGKILL at the instant calls are answered: every call whose webhook got a 200 survives the restart.

A real daemon (Twilio carrier, offline agent) takes signed voice webhooks from several concurrent
callers; in each round it is SIGKILLed either the moment a chosen 200 arrives or at a seeded random
instant while webhooks are in flight. After every round the daemon restarts on the same records;
at the end every call id the carrier was handed in a 200 must be listed by `GET /api/v1/calls`.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.daemon_process import DaemonProcess, run_daemon
from tests.fakes.twilio import FakeTwilio, new_sid

pytestmark = pytest.mark.e2e

PUBLIC_HOST = "gw.example.com"
NUMBER = "+15550001234"
ROUNDS = 4  # each round is a daemon start: the slow part
CALLERS = 8  # concurrent webhooks: when the kill lands, others are mid-flight


def config_text(records: Path, account_sid: str, auth_token: str) -> str:
    # base_url points nowhere: these calls never connect media, so the daemon never calls Twilio's REST API.
    return f"""carrier: {{type: twilio, account_sid: {account_sid}, auth_token: {auth_token}, base_url: 'http://127.0.0.1:9'}}
phone_number: "{NUMBER}"
webhook_url: {PUBLIC_HOST}
persist: {records}
logging: {{level: info, retention_days: 0}}
server: {{dashboard: false}}
agents:
  - name: desk
    stt: {{type: offline}}
    llm: {{type: script}}
    tts: {{type: offline}}
"""


async def ring_until_killed(
    daemon: DaemonProcess, net: FakeTwilio, kill_after: int | None, delay: float | None
) -> set[str]:
    """Callers post voice webhooks until the daemon dies; returns the call ids answered with a 200.

    `kill_after`: SIGKILL the moment the n-th 200 arrives. `delay`: SIGKILL that long after the first.
    """
    answered: set[str] = set()
    dead = asyncio.Event()

    def kill() -> None:
        if not dead.is_set():
            dead.set()
            daemon.proc.send_signal(signal.SIGKILL)

    async def caller(n: int) -> None:
        seq = 0
        while not dead.is_set():
            seq += 1
            try:
                call = await net.inbound_call(f"+1555{n:03d}{seq:04d}", NUMBER, connect=False)
            except (aiohttp.ClientError, ConnectionError):
                return  # the daemon is gone: this webhook was never answered
            if call.webhook_status != 200 or call.twiml is None:
                continue
            answered.add(call.twiml.parameters["call_id"])
            if kill_after is not None and len(answered) >= kill_after:
                kill()  # right at the answer: nothing else runs in this process before the kill
            elif delay is not None and len(answered) == 1:
                asyncio.get_running_loop().call_later(delay, kill)

    await asyncio.gather(*(caller(n) for n in range(CALLERS)))
    await asyncio.to_thread(daemon.proc.wait, 10)
    return answered


async def listed_calls(base_url: str) -> list[str]:
    """Every call id `GET /api/v1/calls` lists, following the cursor."""
    ids: list[str] = []
    cursor = ""
    async with aiohttp.ClientSession() as session:
        while True:
            url = f"{base_url}/api/v1/calls?limit=500" + (f"&cursor={cursor}" if cursor else "")
            async with session.get(url) as resp:
                assert resp.status == 200, await resp.text()
                body = await resp.json()
            assert body["history"]["loading"] is False
            ids += [c["call_id"] for c in body["calls"]]
            cursor = body["next_cursor"]
            if not cursor:
                return ids


async def loaded(daemon: DaemonProcess) -> None:
    await asyncio.to_thread(daemon.wait_log, lambda e: e.get("event") == "call records loaded", 60.0)


async def test_sigkill_at_the_answer_loses_no_answered_call(tmp_path: Path) -> None:
    records = tmp_path / "records"
    account_sid, auth_token = new_sid("AC"), secrets.token_hex(16)
    config = tmp_path / "patter.yaml"
    config.write_text(config_text(records, account_sid, auth_token))
    rng = random.Random(12)
    told: set[str] = set()
    for round_no in range(ROUNDS):
        # Even rounds: kill as a 200 arrives (the 2nd to 12th); odd rounds: at a random instant.
        kill_after = rng.randint(2, 12) if round_no % 2 == 0 else None
        delay = None if kill_after is not None else rng.uniform(0.05, 0.3)
        with run_daemon(config) as daemon:
            await loaded(daemon)  # the previous round's crash is recovered before new calls pile up
            async with FakeTwilio(
                daemon.base_url, PUBLIC_HOST, account_sid=account_sid, auth_token=auth_token
            ) as net:
                answered = await ring_until_killed(daemon, net, kill_after, delay)
                net.calls.clear()  # no media streams to close: the daemon is gone
        assert answered, f"round {round_no}: no webhook was answered before the kill"
        told |= answered

    with run_daemon(config) as daemon:
        await loaded(daemon)
        listed = await listed_calls(daemon.base_url)
        _, status = await asyncio.to_thread(daemon.request, "GET", "/api/v1/status")
    lost = told - set(listed)
    print(
        f"\ncrash abuse: {ROUNDS} SIGKILLs, {len(told)} calls answered, {len(lost)} lost, "
        f"{len(listed)} listed, store {status['store']}"
    )
    assert not lost, f"{len(lost)} of {len(told)} answered calls lost: {sorted(lost)[:5]}"
    assert len(listed) == len(set(listed))  # none doubled
