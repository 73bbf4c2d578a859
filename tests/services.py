"""The real Redis and PostgreSQL servers tests use (started by tools/test_services.sh), one namespace per test.

When a server does not answer, a test is skipped locally but fails under CI (env CI set): CI must
never silently skip them.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

REDIS_URL = os.environ.get("PATTERD_TEST_REDIS_URL", "redis://127.0.0.1:6379")
POSTGRES_URL = os.environ.get(
    "PATTERD_TEST_POSTGRES_URL", "postgresql://patterd:patterd@127.0.0.1:5432/patterd_test"
)


def unavailable(what: str) -> None:
    """Skip (locally) or fail (CI) a test whose server is not running."""
    message = f"{what} is not running (start it with: bash tools/test_services.sh)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), 2.0):
            return True
    except OSError:
        return False


def with_database(url: str, name: str) -> str:
    """`url` pointing at database `name` instead."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL of a new, empty PostgreSQL database of this test's own, dropped after it."""
    if not _answers(POSTGRES_URL, 5432):
        unavailable(f"PostgreSQL at {urlsplit(POSTGRES_URL).netloc.rpartition('@')[2]}")
    name = "patterd_t_" + secrets.token_hex(6)
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(POSTGRES_URL, name)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def redis_url() -> str:
    """The test Redis URL (use a random key prefix per test: `redis_prefix`)."""
    if not _answers(REDIS_URL, 6379):
        unavailable(f"Redis at {urlsplit(REDIS_URL).netloc.rpartition('@')[2]}")
    return REDIS_URL


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix no other test uses."""
    return "patterd-test-" + secrets.token_hex(6) + ":"
