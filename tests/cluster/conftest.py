"""The real Redis (and PostgreSQL) the cluster tests share (tests/services.py)."""

from tests.services import postgres_url, redis_prefix, redis_url

__all__ = ["postgres_url", "redis_prefix", "redis_url"]
