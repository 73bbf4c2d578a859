"""Call records: the store observing call events, persisting them off the loop, and answering queries.

Two backends behind one interface (`backend.RecordStore`): files under a directory (`files`, the
default; layout and fields are contracts.md §4) and PostgreSQL (`postgres`, `persist:
postgresql://…`, the same records in tables so every replica lists every call). `open_store`
picks one from the resolved `persist` setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from patterd.clock import SYSTEM_CLOCK, Clock
from patterd.config.persist import DatabaseURL
from patterd.store.backend import RecordStore
from patterd.store.files import CallStore
from patterd.store.hydrate import HydrateReport

__all__ = ["CallStore", "HydrateReport", "RecordStore", "open_store"]


def open_store(
    persist: Path | DatabaseURL | None,
    *,
    redact_phone: str = "full",
    retention_days: int = 30,
    pricing: Mapping[str, Mapping[str, float]] = {},
    clock: Clock = SYSTEM_CLOCK,
) -> RecordStore:
    """The store for a resolved `persist`: a database URL, a records directory, or None (memory only)."""
    if isinstance(persist, DatabaseURL):
        from patterd.store.postgres import PostgresStore  # asyncpg is an optional extra: import it only here

        return PostgresStore(
            persist,
            redact_phone=redact_phone,
            retention_days=retention_days,
            pricing=pricing,
            clock=clock,
        )
    return CallStore(
        persist, redact_phone=redact_phone, retention_days=retention_days, pricing=pricing, clock=clock
    )
