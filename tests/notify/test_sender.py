"""The notifier against the real fleet route over loopback: lost acknowledgements, refusals, a full queue, redaction."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from starlette.applications import Starlette
from starlette.types import Message, Receive, Scope, Send

from patterd.notify.receiver import FleetReceiver, parse_batch
from patterd.notify.sender import FleetNotifier
from patterd.protocols.events import CallEnded, CallEvent, CallStarted, TranscriptLine, TranscriptPartial
from patterd.store.memory import MemoryStore
from patterd.web.feed import EventFeed
from patterd.web.fleet_routes import fleet_routes
from tests.serving import serve_app

TOKEN = "fleet-unit-token-0123456789"
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


class LoseAcks:
    """ASGI wrapper: the first `lose` requests are applied by the app, but the client gets a 503 instead of
    its answer (a response lost on the way back: the sender must retry, the central must not apply twice)."""

    def __init__(self, app: Starlette, lose: int) -> None:
        self.app = app
        self.lose = lose
        self.requests = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.requests += 1
        if self.requests > self.lose:
            await self.app(scope, receive, send)
            return

        async def swallow(message: Message) -> None:
            pass

        await self.app(scope, receive, swallow)
        await send({"type": "http.response.start", "status": 503, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


def call(call_id: str, lines: int, start: datetime) -> list[CallEvent]:
    events: list[CallEvent] = [CallStarted(call_id, start, agent="desk", caller="+15550001111")]
    for n in range(lines):
        ts = start + timedelta(seconds=n + 1)
        events.append(TranscriptPartial(call_id, ts, text=f"line {n}"))  # live only: never sent
        events.append(TranscriptLine(call_id, ts, role="assistant", text=f"line {n}"))
    events.append(CallEnded(call_id, start + timedelta(seconds=lines + 1), status="completed"))
    return events


@pytest.fixture
async def central() -> AsyncIterator[tuple[str, MemoryStore, LoseAcks]]:
    store = MemoryStore()
    runtime: Any = SimpleNamespace(store=store, feed=EventFeed(), token=TOKEN)
    app = LoseAcks(Starlette(routes=fleet_routes(runtime)), lose=2)
    async with serve_app(app) as base_url:  # type: ignore[arg-type]
        yield base_url, store, app


async def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_lost_acknowledgements_are_retried_and_applied_once_in_order(
    central: tuple[str, MemoryStore, LoseAcks],
) -> None:
    base_url, store, app = central
    notifier = FleetNotifier(base_url, token=TOKEN, source="edge-2", retry_max_secs=0.05)
    a, b = call("call-a", 3, T0), call("call-b", 2, T0 + timedelta(seconds=1))
    for x, y in zip(a, b, strict=False):  # two calls interleaved, as a daemon's emit sees them
        notifier.observe(x)
        notifier.observe(y)
    for rest in a[len(b) :]:
        notifier.observe(rest)
    async with aiohttp.ClientSession() as http:
        notifier.start(http)
        await wait_until(lambda: notifier.counters.queued == 0)
        await notifier.close()
    assert app.requests >= 3 and notifier.counters.failed == 2
    sent = sum(1 for e in a + b if type(e) is not TranscriptPartial)
    assert notifier.counters.sent == sent and notifier.counters.dropped == 0
    for call_id, lines in (("call-a", 3), ("call-b", 2)):
        record = store.get_call(call_id)
        assert record is not None
        assert [t["text"] for t in record["transcript"]] == [f"line {n}" for n in range(lines)]
        assert [e["type"] for e in record["events"]] == ["call_started", "call_ended"]
        assert record["metadata"]["source"] == "edge-2" and record["metadata"]["status"] == "completed"


async def test_a_batch_the_central_refuses_is_dropped_and_counted(
    central: tuple[str, MemoryStore, LoseAcks],
) -> None:
    base_url, store, app = central
    app.lose = 0
    notifier = FleetNotifier(base_url, token=TOKEN, source="edge-2", retry_max_secs=0.05)
    notifier.observe(CallStarted("no/slashes", T0))  # cannot name a record: the central answers 400
    async with aiohttp.ClientSession() as http:
        notifier.start(http)
        await wait_until(lambda: notifier.counters.queued == 0)
        for event in call("call-c", 1, T0):  # later calls are not stalled behind it
            notifier.observe(event)
        await wait_until(lambda: notifier.counters.queued == 0)
        await notifier.close()
    assert notifier.counters.dropped == 1 and notifier.counters.sent == 3
    assert store.get_call("call-c") is not None


async def test_wrong_token_is_retried_not_dropped(central: tuple[str, MemoryStore, LoseAcks]) -> None:
    base_url, store, app = central
    app.lose = 0
    notifier = FleetNotifier(base_url, token="not-the-token-0123456789", source="edge-2", retry_max_secs=0.05)
    notifier.observe(CallStarted("call-d", T0))
    async with aiohttp.ClientSession() as http:
        notifier.start(http)
        await wait_until(lambda: notifier.counters.failed >= 2)
        await notifier.close(flush_secs=0.1)
    assert notifier.counters.queued == 1 and notifier.counters.sent == 0
    assert store.get_call("call-d") is None


def test_full_queue_drops_the_oldest_and_redacts_numbers() -> None:
    notifier = FleetNotifier("http://127.0.0.1:9", token=None, source="edge-2", redact="mask", max_queue=3)
    for event in call("call-e", 3, T0):  # 1 start + 3 lines + 1 end are sent (partials are not)
        notifier.observe(event)
    assert (notifier.counters.dropped, notifier.counters.queued) == (2, 3)
    queued = [item.body for item in notifier._queue]
    assert [q["seq"] for q in queued] == [2, 3, 4]  # the newest three, numbered as before the drop
    started = FleetNotifier("http://127.0.0.1:9", token=None, source="edge-2", redact="mask")
    started.observe(CallStarted("call-f", T0, caller="+15550001111"))
    assert started._queue[0].body["data"]["caller"] == "***1111"


def test_a_restarted_central_counts_what_it_stored() -> None:
    store = MemoryStore()
    batch = {
        "source": "edge-3",
        "events": [
            {
                "call_id": "call-g",
                "seq": 0,
                "type": "call_started",
                "ts": "2026-05-01T12:00:00.000Z",
                "data": {},
            },
            {
                "call_id": "call-g",
                "seq": 1,
                "type": "transcript",
                "ts": "2026-05-01T12:00:01.000Z",
                "data": {"role": "user", "text": "hi", "latency_ms": None},
            },
        ],
    }
    source, events = parse_batch(batch)
    assert FleetReceiver(store, lambda e: None).apply(source, events).accepted == 2
    again = FleetReceiver(store, lambda e: None)  # a new process on the same records
    applied = again.apply(source, events)
    assert (applied.accepted, applied.duplicates) == (0, 2)
    record = store.get_call("call-g")
    assert record is not None and len(record["transcript"]) == 1 and len(record["events"]) == 1
