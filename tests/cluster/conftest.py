"""The real Redis the cluster tests share (tests/services.py)."""

from tests.services import redis_prefix, redis_url

__all__ = ["redis_prefix", "redis_url"]
