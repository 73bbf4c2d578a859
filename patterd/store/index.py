"""The SQLite index of call records (`<root>/index.sqlite3`): fast listing, filtering and paging.

The files stay the source of truth: the index holds each call's metadata and the mtime of its
metadata.json, so hydrate can tell which directories changed, and it is rebuilt from the tree
when missing, stale (other schema) or corrupt.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import structlog

from patterd.protocols.jsontext import loads
from patterd.store.locks import index_lock

log = structlog.get_logger(__name__)

INDEX_NAME = "index.sqlite3"
INDEX_SCHEMA = "1"

_DDL = """
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS calls (
    relpath TEXT PRIMARY KEY,      -- YYYY/MM/DD/<call_id> under <root>/calls
    call_id TEXT NOT NULL,
    day TEXT NOT NULL,             -- YYYY/MM/DD
    started_at TEXT NOT NULL,      -- ISO-8601 ms Z: sorts like time
    status TEXT NOT NULL,
    agent TEXT NOT NULL,
    mtime_ns INTEGER NOT NULL,     -- of metadata.json when indexed
    metadata TEXT NOT NULL         -- metadata.json as JSON
);
"""
SECONDARY_INDEXES = {
    "calls_time": "calls (started_at, call_id)",
    "calls_status": "calls (status, started_at, call_id)",
    "calls_agent": "calls (agent, started_at, call_id)",
    "calls_id": "calls (call_id)",
    "calls_day": "calls (day)",
}
BULK_ROWS = 5000
# Processes write rows of the same record (a worker's writer, another's hydrate): the row of the
# newer metadata.json wins, whatever order they commit in (a hydrate's chunk read before a rewrite
# must not put the older row back).
UPSERT = (
    "INSERT INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (relpath) DO UPDATE SET"
    " call_id = excluded.call_id, day = excluded.day, started_at = excluded.started_at,"
    " status = excluded.status, agent = excluded.agent, mtime_ns = excluded.mtime_ns,"
    " metadata = excluded.metadata WHERE excluded.mtime_ns >= calls.mtime_ns"
)

Row = tuple[str, str, str, str, str, str, int, str]


def encode_cursor(started_at: str, call_id: str) -> str:
    """An opaque cursor pointing after (started_at, call_id) in newest-first order."""
    return base64.urlsafe_b64encode(json.dumps([started_at, call_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    """(started_at, call_id) of a cursor; ValueError when it did not come from list_calls."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        started_at, call_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValueError(f"cursor {cursor!r} is not a cursor returned by a call listing") from exc
    if not isinstance(started_at, str) or not isinstance(call_id, str):
        raise ValueError(f"cursor {cursor!r} is not a cursor returned by a call listing")
    return started_at, call_id


def row_of(relpath: str, metadata: dict[str, Any], mtime_ns: int, text: str | None = None) -> Row:
    """The index row of one call directory; `text` is metadata as JSON when already at hand."""
    agent = metadata.get("agent")
    name = agent.get("name", "") if isinstance(agent, dict) else ""
    return (
        relpath,
        str(metadata["call_id"]),
        relpath.rsplit("/", 1)[0],
        str(metadata["started_at"]),
        str(metadata.get("status", "")),
        str(name or ""),
        mtime_ns,
        text if text is not None else json.dumps(metadata, ensure_ascii=False, separators=(",", ":")),
    )


