"""The live-call registry in Redis: each replica's calls and heartbeat; a dead replica's calls are reaped once."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from patterd.clock import iso_ms
from patterd.cluster.redis_link import RedisLink
from patterd.protocols.events import CallEnded, CallEvent, CallStarted, CallStatusChanged

log = structlog.get_logger("patterd.cluster")
CALL_TTL_FACTOR = (
    6  # a call hash outlives its replica's heartbeat by this many timeouts: a reaper can read it
)
DELETE_IF_OURS = (
    "if redis.call('hget', KEYS[1], 'replica') == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
REAP_LOCK_SECS = 3600  # the lock that makes a dead replica's calls end exactly once stays this long


class LiveRegistry:
    """Mirrors this replica's live calls into Redis (hash per call, set per replica) and reads the others'."""

    def __init__(
        self,
        link: RedisLink,
        *,
        heartbeat_secs: float,
        timeout_secs: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.link = link
        self.heartbeat_secs = heartbeat_secs
        self.timeout_secs = timeout_secs
        self._clock = clock
        self._local: dict[str, dict[str, str]] = {}  # this replica's live calls as registered
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self.reaped = 0  # calls of dead replicas this replica ended

    # ------------------------------------------------------------------ this replica's calls

    def observe(self, event: CallEvent) -> None:
        """Call-event observer: keep the local mirror; the writer pushes it to Redis soon after."""
        call_id = event.call_id
        if isinstance(event, CallStarted):
            self._local[call_id] = {
                "call_id": call_id,
                "replica": self.link.replica,
                "agent": event.agent,
                "direction": event.direction,
                "carrier": event.carrier,
                "carrier_call_id": event.carrier_call_id,
                "state": "ringing",
                "status": "ringing",
                "started_at": iso_ms(event.ts),
            }
        elif isinstance(event, CallStatusChanged) and call_id in self._local:
            self._local[call_id]["status"] = event.status
            self._local[call_id]["state"] = "ringing" if event.status == "ringing" else "connected"
        elif isinstance(event, CallEnded):
            self._local.pop(call_id, None)
        else:
            return
        self._dirty.add(call_id)
        self._wake.set()

    def forget(self, call_id: str) -> None:
        """A call that left this replica without ending (handed over to another replica)."""
        if self._local.pop(call_id, None) is not None:
            self._dirty.add(call_id)
            self._wake.set()

    def set_carrier_call_id(self, call_id: str, carrier_call_id: str) -> None:
        """An outbound call learns its carrier id after the dial returns."""
        entry = self._local.get(call_id)
        if entry is not None and entry["carrier_call_id"] != carrier_call_id:
            entry["carrier_call_id"] = carrier_call_id
            self._dirty.add(call_id)
            self._wake.set()

    async def run_writer(self) -> None:
        """Push changed calls to Redis as they change (a failed push is redone by the next heartbeat)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            await self.link.run("registry write", functools.partial(self._write, dirty), None)

    async def _write(self, call_ids: set[str]) -> None:
        link, ttl = self.link, int(self.timeout_secs * CALL_TTL_FACTOR * 1000)
        mine = link.key("calls", link.replica)
        async with link.client.pipeline(transaction=False) as pipe:
            for call_id in call_ids:
                entry = self._local.get(call_id)
                if entry is None:  # ended, or handed over: only our own entry goes (a new holder keeps its)
                    pipe.eval(DELETE_IF_OURS, 1, link.key("call", call_id), link.replica)
                    pipe.srem(mine, call_id)
                else:
                    pipe.hset(link.key("call", call_id), mapping=entry)
                    pipe.pexpire(link.key("call", call_id), ttl)
                    pipe.sadd(mine, call_id)
            pipe.pexpire(mine, ttl)
            await pipe.execute()

    async def heartbeat(self) -> None:
        """Say this replica is alive and rewrite its whole call list (heals whatever an outage lost)."""
        link, ttl = self.link, int(self.timeout_secs * CALL_TTL_FACTOR * 1000)

        async def beat() -> None:
            mine = link.key("calls", link.replica)
            async with link.client.pipeline(transaction=True) as pipe:
                pipe.set(
                    link.key("alive", link.replica), iso_ms_now(self._clock), px=int(self.timeout_secs * 1000)
                )
                pipe.sadd(link.key("replicas"), link.replica)
                pipe.delete(mine)
                for call_id, entry in self._local.items():
                    pipe.hset(link.key("call", call_id), mapping=entry)
                    pipe.pexpire(link.key("call", call_id), ttl)
                    pipe.sadd(mine, call_id)
                pipe.pexpire(mine, ttl)
                await pipe.execute()

        await link.run("heartbeat", beat, None)

    async def leave(self) -> None:
        """A clean stop: this replica and its (ended) calls leave the registry at once."""
        link = self.link

        async def bye() -> None:
            async with link.client.pipeline(transaction=True) as pipe:
                pipe.delete(link.key("alive", link.replica), link.key("calls", link.replica))
                pipe.srem(link.key("replicas"), link.replica)
                await pipe.execute()

        await link.run("leave", bye, None)

    # ------------------------------------------------------------------ the others

    async def alive(self) -> list[str]:
        """Replicas whose heartbeat has not expired (this one included)."""

        async def read() -> list[str]:
            replicas = sorted(await self.link.client.smembers(self.link.key("replicas")))
            if not replicas:
                return []
            flags = await self.link.client.mget([self.link.key("alive", r) for r in replicas])
            return [r for r, flag in zip(replicas, flags, strict=True) if flag is not None]

        return await self.link.run("replicas", read, [])

    async def remote_calls(self) -> list[dict[str, str]]:
        """The live calls of every other live replica."""

        async def read() -> list[dict[str, str]]:
            out: list[dict[str, str]] = []
            for replica in await self.alive():
                if replica == self.link.replica:
                    continue
                ids = sorted(await self.link.client.smembers(self.link.key("calls", replica)))
                async with self.link.client.pipeline(transaction=False) as pipe:
                    for call_id in ids:
                        pipe.hgetall(self.link.key("call", call_id))
                    rows: list[dict[str, str]] = await pipe.execute() if ids else []
                out.extend(row for row in rows if row and row.get("replica") == replica)
            return out

        return await self.link.run("remote calls", read, [])

    async def lookup(self, call_id: str) -> dict[str, str] | None:
        """The registry's entry of a call (any replica's), if it is live somewhere."""
        row: dict[str, str] = await self.link.run(
            "lookup", lambda: self.link.client.hgetall(self.link.key("call", call_id)), {}
        )
        return row or None

    async def is_alive(self, replica: str) -> bool:
        found: int = await self.link.run(
            "alive", lambda: self.link.client.exists(self.link.key("alive", replica)), 1
        )
        return bool(found)

    async def reap_dead(self, end_call: Callable[[dict[str, str]], Awaitable[None]]) -> int:
        """End the calls of every replica whose heartbeat expired; a Redis lock makes it happen once."""

        async def reap() -> int:
            link, ended = self.link, 0
            replicas = await link.client.smembers(link.key("replicas"))
            for replica in sorted(replicas):
                if replica == link.replica or await link.client.exists(link.key("alive", replica)):
                    continue
                got = await link.client.set(
                    link.key("reap", replica), link.replica, nx=True, ex=REAP_LOCK_SECS
                )
                if not got:
                    continue  # another replica is reaping it (or did)
                ids = await link.client.smembers(link.key("calls", replica))
                log.warning("replica is gone; ending its calls", replica=replica, calls=len(ids))
                for call_id in sorted(ids):
                    entry: dict[str, Any] = await link.client.hgetall(link.key("call", call_id))
                    if entry.get("replica", replica) == replica:
                        await end_call({"call_id": call_id, "replica": replica, **entry})
                        await link.client.delete(link.key("call", call_id))
                        ended += 1
                await link.client.delete(link.key("calls", replica))
                await link.client.srem(link.key("replicas"), replica)
            return ended

        ended: int = await self.link.run("reap", reap, 0)
        self.reaped += ended
        return ended


def iso_ms_now(clock: Callable[[], float]) -> str:
    """The heartbeat's value: when it was written (helps whoever reads Redis by hand)."""
    return iso_ms(datetime.fromtimestamp(clock(), UTC))
