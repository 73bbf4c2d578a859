"""The fleet: three real daemons behind a round-robin load balancer, sharing real Redis and PostgreSQL.

Fake Twilio callers ring the balancer, so a call's webhook and its media websocket land on different replicas;
hang-up through any replica reaches the holder; every replica's listing and dashboard show every call; a
SIGKILLed replica's calls end `failed` (recorded by the survivors) while the others' calls go on talking; a
rolling restart (SIGTERM, drain, start again, one replica at a time) cuts no call. Prints the figures
docs/operations.md ("Scaling out") quotes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests import daemon_process
from tests.cluster.replicas import SECRET, eventually, get_json, redis_keys_cleaned
from tests.daemon_process import DaemonProcess, run_daemon
from tests.e2e.round_robin_proxy import RoundRobinProxy
from tests.fakes.openai_realtime import FakeRealtimeServer, Say
from tests.fakes.twilio import FakeCall, FakeTwilio, FakeTwilioRest, spoken_ulaw
from tests.services import postgres_url, redis_prefix, redis_url  # noqa: F401  (fixtures)

pytestmark = pytest.mark.e2e
NAMES = ("r0", "r1", "r2")
CALLS = 30
AT_ONCE = 10  # calls being set up at the same time (2 shared cores)
NUMBER = "+15550001234"
PUBLIC_HOST = "gw.example.com"
ENGINE_KEY = "sk-test"
REPLICA_TIMEOUT_SECS = 5.0  # heartbeats every 0.5 s; a loaded 2-core machine stalls a daemon now and then
START_TIMEOUT_SECS = 120.0  # three daemons importing at once on a loaded 2-core machine take a while


def replica_config(
    root: Path, name: str, rest: FakeTwilioRest, engine_url: str, redis: str, prefix: str, db: str
) -> Path:
    """Replica `name`: Twilio (the fake) through the public host, the fake Realtime engine, shared PostgreSQL."""
    path = root / f"{name}.yaml"
    path.write_text(
        f"""
carrier: {{type: twilio, account_sid: {rest.account_sid}, auth_token: {rest.auth_token}, base_url: '{rest.base_url}'}}
phone_number: "{NUMBER}"
webhook_url: {PUBLIC_HOST}
persist: "{db}"
server: {{media_idle_timeout_secs: 0, drain_timeout_secs: 30}}
cluster:
  secret: {SECRET}
  redis: "{redis}"
  replica_id: {name}
  key_prefix: "{prefix}"
  heartbeat_secs: 0.5
  replica_timeout_secs: {REPLICA_TIMEOUT_SECS}
agents:
  - name: desk
    engine: {{type: openai_realtime, base_url: "{engine_url}", api_key: {ENGINE_KEY}, connect_timeout_secs: 10}}
    first_message: "Hello, front desk."
"""
    )
    return path


def fixed_port() -> int:
    """A free loopback port below the kernel's ephemeral range, to restart a replica on.

    A port picked by bind(0) comes from the ephemeral range, where the kernel also picks the local
    port of every outgoing connection (the proxy's, the callers'): once the replica stops, one of
    those may take its port, and the restart fails with EADDRINUSE (seen in CI).
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.sample(range(max(1024, low - 12_000), low), 200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


@dataclass
class Replica:
    """One daemon of the fleet; restartable on its port (the balancer's target stays the same)."""

    name: str
    config: Path
    port: int = 0
    daemon: DaemonProcess | None = None
    past_logs: list[str] = field(default_factory=list)  # the log lines of its earlier processes
    start_secs: list[float] = field(default_factory=list)  # how long each start took (until it serves)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def start(self) -> None:
        began = time.monotonic()
        self._stack = contextlib.ExitStack()
        self.port = self.port or fixed_port()
        self.daemon = self._stack.enter_context(run_daemon(self.config, port=self.port))
        self.port = urlsplit(self.daemon.base_url).port or 0
        self.start_secs.append(round(time.monotonic() - began, 1))

    def close(self) -> None:
        self._stack.close()
        if self.daemon is not None:  # kept for a failure's post-mortem
            self.past_logs += [*self.daemon.log_lines, "--- restart ---"]
            self.daemon = None

    @property
    def url(self) -> str:
        assert self.daemon is not None
        return self.daemon.base_url


class BalancedTwilio(FakeTwilio):
    """Twilio whose every request opens a new connection, so the balancer spreads each one (no keep-alive)."""

    async def __aenter__(self) -> BalancedTwilio:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=0))
        return self


