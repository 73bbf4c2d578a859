"""Retention: day directories older than retention_days go, with their index rows; 0 keeps all."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from patterd.store import CallStore
from tests.store.helpers import T0, FakeClock, call_events


def fill_days(store: CallStore, days: int) -> None:
    for n in range(days):
        for event in call_events(f"d{n}", T0 + timedelta(days=n)):
            store.handle(event)
    store.flush()


def test_sweep_deletes_old_days_and_empty_parents(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    store = CallStore(tmp_path, retention_days=10, clock=clock)
    start = T0 - timedelta(days=40)  # 2026-02-02 … 2026-03-14: months 02 and 03
    for n in range(41):
        for event in call_events(f"d{n}", start + timedelta(days=n)):
            store.handle(event)
    store.flush()
    (tmp_path / "calls/2026/02/notes.txt").write_text("foreign file: keeps its month")
    assert store.sweep_retention() == 30  # at 03-14 with 10 days: 02-02 … 03-03 go
    remaining = sorted(p.name for p in (tmp_path / "calls/2026/03").iterdir())
    assert remaining == [f"{d:02d}" for d in range(4, 15)]
    assert sorted(p.name for p in (tmp_path / "calls/2026/02").iterdir()) == ["notes.txt"]
    page, _ = store.list_calls(limit=100)
    assert len(page) == 11 and page[-1]["started_at"].startswith("2026-03-04")
    assert store.stats()["records"] == 11
    clock.current = T0 + timedelta(days=365)
    assert store.sweep_retention() == 11
    assert not (tmp_path / "calls/2026/03").exists()
    assert (tmp_path / "calls/2026/02/notes.txt").exists()
    assert store.list_calls()[0] == []
    store.close()


def test_empty_year_and_month_dirs_are_removed(tmp_path: Path) -> None:
    store = CallStore(tmp_path, retention_days=1, clock=FakeClock(T0 + timedelta(days=30)))
    fill_days(store, 2)
    assert store.sweep_retention() == 2
    assert list((tmp_path / "calls").iterdir()) == []
    store.close()


def test_zero_keeps_forever(tmp_path: Path) -> None:
    store = CallStore(tmp_path, retention_days=0, clock=FakeClock(T0 + timedelta(days=9999)))
    fill_days(store, 3)
    assert store.sweep_retention() == 0
    assert len(store.list_calls()[0]) == 3
    store.close()


def test_live_call_day_is_kept(tmp_path: Path) -> None:
    store = CallStore(tmp_path, retention_days=1)
    for event in call_events("live", T0, end=False):
        store.handle(event)
    store.flush()
    assert store.sweep_retention(now=T0 + timedelta(days=5)) == 0
    assert (tmp_path / "calls/2026/03/14/live/metadata.json").exists()
    store.close()


async def test_retention_loop_sweeps_in_a_thread(tmp_path: Path) -> None:
    clock = FakeClock(T0 + timedelta(days=30))
    store = CallStore(tmp_path, retention_days=7, clock=clock)
    fill_days(store, 3)
    swept: asyncio.Queue[int] = asyncio.Queue()
    task = asyncio.create_task(store.run_retention_loop(interval_secs=3600, on_sweep=swept.put_nowait))
    try:
        assert await asyncio.wait_for(swept.get(), timeout=10) == 3
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert store.list_calls()[0] == []
    store.close()
