"""The PostgreSQL record store against a real server: round trip, shared database, retention, odd text."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from patterd.config.persist import DatabaseURL
from patterd.protocols.events import CallStarted, RecordingReady, TranscriptLine
from patterd.store import CallStore, open_store
from patterd.store.postgres import PostgresStore
from tests.services import postgres_url  # noqa: F401  (fixture)
from tests.store.helpers import T0, FakeClock, call_events


@pytest.fixture
def stores(postgres_url: str) -> Iterator[list[PostgresStore]]:  # noqa: F811
    """Stores opened on this test's database; closed after it."""
    opened: list[PostgresStore] = []
    yield opened
    for store in opened:
        store.close()


def open_pg(url: str, opened: list[PostgresStore], **kwargs: object) -> PostgresStore:
    store = open_store(DatabaseURL(url), **kwargs)  # type: ignore[arg-type]
    assert isinstance(store, PostgresStore)
    opened.append(store)
    return store


def test_a_whole_call_round_trips_like_the_files(
    postgres_url: str,  # noqa: F811
    stores: list[PostgresStore],
    tmp_path: Path,
) -> None:
    pg = open_pg(postgres_url, stores, redact_phone="mask")
    files = CallStore(tmp_path, redact_phone="mask")
    events = [*call_events("call-1"), RecordingReady("call-1", T0 + timedelta(seconds=70), url="https://r/1")]
    for event in events:
        pg.handle(event)
        files.handle(event)
    assert pg.flush(10) and files.flush(10)
    files.close()
    from_files = CallStore(tmp_path, redact_phone="mask")  # a fresh process: everything comes from disk
    from_files.hydrate()
    fresh = open_pg(postgres_url, stores, redact_phone="mask")  # likewise from the database
    stored = fresh.get_call("call-1")
    assert stored is not None
    assert stored == from_files.get_call("call-1") == pg.get_call("call-1")
    assert stored["metadata"]["caller"] == "***4567"  # redacted before storage
    assert stored["metadata"]["recording_url"] == "https://r/1"  # the late rewrite landed too
    assert [t["text"] for t in stored["transcript"]] == ["Hi there", "Hello!", "Your order"]
    assert stored["events"][0]["type"] == "call_started" and stored["events"][-1]["type"] == "recording"
    assert fresh.get_call("nope") is None
    from_files.close()

    async def raw() -> tuple[str, int, int]:
        conn = await asyncpg.connect(postgres_url)
        try:
            row = await conn.fetchrow("SELECT status, caller FROM calls WHERE call_id = 'call-1'")
            lines = await conn.fetchval("SELECT count(*) FROM transcript_lines")
            evs = await conn.fetchval("SELECT count(*) FROM call_events")
        finally:
            await conn.close()
        assert row["caller"] == "***4567"
        return str(row["status"]), int(lines), int(evs)

    assert asyncio.run(raw()) == ("completed", 3, len(events) - 3)


async def test_the_first_row_is_committed_before_wait_durable_returns(
    postgres_url: str,  # noqa: F811
    stores: list[PostgresStore],
) -> None:
    pg = open_pg(postgres_url, stores)
    other = open_pg(postgres_url, stores)  # another replica: it sees only what is committed
    pg.handle(call_events("durable")[0])
    assert await pg.wait_durable("durable", timeout=10)
    found = await asyncio.to_thread(other.get_call, "durable")
    assert found is not None and found["metadata"]["status"] == "in_progress"


def test_two_daemons_sharing_a_database_list_each_others_calls(
    postgres_url: str,  # noqa: F811
    stores: list[PostgresStore],
) -> None:
    a = open_pg(postgres_url, stores)
    b = open_pg(postgres_url, stores)
    for event in call_events("on-a", T0):
        a.handle(event)
    for event in call_events("on-b", T0 + timedelta(minutes=1), end=False):
        b.handle(event)
    assert a.flush(10) and b.flush(10)
    for store in (a, b):
        page, cursor = store.list_calls()
        assert [m["call_id"] for m in page] == ["on-b", "on-a"] and cursor is None
        assert [m["status"] for m in page] == ["in_progress", "completed"]
    detail = a.get_call("on-b")
    assert detail is not None and len(detail["transcript"]) == 3
    assert a.live_calls() == [] and [m["call_id"] for m in b.live_calls()] == ["on-b"]
    assert a.stats()["records"] == 2


