"""The Redis connection of a replica: lazy import, key names, and outage accounting (calls never wait on it)."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from patterd.errors import PatterdError

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = structlog.get_logger("patterd.cluster")
T = TypeVar("T")
COMMAND_TIMEOUT_SECS = 2.0  # a Redis slower than this counts as down: live state degrades to local


def connect(url: str) -> Redis:
    """A redis-py asyncio client for `url` (the `cluster` extra); a clear error when it is not installed."""
    try:
        module: Any = importlib.import_module("redis.asyncio")
    except ImportError as exc:
        raise PatterdError("cluster.redis needs the redis package: pip install 'patterd[cluster]'") from exc
    client: Redis = module.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=COMMAND_TIMEOUT_SECS,
        socket_connect_timeout=COMMAND_TIMEOUT_SECS,
        health_check_interval=10,
    )
    return client


class RedisLink:
    """One replica's client plus its key names; `run` turns a Redis failure into a logged, counted default."""

    def __init__(self, client: Redis, *, prefix: str, replica: str) -> None:
        # Any: redis-py types every reply as bytes | str; this client decodes (decode_responses=True)
        self.client: Any = client
        self.prefix = prefix
        self.replica = replica
        self.errors = 0  # failed Redis operations (patterd_cluster_redis_errors_total)
        self.healthy = True

    # ------------------------------------------------------------------ names

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @property
    def feed_channel(self) -> str:
        return self.key("feed")

    def control_channel(self, replica: str) -> str:
        return self.key("control", replica)

    def reply_channel(self, replica: str) -> str:
        return self.key("reply", replica)

    # ------------------------------------------------------------------ health

    async def run(self, what: str, op: Callable[[], Awaitable[T]], default: T) -> T:
        """`op()`, or `default` when Redis fails (the first failure of an outage is logged, every one counted)."""
        try:
            result = await op()
        except Exception as exc:  # redis.ConnectionError, TimeoutError, a dropped socket: all one outage
            self.failed(what, exc)
            return default
        self.ok()
        return result

    def failed(self, what: str, exc: BaseException) -> None:
        self.errors += 1
        if self.healthy:
            log.warning("redis unavailable; live state is local only", op=what, error=str(exc))
        self.healthy = False

    def ok(self) -> None:
        if not self.healthy:
            log.info("redis reachable again; live state shared")
        self.healthy = True


class RedisNonces:
    """The cluster's nonce ledger: SET NX with the token's remaining life as TTL (one use, cluster-wide)."""

    def __init__(self, link: RedisLink, clock: Callable[[], float]) -> None:
        self._link = link
        self._clock = clock

    async def use(self, nonce: str, exp: float) -> bool:
        ttl_ms = max(1, int((exp - self._clock()) * 1000))
        # errors propagate: the gate falls back to this process's own ledger
        created = await self._link.client.set(self._link.key("nonce", nonce), "1", nx=True, px=ttl_ms)
        return bool(created)
