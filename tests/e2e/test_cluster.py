"""Three real daemons behind a round-robin proxy, sharing Redis and PostgreSQL: 30 calls whose webhooks and
media websockets land on different replicas; hang-up through any replica; every replica lists every call;
a killed replica's calls end `failed` and nobody else's; a SIGTERM (rolling restart) cuts no call."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.cluster.replicas import (
    SECRET,
    answer,
    connect_media,
    eventually,
    get_json,
    redis_keys_cleaned,
)
from tests.daemon_process import DaemonProcess, run_daemon
from tests.services import postgres_url, redis_prefix, redis_url  # noqa: F401  (fixtures)

pytestmark = pytest.mark.e2e
CALLS = 30


def config(root: Path, name: str, redis: str, prefix: str, database: str) -> Path:
    path = root / f"{name}.yaml"
    path.write_text(
        f"""
carrier: {{type: local}}
persist: "{database}"
server: {{media_idle_timeout_secs: 0, drain_timeout_secs: 20}}
cluster:
  secret: {SECRET}
  redis: "{redis}"
  replica_id: {name}
  key_prefix: "{prefix}"
  heartbeat_secs: 0.25
  replica_timeout_secs: 3
agents:
  - name: desk
    stt: {{type: offline}}
    llm: {{type: script}}
    tts: {{type: offline}}
"""
    )
    return path


class RoundRobin:
    """A TCP proxy sending each new connection to the next replica that accepts it (a load balancer)."""

    def __init__(self) -> None:
        self.targets: list[tuple[str, int]] = []
        self._next = 0
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        for _ in range(len(self.targets)):
            host, port = self.targets[self._next % len(self.targets)]
            self._next += 1
            with contextlib.suppress(OSError):
                return await asyncio.open_connection(host, port)
        raise OSError("no replica accepts connections")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await self._upstream()
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def target(daemon: DaemonProcess) -> tuple[str, int]:
    parts = urlsplit(daemon.base_url)
    return parts.hostname or "127.0.0.1", parts.port or 80


@contextlib.contextmanager
def replicas(paths: list[Path]) -> Iterator[list[DaemonProcess]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(run_daemon(p)) for p in paths]


async def holder(http: aiohttp.ClientSession, daemon: DaemonProcess, call_id: str) -> str | None:
    """Which replica runs `call_id`, as one replica's status says."""
    status = await get_json(http, daemon.base_url + "/api/v1/status")
    for call in status["live_calls"]:
        if call["call_id"] == call_id:
            return str(call.get("replica") or status["cluster"]["replica"])
    return None


async def metadata(http: aiohttp.ClientSession, daemon: DaemonProcess, call_id: str) -> dict[str, Any]:
    async with http.get(f"{daemon.base_url}/api/v1/calls/{call_id}") as resp:
        return dict((await resp.json()).get("metadata", {})) if resp.status == 200 else {}