def test_retention_deletes_old_calls_and_their_lines(
    postgres_url: str,  # noqa: F811
    stores: list[PostgresStore],
) -> None:
    clock = FakeClock(T0 + timedelta(days=40))
    pg = open_pg(postgres_url, stores, retention_days=30, clock=clock)
    for event in [*call_events("old", T0), *call_events("new", T0 + timedelta(days=35))]:
        pg.handle(event)
    for event in call_events("old-but-live", T0 - timedelta(days=1), end=False):
        pg.handle(event)
    assert pg.flush(10)
    assert pg.sweep_retention() == 1
    fresh = open_pg(postgres_url, stores)
    assert [m["call_id"] for m in fresh.list_calls()[0]] == ["new", "old-but-live"]
    assert fresh.get_call("old") is None and pg.get_call("old") is None

    async def orphans() -> int:
        conn = await asyncpg.connect(postgres_url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM call_events WHERE call_id = 'old'"))
        finally:
            await conn.close()

    assert asyncio.run(orphans()) == 0


def test_text_postgres_refuses_is_stored_like_the_files_would(
    postgres_url: str,  # noqa: F811
    stores: list[PostgresStore],
) -> None:
    pg = open_pg(postgres_url, stores)
    started = call_events("odd", T0)[0]
    assert isinstance(started, CallStarted)
    pg.handle(started)
    pg.handle(TranscriptLine("odd", T0 + timedelta(seconds=1), role="user", text="nul\x00here \ud800 ok"))
    pg.handle(TranscriptLine("odd", T0 + timedelta(seconds=2), role="assistant", text="after"))
    assert pg.flush(10)
    fresh = open_pg(postgres_url, stores)
    stored = fresh.get_call("odd")
    assert stored is not None
    assert [t["text"] for t in stored["transcript"]] == ["nul\ufffdhere \ufffd ok", "after"]
    assert pg.write_errors == 0


def test_a_foreign_cursor_is_refused(postgres_url: str, stores: list[PostgresStore]) -> None:  # noqa: F811
    pg = open_pg(postgres_url, stores)
    with pytest.raises(ValueError, match="cursor"):
        pg.list_calls(cursor="bm90LWEtY3Vyc29y")
    with pytest.raises(ValueError, match="cursor"):
        pg.list_calls(cursor="WyJub3QgYSB0aW1lIiwgIngiXQ")  # ["not a time", "x"]


def test_a_dead_replicas_open_calls_are_closed_by_another(
    postgres_url: str,  # noqa: F811
    stores: list[PostgresStore],
) -> None:
    dead = open_pg(postgres_url, stores)
    events = call_events("orphan", end=False)
    for event in events:
        dead.handle(event)
    assert dead.flush(10)
    dead.close()  # its daemon is gone with the call still open
    survivor = open_pg(postgres_url, stores, clock=FakeClock(T0 + timedelta(hours=1)))
    for event in call_events("mine", T0, end=False):
        survivor.handle(event)
    assert survivor.flush(10)
    assert survivor.recover_orphans(["orphan", "mine", "unknown"]) == 1
    assert survivor.recover_orphans(["orphan"]) == 0  # closed already: nothing to do
    meta = open_pg(postgres_url, stores).get_call("orphan")["metadata"]  # type: ignore[index]
    assert (meta["status"], meta["error"]) == ("failed", "daemon stopped during call")
    assert meta["ended_at"] == "2026-03-14T12:00:10.123Z"  # its last line
    assert meta["turns"] == 3 and meta["duration_ms"] == 10_000
    assert survivor.get_call("mine")["metadata"]["status"] == "in_progress"  # type: ignore[index]


def test_a_call_carried_on_by_another_replica_keeps_every_line(
    postgres_url: str,  # noqa: F811
    stores: list[PostgresStore],
) -> None:
    """The webhook on one replica, the media on another: the second one's lines follow the first's."""
    events = call_events("moved")
    first, second = open_pg(postgres_url, stores), open_pg(postgres_url, stores)
    for event in events[:3]:  # started, in progress, the caller's first words
        first.handle(event)
    assert first.flush(10)
    for event in [events[0], *events[3:]]:  # the replica taking over opens the call from its start
        second.handle(event)
    assert second.flush(10)
    stored = open_pg(postgres_url, stores).get_call("moved")
    assert stored is not None
    assert [t["text"] for t in stored["transcript"]] == ["Hi there", "Hello!", "Your order"]
    types = [e["type"] for e in stored["events"]]
    assert types.count("call_started") == 2 and types[-1] == "call_ended"
    assert len(stored["transcript"]) + len(stored["events"]) == len(events) + 1
