"""The measuring side of bench/api_bench.py: sequential ops-API requests over one connection, per query kind.

The query kinds address the records bench/store_bench.py `generate()` writes (record n starts on day
n // 1000 at (n % 1000) * 80 s from GENERATE_START); with no records only the kinds the live calls answer.
"""

from __future__ import annotations

import http.client
import json
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from bench.store_bench import AGENTS
from patterd.clock import iso_ms
from patterd.store.index import encode_cursor

PER_DAY = 1000  # generate()'s default: record n starts on day n // 1000 at (n % 1000) * 80 s
GENERATE_START = datetime(2026, 1, 1, tzinfo=UTC)


def started_at(n: int) -> datetime:
    """The start time generate() gives record n."""
    return GENERATE_START + timedelta(days=n // PER_DAY, seconds=(n % PER_DAY) * 80)


def percentile(sorted_ms: list[float], q: float) -> float:
    """The q-quantile (0..1) of sorted samples, nearest rank."""
    return sorted_ms[min(len(sorted_ms) - 1, max(0, round(q * len(sorted_ms)) - 1))]


class Client:
    """Sequential GETs over one keep-alive HTTP/1.1 connection; the latency includes reading the body."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        # 60 s: a stall of seconds (an executor starved by STT flushes) is measured, not a crash
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)

    def get(self, path: str) -> tuple[float, int, Any]:
        began = time.perf_counter()
        self.conn.request("GET", path)
        resp = self.conn.getresponse()
        raw = resp.read()
        ms = (time.perf_counter() - began) * 1000
        return ms, resp.status, json.loads(raw) if raw else None


def query_kinds(records: int) -> dict[str, Callable[[dict[str, Any]], str]]:
    """Query kind → fn(state) giving the next path; `state` carries the cursors between calls."""
    rng = random.Random(6)

    def calls(**params: Any) -> str:
        return "/api/v1/calls?" + urlencode({"limit": 50, **params})

    def walk(key: str, **params: Any) -> Callable[[dict[str, Any]], str]:
        def path(state: dict[str, Any]) -> str:
            cursor = state.get(key)
            return calls(**params, cursor=cursor) if cursor else calls(**params)

        path.cursor_key = key  # type: ignore[attr-defined]
        return path

    def deep(state: dict[str, Any]) -> str:
        n = rng.randrange(min(50, records - 1), records)  # record 0 has nothing older
        return calls(cursor=encode_cursor(iso_ms(started_at(n)), f"call-{n:07d}"))

    def fortnight(state: dict[str, Any]) -> str:
        day = rng.randrange(max(1, records // PER_DAY))
        since = GENERATE_START + timedelta(days=day)
        return calls(since=iso_ms(since), until=iso_ms(since + timedelta(days=14)))

    def detail(state: dict[str, Any]) -> str:
        return f"/api/v1/calls/call-{rng.randrange(records):07d}"

    if records == 0:  # no generated history: only the kinds that the live calls answer
        return {
            "first page": lambda state: calls(),
            "status=in_progress": lambda state: calls(status="in_progress"),
        }
    return {
        "first page": lambda state: calls(),
        "status=failed": lambda state: calls(status="failed"),
        "agent=support": lambda state: calls(agent="support"),
        "status=in_progress": lambda state: calls(status="in_progress"),
        "cursor walk": walk("all"),
        "status=failed, cursor walk": walk("failed", status="failed"),
        "agent=sales, cursor walk": walk("sales", agent=AGENTS[2]),
        "random deep cursor": deep,
        "since+until (14 days)": fortnight,
        "GET /calls/{id} (old)": detail,
    }


def hammer(base_url: str, records: int, secs: float) -> tuple[dict[str, list[float]], list[str], int]:
    """Round-robin over the query kinds for `secs`; latency samples per kind, errors, live calls seen."""
    client = Client(base_url)
    kinds = query_kinds(records)
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    errors: list[str] = []
    state: dict[str, Any] = {}
    live_seen = 0
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        for kind, make in kinds.items():
            path = make(state)
            ms, status, body = client.get(path)
            samples[kind].append(ms)
            if status != 200:
                errors.append(f"{kind}: {path} answered {status}: {body}")
                continue
            key = getattr(make, "cursor_key", None)
            if key is not None:
                state[key] = body["next_cursor"]  # None at the end: the walk starts over
            if kind == "status=in_progress":
                live_seen = max(live_seen, len(body["calls"]))
            elif kind != "GET /calls/{id} (old)" and not body["calls"]:
                errors.append(f"{kind}: {path} returned no calls")
    return samples, errors, live_seen
