"""Engine blips at hang-up: the Realtime link freezes or drops just before the caller hangs up, 50 times.

The real daemon runs in-process (its app on Hypercorn, the Twilio carrier, the call store) against the
fake Twilio media streams and the fake Realtime server over loopback. Every call must end with a final
status record, leave no engine socket open, and let the daemon stop without waiting out its drain time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from patterd.daemon import Daemon
from tests.fakes.openai_realtime import FakeRealtimeServer
from tests.fakes.twilio import FakeCall, FakeTwilio, FakeTwilioRest
from tests.inprocess_daemon import running_daemon

ROUNDS = 50
PUBLIC_HOST = "gw.example.com"
NUMBER = "+15550001234"
DRAIN_SECS = 4.0


@dataclass(frozen=True)
class Plan:
    """One round's blip: which fault, which comes first, and how far apart the fault and the hang-up are."""

    fault: str  # drop (the socket is cut) | freeze (the peer stops reading and answering pings)
    first: str  # fault | hangup
    spins: int  # event-loop turns between the two (the daemon runs on this loop: this steps through its work)
    delay: float  # seconds between the two


def fault_plan(i: int) -> Plan:
    """Round `i`'s blip, deterministic. Drops sweep the hang-up across the daemon's handling of the cut
    turn by turn, both orders; freezes sweep it across 0-1 s, through the keepalive noticing the freeze."""
    j = i // 2
    if i % 2 == 0:
        return Plan("drop", "hangup" if j % 2 else "fault", spins=j // 2, delay=0.0)
    return Plan("freeze", "fault", spins=0, delay=j * 0.04)


@dataclass
class Ended:
    """call.ended feed items by call id, waited on as they come."""

    calls: dict[str, dict[str, object]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def until(self, count: int, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while len(self.calls) < count:
                    self.changed.clear()
                    await self.changed.wait()


def config_text(rest: FakeTwilioRest, engine_url: str, records: Path) -> str:
    return f"""
carrier: {{type: twilio, account_sid: {rest.account_sid}, auth_token: {rest.auth_token}, base_url: '{rest.base_url}'}}
phone_number: "{NUMBER}"
webhook_url: {PUBLIC_HOST}
persist: {records}
server: {{drain_timeout_secs: {DRAIN_SECS}}}
agents:
  - name: blip
    engine:
      type: openai_realtime
      base_url: {engine_url}
      api_key: sk-test
      max_retries: 3
      retry_backoff_secs: 0.02
      connect_timeout_secs: 2
      keepalive_secs: 0.4
    system_prompt: You are terse.
"""


async def follow_ended(daemon: Daemon, ended: Ended) -> None:
    async for item in daemon.feed.subscribe(last_event_id=0):
        if item is not None and item.name == "call.ended":  # None: an idle keep-alive tick
            ended.calls[str(item.data["call_id"])] = item.data
            ended.changed.set()


async def test_fifty_engine_blips_at_hang_up_leave_no_zombie_call(tmp_path: Path) -> None:
    records = tmp_path / "records"
    async with FakeTwilioRest() as rest, FakeRealtimeServer() as engine:
        path = tmp_path / "patter.yaml"
        path.write_text(config_text(rest, engine.url, records))
        async with running_daemon(path, stop_timeout=DRAIN_SECS + 15) as (daemon, url, task):
            ended = Ended()
            follower = asyncio.create_task(follow_ended(daemon, ended))
            async with FakeTwilio(url, PUBLIC_HOST, rest=rest) as twilio:
                calls: list[FakeCall] = list(
                    await asyncio.gather(
                        *(twilio.inbound_call(to=NUMBER, continuous=False) for _ in range(ROUNDS))
                    )
                )
                assert all(c.twiml is not None and c.twiml.stream_url for c in calls)
                # Which engine connection is whose: call i presses its round number's two digits.
                for i, call in enumerate(calls):
                    await call.send_dtmf(str(i // 10))
                    await call.send_dtmf(str(i % 10))
                by_connection = engine.user_texts_by_connection
                await engine.wait_for(
                    lambda: len(by_connection) == ROUNDS and all(len(t) == 2 for t in by_connection.values()),
                    timeout=30.0,
                )
                connection_of = {
                    int(texts[0][-1] + texts[1][-1]): index for index, texts in by_connection.items()
                }
                assert sorted(connection_of) == list(range(ROUNDS)), by_connection
                loop = asyncio.get_running_loop()

                async def blip(i: int, call: FakeCall) -> None:
                    plan = fault_plan(i)

                    def fault() -> None:
                        (engine.drop if plan.fault == "drop" else engine.freeze)(connection_of[i])

                    if plan.first == "fault":
                        fault()
                    else:
                        stopping = asyncio.create_task(call.stop())
                    for _ in range(plan.spins):
                        await asyncio.sleep(0)
                    # The delay *is* the scenario (how soon after the blip the caller hangs up), not a wait.
                    await asyncio.sleep(plan.delay)
                    if plan.first == "fault":
                        await call.stop()
                    else:
                        fault()
                        await stopping

                t0 = loop.time()
                await asyncio.gather(*(blip(i, call) for i, call in enumerate(calls)))
                # A healthy call ends within the closing handshake's bound (2 s) after its hang-up.
                await ended.until(ROUNDS, timeout=8.0)
                zombies = ROUNDS - len(ended.calls)
                round_of = {call.call_sid: i for i, call in enumerate(calls)}
                live = [
                    fault_plan(round_of[s.spec.carrier_call_id]) for s in daemon.switchboard.calls.values()
                ]
                print(f"engine blips: {zombies} zombie calls of {ROUNDS}; ended in {loop.time() - t0:.2f} s")
                assert zombies == 0 and not live, f"{zombies} calls never ended: {live}"
                # Every engine socket is closed by the daemon: frozen ones see it once read again.
                engine.thaw_all()
                await engine.wait_for(lambda: engine.live == 0, timeout=5.0)
            stop_t0 = loop.time()
            daemon.request_stop()
            assert await asyncio.wait_for(task, DRAIN_SECS + 15) == 0
            stopped_in = loop.time() - stop_t0
            follower.cancel()
            assert stopped_in < DRAIN_SECS / 2, f"shutdown took {stopped_in:.1f} s: something kept draining"
    statuses = {}
    for meta_path in records.glob("calls/*/*/*/*/metadata.json"):
        meta = json.loads(meta_path.read_text())
        statuses[meta["call_id"]] = meta["status"]
    assert len(statuses) == ROUNDS
    assert set(statuses.values()) <= {"completed", "failed"}, statuses
    assert set(statuses) == set(ended.calls)
