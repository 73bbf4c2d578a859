"""Listing: newest first, filters, cursor pagination over index and live calls together."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from patterd.protocols.events import CallEnded
from patterd.store import CallStore
from tests.store.helpers import T0, call_events

AGENTS = ("receptionist", "support")


def fill(store: CallStore, count: int) -> None:
    for n in range(count):
        status = "failed" if n % 3 == 0 else "completed"
        for event in call_events(f"c{n:03d}", T0 + timedelta(hours=n), agent=AGENTS[n % 2], status=status):
            store.handle(event)
    store.flush()


@pytest.fixture(params=["disk", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> CallStore:
    if request.param == "memory":
        s = CallStore(None)
        fill(s, 25)
        return s
    writer = CallStore(tmp_path)
    fill(writer, 25)
    writer.close()
    reopened = CallStore(tmp_path)  # everything comes from the index, nothing from memory
    reopened.hydrate()
    return reopened


def all_pages(store: CallStore, **filters: object) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    while True:
        page, cursor = store.list_calls(limit=7, cursor=cursor, **filters)  # type: ignore[arg-type]
        pages.append([c["call_id"] for c in page])
        if cursor is None:
            return pages


def test_pages_cover_everything_newest_first(store: CallStore) -> None:
    pages = all_pages(store)
    assert [len(p) for p in pages] == [7, 7, 7, 4]
    flat = [c for p in pages for c in p]
    assert flat == [f"c{n:03d}" for n in range(24, -1, -1)]


def test_filters(store: CallStore) -> None:
    failed = [c for p in all_pages(store, status="failed") for c in p]
    assert failed == [f"c{n:03d}" for n in range(24, -1, -1) if n % 3 == 0]
    support = [c for p in all_pages(store, agent="support") for c in p]
    assert support == [f"c{n:03d}" for n in range(24, -1, -1) if n % 2 == 1]
    window = store.list_calls(since=T0 + timedelta(hours=5), until=T0 + timedelta(hours=8))[0]
    assert [c["call_id"] for c in window] == ["c007", "c006", "c005"]
    both = store.list_calls(status="completed", agent="receptionist", limit=3)[0]
    assert [c["call_id"] for c in both] == ["c022", "c020", "c016"]


def test_bad_arguments(store: CallStore) -> None:
    with pytest.raises(ValueError, match="cursor 'nope' is not a cursor"):
        store.list_calls(cursor="nope")
    with pytest.raises(ValueError, match="limit is 0; expected 1 to 1000"):
        store.list_calls(limit=0)


def test_live_calls_merge_with_the_index(tmp_path: Path) -> None:
    first = CallStore(tmp_path)
    fill(first, 3)
    first.close()
    store = CallStore(tmp_path)
    store.hydrate()
    for event in call_events("live", T0 + timedelta(days=1), end=False):
        store.handle(event)  # no flush: memory must show it before the disk does
    page, _ = store.list_calls(limit=2)
    assert [c["call_id"] for c in page] == ["live", "c002"]
    assert page[0]["status"] == "in_progress"
    assert [c["call_id"] for c in store.live_calls()] == ["live"]
    store.handle(CallEnded("live", T0 + timedelta(days=1, seconds=30)))
    store.flush()
    page, _ = store.list_calls(limit=10)
    assert [c["call_id"] for c in page] == ["live", "c002", "c001", "c000"]  # no duplicate
    assert page[0]["status"] == "completed"
    store.close()


def test_returned_metadata_is_a_copy(tmp_path: Path) -> None:
    store = CallStore(tmp_path)
    fill(store, 1)
    store.list_calls()[0][0]["agent"]["name"] = "mutated"
    assert store.list_calls()[0][0]["agent"]["name"] == "receptionist"
    store.close()
