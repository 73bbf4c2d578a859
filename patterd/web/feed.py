"""The live event feed: call events fanned out to Server-Sent-Events subscribers, with replay by id."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from patterd.clock import iso_ms
from patterd.protocols.events import CallEnded, CallEvent, CallStarted, CallStatusChanged, TranscriptLine

# Live feed names: what a dashboard or script subscribes to.
FEED_NAMES: dict[type[CallEvent], str] = {
    CallStarted: "call.started",
    CallStatusChanged: "call.updated",
    CallEnded: "call.ended",
    TranscriptLine: "transcript",
}
SUBSCRIBER_QUEUE = 1000  # a subscriber this far behind is dropped (it can reconnect with Last-Event-ID)


@dataclass(frozen=True)
class FeedItem:
    """One event on the feed, numbered for Last-Event-ID."""

    id: int
    name: str
    data: dict[str, Any]

    def encode(self) -> str:
        """The SSE wire form."""
        return f"id: {self.id}\nevent: {self.name}\ndata: {json.dumps(self.data, separators=(',', ':'))}\n\n"


class EventFeed:
    """Keeps the last events and pushes new ones to every subscriber."""

    def __init__(self, history: int = 500, redact: Any = None) -> None:
        self._ids = itertools.count(1)
        self._history: deque[FeedItem] = deque(maxlen=history)
        self._subscribers: set[asyncio.Queue[FeedItem | None]] = set()
        self._redact = redact
        # Set by a cluster replica: this process's call events also go to the other replicas' feeds.
        self.forward: Callable[[str, dict[str, Any]], None] | None = None

    def observe(self, event: CallEvent) -> None:
        """Call-event observer: publish the events the feed carries."""
        name = FEED_NAMES.get(type(event))
        if name is None:
            name = "call.event"
        data = {"call_id": event.call_id, "ts": iso_ms(event.ts), "type": event.type, **event.data()}
        if self._redact is not None:
            data = self._redact(data)
        self.publish(name, data)
        if self.forward is not None:
            self.forward(name, data)

    def publish(self, name: str, data: dict[str, Any]) -> None:
        """Publish any item (e.g. a reload notice)."""
        item = FeedItem(next(self._ids), name, data)
        self._history.append(item)
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:  # too slow: end its subscription; it resumes by Last-Event-ID
                self._subscribers.discard(queue)
                queue.get_nowait()
                queue.put_nowait(None)

    async def subscribe(
        self, last_event_id: int | None = None, *, idle_secs: float | None = None
    ) -> AsyncGenerator[FeedItem | None, None]:
        """Items after `last_event_id` from history, then live ones; ends when dropped or closed.

        With `idle_secs`, None is yielded after that long without an item (time for a heartbeat). The wait
        happens here, on the queue, so a subscriber that goes away mid-wait just closes the generator.
        """
        queue: asyncio.Queue[FeedItem | None] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        try:
            if last_event_id is not None:
                for item in list(self._history):
                    if item.id > last_event_id:
                        yield item
            while True:
                try:
                    async with asyncio.timeout(idle_secs):
                        next_item = await queue.get()
                except TimeoutError:
                    yield None
                    continue
                if next_item is None:
                    return
                if last_event_id is not None and next_item.id <= last_event_id:
                    continue
                yield next_item
        finally:
            self._subscribers.discard(queue)

    def close(self) -> None:
        """End every subscription (shutdown)."""
        for queue in list(self._subscribers):
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(None)
        self._subscribers.clear()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)