class CallIndex:
    """One connection to the index; safe to share between threads (calls are serialized)."""

    def __init__(self, path: Path, *, verify: bool = False) -> None:
        """Open (creating or rebuilding) the index; `verify` runs a quick_check (~80 ms at 100k calls)."""
        self.path = path
        self.verify = verify
        self._lock = threading.Lock()
        self._db = self._open()
        self._identity = self._file_identity()

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def replaced(self) -> bool:
        """Whether the file at `path` is no longer the one this connection opened (deleted or recreated)."""
        return self._file_identity() != self._identity

    def _open(self) -> sqlite3.Connection:
        """Open the index, deleting and recreating it when it is corrupt or of another schema.

        Several processes (`server.workers`) open the same file, perhaps at once: a new index (no
        schema row yet: its creator is between creating the tables and writing the row) is adopted,
        never deleted, or the creator would go on writing into an unlinked file nobody else reads;
        a replacement happens under `<index>.lock` and only if the index is still bad once held.
        A busy database (sqlite3.OperationalError) is not corrupt: it is raised, nothing deleted.
        """
        db = self._usable()
        if db is not None:
            return db
        with index_lock(self.path):
            db = self._usable()  # another process may have replaced it while we waited
            if db is not None:
                return db
            self.remove_files(self.path)
            db = self._connect()
            db.execute("INSERT OR IGNORE INTO info VALUES ('schema', ?)", (INDEX_SCHEMA,))
            return db

    def _usable(self) -> sqlite3.Connection | None:
        """A connection to the index when it is of this schema (new ones adopted), else None."""
        try:
            db = self._connect()
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError as exc:
            log.warning("store_index_corrupt", path=str(self.path), error=str(exc), action="rebuilding")
            return None
        try:
            row = db.execute("SELECT value FROM info WHERE key = 'schema'").fetchone()
            if row is None:  # new: this or another process just created it
                db.execute("INSERT OR IGNORE INTO info VALUES ('schema', ?)", (INDEX_SCHEMA,))
                row = db.execute("SELECT value FROM info WHERE key = 'schema'").fetchone()
            (version,) = row
        except sqlite3.OperationalError:
            db.close()
            raise
        except sqlite3.DatabaseError as exc:
            db.close()
            log.warning("store_index_corrupt", path=str(self.path), error=str(exc), action="rebuilding")
            return None
        if version == INDEX_SCHEMA:
            return db
        log.info("store_index_stale", path=str(self.path), schema=version, expected=INDEX_SCHEMA)
        db.close()
        return None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # the tree is the truth; the index can be rebuilt
        db.executescript(_DDL)
        self._create_indexes(db)
        if self.verify:
            (result,) = db.execute("PRAGMA quick_check(1)").fetchone()
            if result != "ok":
                db.close()
                raise sqlite3.DatabaseError(f"quick_check of {self.path}: {result}")
        return db

    def _create_indexes(self, db: sqlite3.Connection | None = None) -> None:
        for name, columns in SECONDARY_INDEXES.items():
            (db or self._db).execute(f"CREATE INDEX IF NOT EXISTS {name} ON {columns}")

    def defer_indexes(self, keep: Iterable[str] = ("calls_time", "calls_id")) -> None:
        """Drop the secondary indexes but `keep` while a first load fills an empty index in chunks.

        Maintaining all five as 100,000 rows arrive cost a background hydrate ~50 % more time;
        listings meanwhile use calls_time (newest first) and filter, a call's detail calls_id.
        `create_indexes` (also run on every open) puts them back.
        """
        with self._lock:
            for name in SECONDARY_INDEXES:
                if name not in keep:
                    self._db.execute(f"DROP INDEX IF EXISTS {name}")

    def create_indexes(self) -> None:
        with self._lock:
            self._create_indexes()

    @staticmethod
    def remove_files(path: Path) -> None:
        for suffix in ("", "-wal", "-shm"):
            with suppress(FileNotFoundError):
                path.with_name(path.name + suffix).unlink()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------ writes

    def upsert(self, rows: Sequence[Row]) -> None:
        with self._lock:
            self._upsert(rows)

    def try_upsert(self, rows: Sequence[Row]) -> bool:
        """`upsert` unless another thread is writing (a hydrate's chunk): then False and nothing written."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            self._upsert(rows)
        finally:
            self._lock.release()
        return True

    def _upsert(self, rows: Sequence[Row]) -> None:
        self._db.execute("BEGIN")
        try:
            # A bulk load (hydrate) is faster with the secondary indexes built once at the end.
            bulk = len(rows) >= BULK_ROWS
            if bulk:
                for name in SECONDARY_INDEXES:
                    self._db.execute(f"DROP INDEX IF EXISTS {name}")
            self._db.executemany(UPSERT, rows)
            if bulk:
                self._create_indexes()
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def delete(self, relpaths: Iterable[str]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM calls WHERE relpath = ?", ((r,) for r in relpaths))
            self._db.execute("COMMIT")

    def delete_days(self, days: Iterable[str]) -> None:
        """Forget every call of these day directories (`YYYY/MM/DD`)."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM calls WHERE day = ?", ((d,) for d in days))
            self._db.execute("COMMIT")

    # ------------------------------------------------------------ reads

    def known(self) -> dict[str, tuple[int, str]]:
        """relpath → (mtime_ns of metadata.json when indexed, status) of every indexed call."""
        with self._lock:
            rows = self._db.execute("SELECT relpath, mtime_ns, status FROM calls")
            return {r[0]: (r[1], r[2]) for r in rows}

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM calls").fetchone()[0])

    def get(self, call_id: str) -> tuple[str, dict[str, Any]] | None:
        """(relpath, metadata) of a call, newest if the id is somehow in two days."""
        with self._lock:
            row = self._db.execute(
                "SELECT relpath, metadata FROM calls WHERE call_id = ? ORDER BY started_at DESC LIMIT 1",
                (call_id,),
            ).fetchone()
        return None if row is None else (row[0], loads(row[1]))

    def query(
        self,
        *,
        status: str | None = None,
        agent: str | None = None,
        since: str | None = None,
        until: str | None = None,
        after: tuple[str, str] | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Metadata newest first (started_at, call_id), since ≤ started_at < until, after a cursor."""
        where: list[str] = []
        args: list[Any] = []
        for clause, value in (("status = ?", status), ("agent = ?", agent)):
            if value is not None:
                where.append(clause)
                args.append(value)
        if since is not None:
            where.append("started_at >= ?")
            args.append(since)
        if until is not None:
            where.append("started_at < ?")
            args.append(until)
        if after is not None:
            where.append("(started_at, call_id) < (?, ?)")
            args.extend(after)
        sql = "SELECT metadata FROM calls"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, call_id DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        # jsontext.loads: a row an older version indexed with a lone surrogate comes back cleaned.
        return [loads(r[0]) for r in rows]
