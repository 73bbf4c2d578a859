"""Benchmark of the PostgreSQL record store: write throughput through the store, then listing latency.

Run: `python bench/store_postgres.py [--calls 10000] [--url postgresql://…]` (default: a new database
on $PATTERD_TEST_POSTGRES_URL's server, dropped after). Each call is ~13 records (start, status,
turns, tool, usage, end); the calls go through `PostgresStore.handle` as the daemon's events would,
and `flush` waits for the commits. Then `list_calls` p50/p99 from a second store (no memory: every
page is SQL): first page, a filtered page, a page deep in the cursor chain, and `get_call`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from patterd.config.persist import DatabaseURL  # noqa: E402
from patterd.store import open_store  # noqa: E402
from tests.store.helpers import T0, call_events  # noqa: E402

SERVER = os.environ.get(
    "PATTERD_TEST_POSTGRES_URL", "postgresql://patterd:patterd@127.0.0.1:5432/patterd_test"
)


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(SERVER)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 2),
    }


def run(url: str, calls: int, rounds: int) -> dict[str, object]:
    store = open_store(DatabaseURL(url))
    store.hydrate()  # connects and creates the schema: not part of the write figure
    records = 0
    began = time.perf_counter()
    for n in range(calls):
        agent = ("desk", "sales", "support")[n % 3]
        status = ("completed", "failed", "no_answer")[n % 3]
        for event in call_events(f"call-{n:06d}", T0 + timedelta(seconds=n * 30), agent=agent, status=status):
            store.handle(event)
            records += 1
    handled = time.perf_counter() - began
    assert store.flush(600)
    total = time.perf_counter() - began
    store.close()

    reader = open_store(DatabaseURL(url))
    cursor = None
    for _ in range(min(100, calls // 50)):  # a cursor 100 pages (5,000 calls) deep
        cursor = reader.list_calls(limit=50, cursor=cursor)[1]
    timings: dict[str, list[float]] = {"first_page": [], "agent_page": [], "deep_page": [], "get_call": []}
    for i in range(rounds):
        for name, call in (
            ("first_page", lambda: reader.list_calls(limit=50)),
            ("agent_page", lambda: reader.list_calls(limit=50, agent="sales", status="no_answer")),
            ("deep_page", lambda: reader.list_calls(limit=50, cursor=cursor)),
            ("get_call", lambda i=i: reader.get_call(f"call-{(i * 7919) % calls:06d}")),  # type: ignore[misc]
        ):
            t = time.perf_counter()
            call()
            timings[name].append(time.perf_counter() - t)
    reader.close()
    return {
        "calls": calls,
        "records": records,
        "handle_secs": round(handled, 3),
        "committed_secs": round(total, 3),
        "records_per_sec": round(records / total),
        "calls_per_sec": round(calls / total),
        **{name: percentiles(samples) for name, samples in timings.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--url", help="an existing database to use (its tables are created if missing)")
    args = parser.parse_args()
    if args.url:
        print(json.dumps(run(args.url, args.calls, args.rounds), indent=2))
        return
    name = "patterd_bench_" + secrets.token_hex(4)
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        parts = urlsplit(SERVER)
        url = urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))
        print(json.dumps(run(url, args.calls, args.rounds), indent=2))
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
