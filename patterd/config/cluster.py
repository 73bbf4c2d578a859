"""`cluster:` — the shared secret for call tokens and the Redis that holds a cluster's live state."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from patterd.redact import SECRET_MASK, redact_url

ENV_SECRET = "PATTERD_CLUSTER_SECRET"
_PREFIX = re.compile(r"^[A-Za-z0-9:._-]{1,64}$")


class ClusterConfig(BaseModel):
    """`cluster:` (all optional: without it one process works alone, with a random token secret)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret: SecretStr | None = Field(
        None,
        description="HMAC key of call tokens, the same on every replica; default $PATTERD_CLUSTER_SECRET",
    )
    redis: str | None = Field(None, description="redis://host:port/db: live calls, feed and control shared")
    replica_id: str | None = Field(
        None, min_length=1, max_length=128, description="this replica's name; default host name + pid"
    )
    key_prefix: str = Field("patterd:", description="prefix of every Redis key and channel")
    heartbeat_secs: float = Field(2.0, gt=0, le=60, description="how often a replica says it is alive")
    replica_timeout_secs: float = Field(
        10.0, gt=0, le=600, description="a replica silent this long is dead: its calls end failed"
    )

    @model_validator(mode="before")
    @classmethod
    def _env_secret(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, Mapping):
            return data
        context = info.context if isinstance(info.context, Mapping) else {}
        environ = context.get("environ")
        value = (environ if isinstance(environ, Mapping) else os.environ).get(ENV_SECRET, "").strip()
        return {**data, "secret": value} if "secret" not in data and value else data

    @field_validator("secret", mode="before")
    @classmethod
    def _secret(cls, value: Any) -> Any:
        if value == "":
            return None  # `${PATTERD_CLUSTER_SECRET:-}` means "none"
        if isinstance(value, str) and len(value.encode()) < 16:
            raise ValueError("must be at least 16 bytes (a random 32-byte string is good)")
        return value

    @field_validator("redis")
    @classmethod
    def _redis(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"must be a redis://, rediss:// or unix:// URL, got {redact_url(value)!r}")
        return value

    @field_validator("key_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _PREFIX.match(value):
            raise ValueError("letters, digits and : . _ - only, at most 64")
        return value

    def to_public_dict(self) -> dict[str, Any]:
        """As shown by `patterd check` and the API: the secret masked, the Redis URL without credentials."""
        return {
            "secret": SECRET_MASK if self.secret is not None else None,
            "redis": redact_url(self.redis) if self.redis else None,
            "replica_id": self.replica_id,
            "key_prefix": self.key_prefix,
            "heartbeat_secs": self.heartbeat_secs,
            "replica_timeout_secs": self.replica_timeout_secs,
        }
