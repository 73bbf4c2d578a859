"""The PostgreSQL schema of call records (versioned, created idempotently) and the SQL that reads it.

Same content as the files (contracts §4): `calls.metadata` is metadata.json, `transcript_lines`
and `call_events` hold transcript.jsonl and events.jsonl, one row per line in write order (`seq`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from patterd.protocols.jsontext import clean_text
from patterd.store.memory import Query

SCHEMA_VERSION = 1
# Several daemons may start together against an empty database: DDL runs under this advisory lock.
SCHEMA_LOCK = 0x7061_7474_6572  # "patter"

DDL = """
CREATE TABLE IF NOT EXISTS patterd_schema (
    key text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE IF NOT EXISTS calls (
    -- "C": call ids order bytewise, like the file store's index and the listing cursors
    call_id text COLLATE "C" PRIMARY KEY,
    started_at timestamptz NOT NULL,
    ended_at timestamptz,
    status text NOT NULL,
    agent text NOT NULL,
    caller text NOT NULL,
    callee text NOT NULL,
    direction text NOT NULL,
    metadata jsonb NOT NULL,            -- metadata.json
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS calls_time ON calls (started_at, call_id);
CREATE INDEX IF NOT EXISTS calls_status ON calls (status, started_at, call_id);
CREATE INDEX IF NOT EXISTS calls_agent ON calls (agent, started_at, call_id);
CREATE TABLE IF NOT EXISTS transcript_lines (
    call_id text COLLATE "C" NOT NULL REFERENCES calls ON DELETE CASCADE,
    seq integer NOT NULL,               -- 0, 1, 2 … in write order
    line jsonb NOT NULL,                -- one transcript.jsonl object
    PRIMARY KEY (call_id, seq)
);
CREATE TABLE IF NOT EXISTS call_events (
    call_id text COLLATE "C" NOT NULL REFERENCES calls ON DELETE CASCADE,
    seq integer NOT NULL,
    event jsonb NOT NULL,               -- one events.jsonl object
    PRIMARY KEY (call_id, seq)
);
"""

UPSERT_CALL = """
INSERT INTO calls (call_id, started_at, ended_at, status, agent, caller, callee, direction, metadata)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)
ON CONFLICT (call_id) DO UPDATE SET
    started_at = EXCLUDED.started_at, ended_at = EXCLUDED.ended_at, status = EXCLUDED.status,
    agent = EXCLUDED.agent, caller = EXCLUDED.caller, callee = EXCLUDED.callee,
    direction = EXCLUDED.direction, metadata = EXCLUDED.metadata, updated_at = now()
"""
# ON CONFLICT: a batch retried after a commit whose outcome was lost must not fail or duplicate.
INSERT_LINE = {
    "transcript_lines": "INSERT INTO transcript_lines (call_id, seq, line) VALUES ($1, $2, $3::jsonb) "
    "ON CONFLICT DO NOTHING",
    "call_events": "INSERT INTO call_events (call_id, seq, event) VALUES ($1, $2, $3::jsonb) "
    "ON CONFLICT DO NOTHING",
}
# The next line number of each of some calls (absent: none stored yet, so 0).
NEXT_SEQ = {
    "transcript_lines": "SELECT call_id, max(seq) + 1 FROM transcript_lines WHERE call_id = ANY($1::text[]) "
    "GROUP BY call_id",
    "call_events": "SELECT call_id, max(seq) + 1 FROM call_events WHERE call_id = ANY($1::text[]) "
    "GROUP BY call_id",
}
# One round trip for a call's detail: metadata, transcript and events.
GET_CALL = """
SELECT c.metadata::text,
    (SELECT coalesce(json_agg(t.line ORDER BY t.seq), '[]'::json)::text
     FROM transcript_lines t WHERE t.call_id = c.call_id),
    (SELECT coalesce(json_agg(e.event ORDER BY e.seq), '[]'::json)::text
     FROM call_events e WHERE e.call_id = c.call_id)
FROM calls c WHERE c.call_id = $1
"""
COUNT = "SELECT count(*) FROM calls"
# Closes a record its daemon left open, unless its daemon closed it meanwhile.
CLOSE_OPEN = """
UPDATE calls SET ended_at = $2, status = $3, metadata = $4::jsonb, updated_at = now()
WHERE call_id = $1 AND status = ANY($5::text[])
"""
DELETE_OLDER = "DELETE FROM calls WHERE started_at < $1 AND NOT (call_id = ANY($2::text[]))"


def parse_ts(text: str) -> datetime:
    """An ISO-8601 time as the records write it (`…Z`); ValueError otherwise."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _no_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\0", "\ufffd")
    if isinstance(value, dict):
        return {_no_nul(k): _no_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nul(v) for v in value]
    return value


def jsonb_text(obj: Any) -> str:
    """`obj` as JSON text PostgreSQL's jsonb accepts: it refuses \\u0000, the files keep it (U+FFFD here)."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)
    if "\\u0000" in text:
        text = json.dumps(_no_nul(obj), ensure_ascii=False, separators=(",", ":"), default=str)
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate: the same U+FFFD the files get (records.json_line)
        text = clean_text(text)
    return text


def call_row(metadata: dict[str, Any]) -> tuple[Any, ...]:
    """The `calls` row of one metadata.json (UPSERT_CALL's arguments)."""
    agent = metadata.get("agent")
    ended = metadata.get("ended_at")
    return (
        str(metadata["call_id"]),
        parse_ts(str(metadata["started_at"])),
        parse_ts(ended) if isinstance(ended, str) else None,
        str(metadata.get("status", "")),
        str((agent.get("name") if isinstance(agent, dict) else "") or ""),
        str(metadata.get("caller") or ""),
        str(metadata.get("callee") or ""),
        str(metadata.get("direction") or ""),
        jsonb_text(metadata),
    )


def list_sql(query: Query) -> tuple[str, list[Any]]:
    """SELECT of one listing page: newest first, since ≤ started_at < until, after the cursor."""
    where: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if query.status is not None:
        where.append(f"status = {arg(query.status)}")
    if query.agent is not None:
        where.append(f"agent = {arg(query.agent)}")
    if query.since is not None:
        where.append(f"started_at >= {arg(parse_ts(query.since))}")
    if query.until is not None:
        where.append(f"started_at < {arg(parse_ts(query.until))}")
    if query.after is not None:
        try:
            after = parse_ts(query.after[0])
        except ValueError:
            raise ValueError("cursor is not a cursor returned by a call listing") from None
        where.append(f"(started_at, call_id) < ({arg(after)}, {arg(query.after[1])})")
    sql = "SELECT metadata::text FROM calls"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY started_at DESC, call_id DESC LIMIT {arg(query.limit)}"
    return sql, args
