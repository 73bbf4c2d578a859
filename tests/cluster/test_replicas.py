"""Replicas sharing Redis (real daemons, real Redis): live calls, feed, control and media across replicas."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from patterd.cluster.tokens import CallClaim, CallTokens, new_nonce
from tests.cluster.replicas import (
    SECRET,
    CuttableProxy,
    answer,
    connect_media,
    eventually,
    get_json,
    redis_keys_cleaned,
    refused,
    replica_config,
)
from tests.daemon_process import run_daemon
from tests.inprocess_daemon import running_daemon


async def test_a_call_answered_by_a_runs_on_b_and_every_replica_sees_and_steers_it(
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
) -> None:
    a_cfg = replica_config(tmp_path, "a", redis_url, redis_prefix)
    b_cfg = replica_config(tmp_path, "b", redis_url, redis_prefix)
    async with (
        redis_keys_cleaned(redis_url, redis_prefix),
        running_daemon(a_cfg) as (a, a_url, _),
        running_daemon(b_cfg) as (b, b_url, _),
        aiohttp.ClientSession() as http,
    ):
        assert a.cluster is not None and b.cluster is not None
        await asyncio.wait_for(a.cluster.relay.subscribed.wait(), 10)
        await asyncio.wait_for(b.cluster.relay.subscribed.wait(), 10)
        a_feed: list[tuple[str, dict[str, Any]]] = []

        async def follow() -> None:
            async for item in a.feed.subscribe(last_event_id=0):
                if item is not None:
                    a_feed.append((item.name, item.data))

        follower = asyncio.create_task(follow())
        answered = await answer(http, a_url)  # the webhook lands on a ...
        call_id, media_path = answered["call_id"], answered["media_path"]
        assert "call_token=" in media_path
        ws = await connect_media(http, b_url, media_path)  # ... and the media websocket on b

        async def b_runs_it() -> bool:
            live = (await get_json(http, b_url + "/api/v1/status"))["live_calls"]
            return any(c["call_id"] == call_id and c["state"] == "connected" for c in live)

        await eventually(b_runs_it, "the call connected on b")

        async def handed_over() -> bool:
            return call_id not in a.switchboard.calls

        await eventually(handed_over, "a dropping its ringing copy (handed over, not ended)")

        async def a_lists_it() -> bool:
            live = (await get_json(http, a_url + "/api/v1/status"))["live_calls"]
            return [(c["call_id"], c.get("replica")) for c in live] == [(call_id, "b")]

        await eventually(a_lists_it, "a's status listing b's call")
        status = await get_json(http, a_url + "/api/v1/status")
        assert status["cluster"]["replica"] == "a" and sorted(status["cluster"]["replicas"]) == ["a", "b"]

        # the token was used: replaying it, on either replica, is refused and counted
        assert await refused(http, a_url, media_path)
        assert await refused(http, b_url, media_path)
        # (both daemons share this test process's metrics registry: each switchboard's own counts are read)
        assert a.switchboard.rejections == {("local", "token_replayed"): 1}
        assert b.switchboard.rejections == {("local", "token_replayed"): 1}
        # an expired token signed with the cluster secret is refused too
        stale = CallTokens(SECRET.encode()).issue(
            CallClaim("call_stale", "desk", "inbound", "", "", "local", "", time.time() - 1, new_nonce(), "a")
        )
        assert await refused(http, b_url, f"/ws/local/call_stale?call_token={quote(stale)}")
        assert b.switchboard.rejections[("local", "token_expired")] == 1

        # hang up through a: the request reaches b, which holds the call
        async with http.post(f"{a_url}/api/v1/calls/{call_id}/hangup") as resp:
            body = await resp.json()
            assert resp.status == 202 and body["replica"] == "b", body
        async with asyncio.timeout(10):
            async for _ in ws:
                pass

        async def ended_on_b() -> bool:
            record = await get_json(http, f"{b_url}/api/v1/calls/{call_id}")
            return bool(record.get("metadata", {}).get("ended_at"))

        await eventually(ended_on_b, "the call's record final on b")

        async def a_saw_the_end() -> bool:
            return any(n == "call.ended" and d["call_id"] == call_id for n, d in a_feed)

        await eventually(a_saw_the_end, "b's call.ended on a's feed")
        mine = [(n, d) for n, d in a_feed if d.get("call_id") == call_id]
        started = [d for n, d in mine if n == "call.started"]
        # a's feed: its own call.started (the answer), then b's events marked with b, none twice
        assert [d.get("replica") for d in started] == [None, "b"]
        ended = [d for n, d in mine if n == "call.ended"]
        assert len(ended) == 1 and ended[0]["replica"] == "b"
        follower.cancel()


async def test_a_dead_replicas_calls_end_failed_once(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    await dead_replica(tmp_path, redis_url, redis_prefix, persist="")


async def test_a_dead_replicas_shared_record_is_closed_failed_once(
    tmp_path: Path, redis_url: str, redis_prefix: str, postgres_url: str
) -> None:
    await dead_replica(tmp_path, redis_url, redis_prefix, persist=postgres_url)


async def dead_replica(tmp_path: Path, redis_url: str, redis_prefix: str, *, persist: str) -> None:
    """Replica c dies (SIGKILL) mid-call: a or b (one of them) records its call failed."""
    shared_store = bool(persist)
    # a replica silent for 2 s is dead here (the default is 10 s)
    a_cfg = replica_config(tmp_path, "a", redis_url, redis_prefix, timeout_secs=2, persist=persist)
    b_cfg = replica_config(tmp_path, "b", redis_url, redis_prefix, timeout_secs=2, persist=persist)
    c_cfg = replica_config(tmp_path, "c", redis_url, redis_prefix, timeout_secs=2, persist=persist)
    async with (
        redis_keys_cleaned(redis_url, redis_prefix),
        running_daemon(a_cfg) as (a, a_url, _),
        running_daemon(b_cfg) as (b, b_url, _),
        aiohttp.ClientSession() as http,
    ):
        with run_daemon(c_cfg) as c:
            answered = await answer(http, c.base_url)
            call_id = answered["call_id"]
            ws = await connect_media(http, c.base_url, answered["media_path"])

            async def listed() -> bool:
                live = (await get_json(http, a_url + "/api/v1/status"))["live_calls"]
                return any(x["call_id"] == call_id and x["replica"] == "c" for x in live)

            await eventually(listed, "c's call on a's status")
            c.proc.send_signal(signal.SIGKILL)  # no drain, no goodbye: its heartbeat just stops
            c.proc.wait(10)
            await ws.close()

        async def recorded_failed() -> bool:
            for url in (a_url, b_url):
                async with http.get(f"{url}/api/v1/calls/{call_id}") as resp:
                    if resp.status == 200 and (await resp.json())["metadata"]["status"] == "failed":
                        return True
            return False

        await eventually(recorded_failed, "the dead replica's call recorded failed")
        records = []
        for url in (a_url, b_url):
            async with http.get(f"{url}/api/v1/calls/{call_id}") as resp:
                if resp.status == 200:
                    records.append((await resp.json())["metadata"])
        # one replica took the lock and ended it: on its own disk, or the one shared record
        assert len(records) == (2 if shared_store else 1)
        meta = records[0]
        # contracts §4's crash wording in the shared record; the reaper's own in a record it writes
        said = "daemon stopped during call" if shared_store else "replica c"
        assert meta["status"] == "failed" and said in (meta.get("error") or "") + (meta.get("reason") or "")
        assert a.cluster is not None and b.cluster is not None
        assert a.cluster.registry.reaped + b.cluster.registry.reaped == 1

        async def gone() -> bool:
            status = await get_json(http, a_url + "/api/v1/status")
            return status["live_calls"] == [] and "c" not in status["cluster"]["replicas"]

        await eventually(gone, "c and its call gone from the live view")


async def test_a_redis_outage_leaves_calls_up_and_the_replica_reconnects(
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
) -> None:
    proxy = CuttableProxy(redis_url)
    await proxy.start()
    a_cfg = replica_config(tmp_path, "a", proxy.url, redis_prefix)
    b_cfg = replica_config(tmp_path, "b", redis_url, redis_prefix)
    async with (
        redis_keys_cleaned(redis_url, redis_prefix),
        running_daemon(a_cfg) as (a, a_url, _),
        running_daemon(b_cfg) as (_b, b_url, _),
        aiohttp.ClientSession() as http,
    ):
        assert a.cluster is not None
        await proxy.cut()  # Redis is gone for a
        answered = await answer(http, a_url)  # ... which still answers and runs calls
        ws = await connect_media(http, a_url, answered["media_path"])

        async def degraded() -> bool:
            status = await get_json(http, a_url + "/api/v1/status")
            connected = [c for c in status["live_calls"] if c["state"] == "connected"]
            return status["cluster"]["redis"] == "unavailable" and len(connected) == 1

        await eventually(degraded, "a serving its call locally with Redis down")
        errors = (await get_json(http, a_url + "/api/v1/status"))["cluster"]["redis_errors"]
        assert errors > 0 and a.metrics.live.cluster_errors() >= errors  # patterd_cluster_redis_errors_total
        await proxy.start()  # Redis is back (same port): a reconnects and shares its call again

        async def b_sees_it() -> bool:
            live = (await get_json(http, b_url + "/api/v1/status"))["live_calls"]
            return [(c["call_id"], c["replica"]) for c in live] == [(answered["call_id"], "a")]

        await eventually(b_sees_it, "b listing a's call after the outage")
        assert (await get_json(http, a_url + "/api/v1/status"))["cluster"]["redis"] == "ok"
        assert not ws.closed  # the call lived through the outage
        await ws.close()
