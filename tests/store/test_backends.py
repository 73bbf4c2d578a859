"""One behaviour, both backends: listings filter, order and page the same from files and from PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from patterd.config.persist import DatabaseURL
from patterd.store import RecordStore, open_store
from tests.services import postgres_url  # noqa: F401  (fixture)
from tests.store.helpers import T0, call_events

STATUSES = ("completed", "failed", "no_answer")
AGENTS = ("desk", "sales")


def history() -> list[tuple[str, datetime, str, str, bool]]:
    """(call_id, started, status, agent, ended) of 40 calls over three days, some starting together."""
    calls = []
    for n in range(40):
        started = T0 + timedelta(hours=n * 2) if n % 5 else T0 + timedelta(hours=(n - 1) * 2)  # ties
        calls.append((f"c{n:02d}", started, STATUSES[n % 3], AGENTS[n % 2], n % 7 != 0))
    return calls


@pytest.fixture(params=["files", "postgresql"])
def reopened(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RecordStore]:
    """A store of each backend holding `history()`, opened afresh so listings come from storage."""
    files = request.param == "files"
    persist = tmp_path if files else DatabaseURL(request.getfixturevalue("postgres_url"))
    writer = open_store(persist)
    for call_id, started, status, agent, ended in history():
        for event in call_events(call_id, started, agent=agent, status=status, end=ended):
            writer.handle(event)
    assert writer.flush(10)
    writer.close()
    store = open_store(persist)
    store.hydrate()  # files: a crash left the unended ones open (→ failed); the database: a count
    yield store
    store.close()


def expected(
    *,
    status: str | None = None,
    agent: str | None = None,
    lo: datetime | None = None,
    hi: datetime | None = None,
) -> list[str]:
    rows = [
        (started, call_id)
        for call_id, started, st, ag, ended in history()
        if (status is None or (st if ended else "in_progress") == status)
        and (agent is None or ag == agent)
        and (lo is None or started >= lo)
        and (hi is None or started < hi)
    ]
    return [call_id for _, call_id in sorted(rows, reverse=True)]


def walk(store: RecordStore, limit: int, **filters: Any) -> list[str]:
    """Every page of a listing, following the cursors."""
    out: list[str] = []
    cursor = None
    while True:
        page, cursor = store.list_calls(limit=limit, cursor=cursor, **filters)
        assert len(page) <= limit
        out += [m["call_id"] for m in page]
        if cursor is None:
            return out


def test_listings_filter_order_and_page_alike(reopened: RecordStore, request: pytest.FixtureRequest) -> None:
    files = "files" in request.node.callspec.id
    lo, hi = T0 + timedelta(hours=20), T0 + timedelta(hours=50)
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({}, expected()),
        ({"status": "completed"}, expected(status="completed")),
        ({"agent": "sales"}, expected(agent="sales")),
        ({"since": lo, "until": hi}, expected(lo=lo, hi=hi)),
        (
            {"status": "no_answer", "agent": "desk", "since": lo},
            expected(status="no_answer", agent="desk", lo=lo),
        ),
    ]
    if not files:  # the database has no crash recovery to run: open calls stay open
        cases.append(({"status": "in_progress"}, expected(status="in_progress")))
    for filters, want in cases:
        assert want, filters  # every case selects something
        for limit in (1, 7, 50):
            assert walk(reopened, limit, **filters) == want, (filters, limit)
    page, cursor = reopened.list_calls(limit=3)
    assert [m["call_id"] for m in page] == expected()[:3] and cursor is not None
    assert page[0]["agent"]["name"] in AGENTS and page[0]["schema_version"] == "1.0"
    assert reopened.list_calls(agent="nobody") == ([], None)
    with pytest.raises(ValueError):
        reopened.list_calls(limit=0)
