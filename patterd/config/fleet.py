"""`dashboard:` — where this daemon reports its calls to one central patterd (one dashboard for a fleet)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from patterd.redact import SECRET_MASK, redact_url

_SOURCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._@-]{0,127}$")


class DashboardConfig(BaseModel):
    """`dashboard:` (all optional: without `notify_url` nothing is sent anywhere)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    notify_url: str | None = Field(
        None, description="http(s) URL of the central patterd that lists this daemon's calls"
    )
    notify_token: SecretStr | None = Field(
        None, description="the central's server.dashboard_token: HMAC key of every POST (never sent)"
    )
    source: str | None = Field(
        None, description="this daemon's name on the central dashboard; default host name"
    )
    notify_queue: int = Field(
        10_000, ge=1, le=1_000_000, description="call events held while the central is away; oldest dropped"
    )
    notify_retry_max_secs: float = Field(
        30.0, gt=0, le=600, description="the longest wait between retries while the central is away"
    )

    @field_validator("notify_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"must be an http:// or https:// URL, got {redact_url(value)!r}")
        return value.rstrip("/")

    @field_validator("notify_token", mode="before")
    @classmethod
    def _token(cls, value: Any) -> Any:
        return None if value == "" else value  # `${CENTRAL_TOKEN:-}` means "none"

    @field_validator("source")
    @classmethod
    def _source(cls, value: str | None) -> str | None:
        if value is not None and not _SOURCE.match(value):
            raise ValueError(
                "letters, digits and : . _ @ - only, at most 128, starting with a letter or digit"
            )
        return value

    def to_public_dict(self) -> dict[str, Any]:
        """As shown by `patterd check` and the API: the token masked, the URL without credentials."""
        return {
            "notify_url": redact_url(self.notify_url) if self.notify_url else None,
            "notify_token": SECRET_MASK if self.notify_token is not None else None,
            "source": self.source,
            "notify_queue": self.notify_queue,
            "notify_retry_max_secs": self.notify_retry_max_secs,
        }
