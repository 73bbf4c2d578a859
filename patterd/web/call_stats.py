"""Hourly call volume and turn latency over the last day, from the call store, for the dashboard's plot."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from patterd.clock import iso_ms
from patterd.store.records import percentile

PAGE = 1000
# Enough for a busy day on one daemon; past this the plot says it is truncated instead of
# slowing every dashboard load down.
MAX_CALLS = 20_000


class CallLister(Protocol):
    """The one store query the stats need (CallStore.list_calls)."""

    def list_calls(
        self,
        *,
        status: str | None = None,
        agent: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]: ...


@dataclass
class HourBucket:
    """Calls that started within one hour."""

    start: datetime
    calls: int = 0
    failed: int = 0
    cost: float = 0.0
    p50s: list[float] = field(default_factory=list)
    p95s: list[float] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "start": iso_ms(self.start),
            "calls": self.calls,
            "failed": self.failed,
            "cost_usd": round(self.cost, 6),
            # Per-call summaries are what the index holds: the hour's p50 is the median of the
            # calls' median turn latency, its p95 the 95th percentile of the calls' p95.
            "p50_ms": percentile(sorted(self.p50s), 50),
            "p95_ms": percentile(sorted(self.p95s), 95),
        }


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def hourly_stats(store: CallLister, now: datetime, hours: int = 24) -> dict[str, Any]:
    """Per-hour counts, failures, cost and p50/p95 turn latency for the `hours` up to `now`."""
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=hours)
    buckets = [HourBucket(start + timedelta(hours=i)) for i in range(hours)]
    all_p50: list[float] = []
    all_p95: list[float] = []
    seen = 0
    truncated = False
    cursor: str | None = None
    while True:
        page, cursor = store.list_calls(since=start, until=end, limit=PAGE, cursor=cursor)
        for meta in page:
            started = _parse(meta.get("started_at"))
            if started is None:
                continue
            slot = int((started - start).total_seconds() // 3600)
            if not 0 <= slot < hours:
                continue
            bucket = buckets[slot]
            bucket.calls += 1
            if meta.get("status") == "failed":
                bucket.failed += 1
            cost = meta.get("cost")
            total = _number(cost.get("total")) if isinstance(cost, dict) else None
            bucket.cost += total or 0.0
            latency = meta.get("latency")
            if isinstance(latency, dict):
                p50 = _number(latency.get("p50_ms"))
                p95 = _number(latency.get("p95_ms"))
                if p50 is not None:
                    bucket.p50s.append(p50)
                    all_p50.append(p50)
                if p95 is not None:
                    bucket.p95s.append(p95)
                    all_p95.append(p95)
        seen += len(page)
        if cursor is None:
            break
        if seen >= MAX_CALLS:
            truncated = True
            break
    rows = [b.as_json() for b in buckets]
    return {
        "from": iso_ms(start),
        "to": iso_ms(end),
        "hours": rows,
        "totals": {
            "calls": sum(b.calls for b in buckets),
            "failed": sum(b.failed for b in buckets),
            "cost_usd": round(sum(b.cost for b in buckets), 6),
            "p50_ms": percentile(sorted(all_p50), 50),
            "p95_ms": percentile(sorted(all_p95), 95),
        },
        "truncated": truncated,
    }