def call_id(call: FakeCall) -> str:
    return call.twiml_parameters["call_id"]


async def heard_everything(call: FakeCall, timeout: float = 20.0) -> None:
    """Until the agent's turn so far has played out at the caller (its closing mark echoed, nothing buffered)."""
    await call.wait_until(
        lambda: bool(call.marks_echoed) and call.buffered_bytes == 0 and len(call.played) > 0,
        timeout=timeout,
        what="the agent's audio played out",
    )


async def answers_speech(call: FakeCall, speech: bytes, timeout: float = 25.0) -> None:
    """The caller speaks; new agent audio arrives after it (the call is alive end to end)."""
    before = len(call.media_times)
    marks = len(call.marks_echoed)
    await call.say(speech)
    await call.wait_until(
        lambda: (
            len(call.media_times) > before and len(call.marks_echoed) > marks and call.buffered_bytes == 0
        ),
        timeout=timeout,
        what="the agent answering the caller",
    )


async def records(http: aiohttp.ClientSession, base_url: str) -> dict[str, str]:
    """call_id -> status, as one replica's `GET /api/v1/calls` lists them."""
    listed = await get_json(http, base_url + "/api/v1/calls?limit=200")
    return {c["call_id"]: str(c.get("status")) for c in listed["calls"]}


async def holders(http: aiohttp.ClientSession, base_url: str) -> dict[str, str]:
    """call_id -> the replica running it, as one replica's status says (the shared registry)."""
    status = await get_json(http, base_url + "/api/v1/status")
    own = status["cluster"]["replica"]
    return {
        c["call_id"]: str(c.get("replica") or own) for c in status["live_calls"] if c["state"] == "connected"
    }


async def bounded(aws: list[Awaitable[Any]], limit: int) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(aw: Awaitable[Any]) -> Any:
        async with gate:
            return await aw

    return await asyncio.gather(*(one(a) for a in aws))


def adopted(replica: Replica) -> dict[str, str]:
    """call_id -> origin replica of each call this replica opened from a token another one issued."""
    assert replica.daemon is not None
    out: dict[str, str] = {}
    for line in list(replica.daemon.log_lines):
        if '"call adopted from its token"' in line:
            entry = json.loads(line)
            out[entry["call_id"]] = entry["origin"]
    return out


async def test_fleet_of_three_behind_a_round_robin_balancer(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,  # noqa: F811
    redis_prefix: str,  # noqa: F811
    postgres_url: str,  # noqa: F811
) -> None:
    monkeypatch.setattr(daemon_process, "START_TIMEOUT_SECS", START_TIMEOUT_SECS)
    figures: dict[str, Any] = {}
    speech = spoken_ulaw("hello") + b"\xff" * 8 * 800  # then silence: the engine's VAD ends the turn
    async with (
        FakeTwilioRest() as rest,
        FakeRealtimeServer(api_key=ENGINE_KEY, replies=[Say("Hello, front desk.")] * 400) as engine,
        redis_keys_cleaned(redis_url, redis_prefix),
    ):
        fleet = {
            n: Replica(
                n, replica_config(tmp_path, n, rest, engine.url, redis_url, redis_prefix, postgres_url)
            )
            for n in NAMES
        }
        try:
            await asyncio.gather(*(asyncio.to_thread(r.start) for r in fleet.values()))
            targets = [(r.name, "127.0.0.1", r.port) for r in fleet.values()]
            async with (
                RoundRobinProxy(targets) as proxy,
                BalancedTwilio(proxy.url, PUBLIC_HOST, rest=rest) as twilio,
                # no keep-alive to the replicas: an idle connection to a killed one would hold its port
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
            ):
                for name in NAMES:
                    await proxy.wait_ready(name)
                try:
                    await run_fleet(fleet, proxy, twilio, http, speech, figures)
                finally:
                    print("\n" + proxy.report())
                    for replica in fleet.values():  # the daemons' logs, for a failure's post-mortem
                        now = replica.daemon.log_lines if replica.daemon is not None else []
                        (tmp_path / f"{replica.name}.log").write_text("\n".join(replica.past_logs + now))
        finally:
            for replica in fleet.values():
                replica.close()
    figures["start_secs"] = {r.name: r.start_secs for r in fleet.values()}
    print("\nfleet figures:", figures)


