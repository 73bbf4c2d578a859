"""A replica reaping a dead one's calls slowly keeps its own heartbeat (else the others would reap it in turn)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, cast

import redis.asyncio

from patterd.cluster.node import ClusterNode, build_gate
from patterd.config.cluster import ClusterConfig
from patterd.protocols.events import CallEvent
from tests.cluster.replicas import redis_keys_cleaned

TIMEOUT_SECS = 1.0
RECOVER_SECS = 0.8  # per call: three calls take 2.4 s, more than twice the heartbeat's life


class QuietFeed:
    """The live feed the node forwards to (nothing to check here)."""

    forward: Any = None

    def publish(self, name: str, data: dict[str, Any]) -> None:
        pass

    def observe(self, event: CallEvent) -> None:
        pass


async def test_slow_reaping_does_not_stop_the_heartbeat(redis_url: str, redis_prefix: str) -> None:
    config = ClusterConfig(
        redis=redis_url,
        key_prefix=redis_prefix,
        replica_id="alive",
        heartbeat_secs=0.1,
        replica_timeout_secs=TIMEOUT_SECS,
    )
    recovered: list[str] = []
    lock = threading.Lock()

    def recover_orphans(call_ids: list[str]) -> int:  # a busy database: each record takes a while
        time.sleep(RECOVER_SECS)
        with lock:
            recovered.extend(call_ids)
        return len(call_ids)

    async with redis_keys_cleaned(redis_url, redis_prefix):
        client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
        dead_calls = ["call_d1", "call_d2", "call_d3"]
        # a replica that died with three live calls: listed, its heartbeat key gone
        await client.sadd(redis_prefix + "replicas", "dead")
        await client.sadd(redis_prefix + "calls:dead", *dead_calls)
        for call_id in dead_calls:
            await client.hset(
                redis_prefix + "call:" + call_id, mapping={"replica": "dead", "state": "connected"}
            )
        node = ClusterNode(config, build_gate(config, "alive"))
        await node.start(
            cast(Any, None),
            emit=lambda event: None,
            feed=QuietFeed(),
            known_record=lambda call_id: True,
            recover_orphans=recover_orphans,
        )
        try:
            lapses = 0
            async with asyncio.timeout(15):
                while len(recovered) < len(dead_calls):
                    lapses += 0 if await client.exists(redis_prefix + "alive:alive") else 1
                    await asyncio.sleep(0.05)
            assert sorted(recovered) == dead_calls
            assert lapses == 0, "the reaper's own heartbeat lapsed while it reaped"
        finally:
            await node.close()
            await client.aclose()
