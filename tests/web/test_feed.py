"""web.feed: replay after Last-Event-ID, idle heartbeats, and subscribers that go away mid-wait."""

from __future__ import annotations

import asyncio
import contextlib

from patterd.web.feed import EventFeed, FeedItem


async def test_replay_then_live_then_idle_heartbeat() -> None:
    feed = EventFeed()
    feed.publish("a", {"n": 1})
    feed.publish("b", {"n": 2})
    got: list[FeedItem | None] = []
    async with contextlib.aclosing(feed.subscribe(1, idle_secs=0.05)) as items:
        async for item in items:
            got.append(item)
            if len(got) == 1:
                feed.publish("c", {"n": 3})
            if item is None:  # nothing came for idle_secs: the caller sends a heartbeat
                break
    assert [i.name if i else None for i in got] == ["b", "c", None]
    assert feed.subscribers == 0


async def test_a_subscriber_cancelled_mid_wait_leaves_quietly() -> None:
    feed = EventFeed()
    subscribed = asyncio.Event()

    async def listen() -> None:
        async with contextlib.aclosing(feed.subscribe(idle_secs=60)) as items:
            subscribed.set()
            async for _ in items:
                pass

    task = asyncio.create_task(listen())
    await subscribed.wait()  # set just before it waits on the queue: it is waiting now
    assert feed.subscribers == 1
    task.cancel()  # what a client disconnect does to the SSE generator
    await asyncio.wait({task})
    assert task.cancelled()  # no other exception (the old code raised "aclose(): … already running")
    assert feed.subscribers == 0


async def test_close_ends_every_subscription() -> None:
    feed = EventFeed()
    items = feed.subscribe()
    pending = asyncio.ensure_future(items.__anext__())
    await asyncio.sleep(0)
    feed.close()
    try:
        await pending
    except StopAsyncIteration:
        pass
    else:
        raise AssertionError("the subscription did not end")
    assert feed.subscribers == 0