async def run_fleet(
    fleet: dict[str, Replica],
    proxy: RoundRobinProxy,
    twilio: BalancedTwilio,
    http: aiohttp.ClientSession,
    speech: bytes,
    figures: dict[str, Any],
) -> None:
    async def place() -> FakeCall:
        call = await twilio.inbound_call(to=NUMBER, continuous=False)
        assert call.webhook_status == 200 and call.twiml is not None, call.webhook_status
        assert call.handshake_status is None, f"media refused: {call.handshake_status}"
        await heard_everything(call)
        return call

    # 1. 30 calls through the balancer
    started = time.monotonic()
    calls: list[FakeCall] = await bounded([place() for _ in range(CALLS)], AT_ONCE)
    figures["calls_per_sec"] = round(CALLS / (time.monotonic() - started), 2)
    live = {call_id(c): c for c in calls}
    held = await holders(http, fleet["r0"].url)
    assert set(held) == set(live), "every call live in the shared registry"
    figures["holders"] = dict(Counter(held.values()))
    assert set(held.values()) == set(NAMES), "the calls are spread over the three replicas"
    webhooks = Counter(p.backend for p in proxy.picked if p.path == "/webhooks/twilio/voice")
    websockets = Counter(p.backend for p in proxy.picked if p.path.startswith("/ws/"))
    figures["webhooks"], figures["websockets"] = dict(webhooks), dict(websockets)
    assert set(webhooks) == set(websockets) == set(NAMES) and sum(websockets.values()) == CALLS
    # a call whose media went to another replica than its webhook was opened there from its token
    crossed = {cid: origin for r in fleet.values() for cid, origin in adopted(r).items() if origin != r.name}
    figures["media_on_another_replica"] = len(crossed)
    assert len(crossed) >= CALLS // 3, "many calls' media landed on another replica than their webhook"
    assert set(crossed) <= set(live)
    for name, replica in fleet.items():  # every replica lists (API) and shows (dashboard) every call
        assert set(await records(http, replica.url)) >= set(live), name
        for cid in live:
            async with http.get(f"{replica.url}/calls/{cid}") as resp:
                assert resp.status == 200 and cid in await resp.text(), (name, cid)
        async with http.get(replica.url + "/") as resp:
            assert resp.status == 200
    await check_hangup_anywhere(fleet, http, live, held)
    await check_kill(fleet, proxy, http, live, speech, figures)
    await check_rolling_restart(fleet, proxy, http, live, speech, place, figures)


async def check_hangup_anywhere(
    fleet: dict[str, Replica], http: aiohttp.ClientSession, live: dict[str, FakeCall], held: dict[str, str]
) -> None:
    """2. A call held by A hung up with a request to B (directly): the call ends, recorded completed."""
    chosen: list[str] = []
    for name in NAMES:
        cid = next(c for c in live if held[c] == name)
        other = NAMES[(NAMES.index(name) + 1) % len(NAMES)]
        async with http.post(f"{fleet[other].url}/api/v1/calls/{cid}/hangup") as resp:
            body = await resp.json()
            assert resp.status == 202 and body.get("replica") == name, body
        chosen.append(cid)
    for cid in chosen:
        await live.pop(cid).wait_closed(timeout=15)

    async def completed() -> bool:
        status = await records(http, fleet["r1"].url)
        return all(status.get(c) == "completed" for c in chosen)

    await eventually(completed, "the calls hung up across replicas recorded completed")


