"""Redis pub/sub between replicas: the live event feed out and in, and call control requests with replies."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from patterd.cluster.redis_link import RedisLink
from patterd.protocols import jsontext

log = structlog.get_logger("patterd.cluster")
OUTBOX = 10_000  # feed items waiting for Redis; beyond this (a long outage) new ones are dropped and counted
RECONNECT_SECS = (0.25, 0.5, 1.0, 2.0, 5.0)  # backoff of the subscriber after a lost connection

FeedSink = Callable[[str, str, dict[str, Any]], None]  # (origin replica, feed name, data)
ControlHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class Relay:
    """Publishes this replica's feed items, delivers the others', and carries control requests and replies."""

    def __init__(self, link: RedisLink, *, on_feed: FeedSink, on_control: ControlHandler) -> None:
        self.link = link
        self._on_feed = on_feed
        self._on_control = on_control
        self._outbox: asyncio.Queue[str] = asyncio.Queue(OUTBOX)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self.dropped = 0  # feed items lost to a full outbox
        self.subscribed = asyncio.Event()  # set while the subscriber listens (tests wait on it)
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ feed out

    def publish_feed(self, name: str, data: dict[str, Any]) -> None:
        """Queue one of this replica's feed items for the other replicas (never blocks a call)."""
        message = json.dumps(
            {"replica": self.link.replica, "name": name, "data": data}, separators=(",", ":")
        )
        try:
            self._outbox.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1

    async def run_publisher(self) -> None:
        """Send queued feed items in order; while Redis is down they wait (up to OUTBOX) and go out after."""
        channel = self.link.feed_channel
        while True:
            message = await self._outbox.get()
            delay = iter(itertools.chain(RECONNECT_SECS, itertools.repeat(RECONNECT_SECS[-1])))
            while True:
                try:
                    await self.link.client.publish(channel, message)
                except Exception as exc:
                    self.link.failed("feed publish", exc)
                    await asyncio.sleep(next(delay))
                    continue
                self.link.ok()
                break

    # ------------------------------------------------------------------ control

    async def request(self, replica: str, message: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        """Ask `replica` to act on a call; its reply, or None when nobody listens or it does not answer."""
        request_id = f"{self.link.replica}:{next(self._ids)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        body = {**message, "id": request_id, "reply_to": self.link.reply_channel(self.link.replica)}
        try:
            receivers = await self.link.run(
                "control",
                lambda: self.link.client.publish(self.link.control_channel(replica), json.dumps(body)),
                0,
            )
            if not receivers:
                return None
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            log.warning(
                "replica did not answer a control request", replica=replica, action=message.get("action")
            )
            return None
        finally:
            self._pending.pop(request_id, None)

    async def _answer(self, request: dict[str, Any]) -> None:
        try:
            reply = await self._on_control(request)
        except Exception as exc:  # a handler bug still answers, so the asking replica does not wait out
            log.exception("control request failed", action=request.get("action"))
            reply = {"ok": False, "code": 500, "message": f"{type(exc).__name__}: {exc}"}
        reply_to = request.get("reply_to")
        if isinstance(reply_to, str) and reply_to.startswith(self.link.prefix):
            body = json.dumps({**reply, "id": request.get("id")})
            await self.link.run("control reply", lambda: self.link.client.publish(reply_to, body), 0)

    # ------------------------------------------------------------------ subscriber

    async def run_subscriber(self) -> None:
        """Listen on the feed and this replica's control and reply channels; reconnect after any loss."""
        link = self.link
        channels = (link.feed_channel, link.control_channel(link.replica), link.reply_channel(link.replica))
        attempt = 0
        while True:
            try:
                async with link.client.pubsub() as pubsub:
                    await pubsub.subscribe(*channels)
                    link.ok()
                    self.subscribed.set()
                    attempt = 0
                    while True:
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                        if message is not None:
                            self._deliver(str(message["channel"]), message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.subscribed.clear()
                link.failed("subscribe", exc)
                await asyncio.sleep(RECONNECT_SECS[min(attempt, len(RECONNECT_SECS) - 1)])
                attempt += 1

    def _deliver(self, channel: str, data: Any) -> None:
        try:
            message = jsontext.loads(data if isinstance(data, (str, bytes)) else "")
        except jsontext.JSONError:
            log.warning("unreadable cluster message", channel=channel)
            return
        if not isinstance(message, dict):
            return
        link = self.link
        if channel == link.feed_channel:
            origin, name, body = message.get("replica"), message.get("name"), message.get("data")
            if (
                origin != link.replica
                and isinstance(origin, str)
                and isinstance(name, str)
                and isinstance(body, dict)
            ):
                self._on_feed(origin, name, body)
        elif channel == link.reply_channel(link.replica):
            future = self._pending.get(str(message.get("id")))
            if future is not None and not future.done():
                future.set_result(message)
        elif channel == link.control_channel(link.replica):
            task = asyncio.get_running_loop().create_task(self._answer(message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
