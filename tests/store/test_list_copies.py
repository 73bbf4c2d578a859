"""list_calls hands out metadata nobody else holds, whether a row came from memory or the index."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from patterd.store import CallStore
from tests.store.helpers import T0, call_events


def test_pages_mixing_memory_and_index_rows_are_the_callers_to_mutate(tmp_path: Path) -> None:
    first = CallStore(tmp_path)
    for n in range(3):
        for event in call_events(f"old{n}", T0 + timedelta(hours=n)):
            first.handle(event)
    first.close()
    store = CallStore(tmp_path)
    store.hydrate()  # old0..old2 come from the index
    for event in call_events("live", T0 + timedelta(days=1), end=False):
        store.handle(event)  # live comes from memory
    page, _ = store.list_calls()
    assert [c["call_id"] for c in page] == ["live", "old2", "old1", "old0"]
    for meta in page:
        meta["agent"]["name"] = "mutated"
        meta["status"] = "mutated"
    again, _ = store.list_calls()
    assert {c["agent"]["name"] for c in again} == {"receptionist"}
    assert [c["status"] for c in again] == ["in_progress", "completed", "completed", "completed"]
    assert {c["agent"]["name"] for c in store.live_calls()} == {"receptionist"}
    store.close()