async def check_kill(
    fleet: dict[str, Replica],
    proxy: RoundRobinProxy,
    http: aiohttp.ClientSession,
    live: dict[str, FakeCall],
    speech: bytes,
    figures: dict[str, Any],
) -> None:
    """3. SIGKILL r2 with calls live everywhere: its calls end `failed`, the others keep talking."""
    held = await holders(http, fleet["r0"].url)
    victims = [c for c in live if held[c] == "r2"]
    survivors = [c for c in live if held[c] != "r2"]
    assert victims and survivors
    assert fleet["r2"].daemon is not None
    killed_at = time.monotonic()
    fleet["r2"].daemon.proc.send_signal(signal.SIGKILL)
    fleet["r2"].daemon.proc.wait(10)
    for cid in victims:
        await live[cid].wait_closed(timeout=10)  # the balancer passes the reset on to Twilio

    async def victims_failed() -> bool:
        for name in ("r0", "r1"):
            status = await records(http, fleet[name].url)
            if not all(status.get(c) == "failed" for c in victims):
                return False
        return True

    await eventually(victims_failed, "r2's calls recorded failed on every survivor", 30)
    figures["dead_replica_calls_failed_after_secs"] = round(time.monotonic() - killed_at, 2)
    # the survivors' calls go on: each caller speaks and is answered after the kill
    await bounded([answers_speech(live[c], speech) for c in survivors], AT_ONCE)
    assert all(not live[c].closed for c in survivors)
    status = await records(http, fleet["r0"].url)
    assert not [c for c in survivors if status[c] in ("failed", "completed")], "a survivor's call ended"
    for cid in victims:
        del live[cid]
    await asyncio.to_thread(fleet["r2"].close)
    await asyncio.to_thread(fleet["r2"].start)  # a replacement on the same address
    await proxy.wait_ready("r2")


async def check_rolling_restart(
    fleet: dict[str, Replica],
    proxy: RoundRobinProxy,
    http: aiohttp.ClientSession,
    live: dict[str, FakeCall],
    speech: bytes,
    place: Callable[[], Awaitable[FakeCall]],
    figures: dict[str, Any],
) -> None:
    """4. With calls on every replica, SIGTERM / drain / start each in turn: no call is cut."""
    while set((await holders(http, fleet["r0"].url)).values()) != set(NAMES):
        call = await place()
        live[call_id(call)] = call
    drains: dict[str, float] = {}  # SIGTERM -> exit (its callers talk on, then hang up)
    exits: dict[str, float] = {}  # its last call over -> exit
    out_of_rotation: dict[str, float] = {}  # SIGTERM -> the balancer sends it nothing new (/readyz 503)
    finished: list[str] = []
    for name in NAMES:
        replica = fleet[name]
        assert replica.daemon is not None
        mine = [c for c, h in (await holders(http, fleet[name].url)).items() if h == name]
        assert mine, name
        term_at = time.monotonic()
        replica.daemon.proc.send_signal(signal.SIGTERM)
        await proxy.wait_ready(name, False)
        out_of_rotation[name] = round(time.monotonic() - term_at, 2)
        newcomer = await place()  # new calls keep coming, to the others
        live[call_id(newcomer)] = newcomer
        # the draining replica's calls still work; their callers hang up when done
        await bounded([answers_speech(live[c], speech) for c in mine], AT_ONCE)
        for cid in mine:
            call = live.pop(cid)
            assert not call.closed, f"{cid} was cut by {name}'s drain"
            await call.stop()
            finished.append(cid)
        last_hangup = time.monotonic()
        code = await asyncio.to_thread(replica.daemon.proc.wait, 40)
        drains[name] = round(time.monotonic() - term_at, 2)
        exits[name] = round(time.monotonic() - last_hangup, 2)
        assert code == 0, f"{name} exited {code}"
        await asyncio.to_thread(replica.close)
        await asyncio.to_thread(replica.start)
        await proxy.wait_ready(name)
    figures["drain_secs"], figures["exit_after_last_call_secs"] = drains, exits
    figures["out_of_rotation_secs"] = out_of_rotation
    for cid, call in list(live.items()):  # everyone left hangs up at the end
        assert not call.closed, f"{cid} was cut"
        await heard_everything(call)
        await call.stop()
        finished.append(cid)

    async def all_completed() -> bool:
        status = await records(http, fleet["r0"].url)
        return all(status.get(c) == "completed" for c in finished)

    await eventually(all_completed, "every call of the rolling restart recorded completed", 30)
    figures["rolling_restart_calls"] = len(finished)