async def test_three_replicas_behind_a_round_robin_balancer(
    tmp_path: Path,
    redis_url: str,  # noqa: F811
    redis_prefix: str,  # noqa: F811
    postgres_url: str,  # noqa: F811
) -> None:
    names = ["r0", "r1", "r2"]
    paths = [config(tmp_path, n, redis_url, redis_prefix, postgres_url) for n in names]
    balancer = RoundRobin()
    await balancer.start()
    one_request_per_connection = aiohttp.TCPConnector(force_close=True)  # every request is balanced
    async with (
        redis_keys_cleaned(redis_url, redis_prefix),
        aiohttp.ClientSession(connector=one_request_per_connection) as http,
    ):
        with replicas(paths) as daemons:
            by_name = dict(zip(names, daemons, strict=True))
            balancer.targets = [target(d) for d in daemons]
            sockets: dict[str, aiohttp.ClientWebSocketResponse] = {}
            answered_by: dict[str, int] = {}
            for n in range(CALLS):  # webhook on one replica, the media websocket on the next
                answered = await answer(http, balancer.url)
                sockets[answered["call_id"]] = await connect_media(http, balancer.url, answered["media_path"])
                answered_by[answered["call_id"]] = n

            async def every_replica_lists_every_call() -> bool:
                for daemon in daemons:
                    live = (await get_json(http, daemon.base_url + "/api/v1/status"))["live_calls"]
                    if sorted(c["call_id"] for c in live if c["state"] == "connected") != sorted(sockets):
                        return False
                return True

            await eventually(every_replica_lists_every_call, "every replica listing all 30 live calls", 30)
            holders = {call_id: await holder(http, daemons[0], call_id) for call_id in sockets}
            assert set(holders.values()) == set(names)  # the calls are spread over the three
            listed = await get_json(http, daemons[1].base_url + "/api/v1/calls?limit=100")
            assert {c["call_id"] for c in listed["calls"]} >= set(sockets)  # one shared history

            # hang up 6 calls through the balancer: whichever replica gets the request reaches the holder
            hung_up = list(sockets)[:6]
            for call_id in hung_up:
                async with http.post(f"{balancer.url}/api/v1/calls/{call_id}/hangup") as resp:
                    assert resp.status == 202, await resp.text()
            for call_id in hung_up:
                async with asyncio.timeout(15):
                    async for _ in sockets.pop(call_id):
                        pass

            async def hung_up_recorded() -> bool:
                metas = [await metadata(http, daemons[0], c) for c in hung_up]
                return all(m.get("status") == "completed" for m in metas)

            await eventually(hung_up_recorded, "the hung-up calls recorded completed")

            # kill r2 mid-call: its calls end failed, nobody else's
            victims = [c for c in sockets if holders[c] == "r2"]
            survivors = [c for c in sockets if holders[c] != "r2"]
            assert victims and survivors
            by_name["r2"].proc.send_signal(signal.SIGKILL)
            by_name["r2"].proc.wait(10)
            balancer.targets = [target(by_name["r0"]), target(by_name["r1"])]

            async def victims_failed() -> bool:
                metas = [await metadata(http, by_name["r0"], c) for c in victims]
                return all(m.get("status") == "failed" for m in metas)

            await eventually(victims_failed, "r2's calls recorded failed", 30)
            for call_id in victims:
                await sockets.pop(call_id).close()
            status = await get_json(http, by_name["r1"].base_url + "/api/v1/status")
            live = {c["call_id"]: c["state"] for c in status["live_calls"]}
            assert {c: live.get(c) for c in survivors} == dict.fromkeys(survivors, "connected")
            assert all(not sockets[c].closed for c in survivors)

            # rolling restart of r1: SIGTERM drains it; its callers hang up meanwhile; nothing is cut
            on_r1 = [c for c in survivors if holders[c] == "r1"]
            balancer.targets = [target(by_name["r0"])]  # the balancer stops sending it new work
            by_name["r1"].proc.send_signal(signal.SIGTERM)
            late = await answer(http, balancer.url)  # new calls keep coming, to r0
            sockets[late["call_id"]] = await connect_media(http, balancer.url, late["media_path"])
            for call_id in on_r1:
                await sockets.pop(call_id).close()  # the caller hangs up while r1 drains
            assert by_name["r1"].proc.wait(30) == 0, "\n".join(by_name["r1"].log_lines[-20:])

            async def none_cut() -> bool:
                metas = [await metadata(http, by_name["r0"], c) for c in on_r1]
                return all(m.get("status") == "completed" for m in metas)

            await eventually(none_cut, "r1's calls completed, not cut", 30)
            still = [c for c in sockets if holders.get(c) == "r0" or c == late["call_id"]]
            r0_live = await get_json(http, by_name["r0"].base_url + "/api/v1/status")
            assert {c["call_id"] for c in r0_live["live_calls"]} >= set(still)
            for ws in sockets.values():
                await ws.close()
    await balancer.close()
