"""`server:` and `logging:` sections of `patter.yaml`, with their environment-variable defaults."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from patterd.config.section import Section

LEVELS = ("debug", "info", "warning", "error", "critical")


def _environ(info: ValidationInfo) -> Mapping[str, str]:
    """The environment the loader validates against (tests pass their own), else os.environ."""
    context = info.context if isinstance(info.context, Mapping) else {}
    environ = context.get("environ")
    return environ if isinstance(environ, Mapping) else os.environ


def _env_defaults(model: type[BaseModel], data: Any, info: ValidationInfo) -> Any:
    """`data` plus the model's ENV_DEFAULTS for keys the file leaves out and the environment sets."""
    if not isinstance(data, Mapping):
        return data
    environ = _environ(info)
    out = dict(data)
    for key, var in getattr(model, "ENV_DEFAULTS", {}).items():
        value = environ.get(var, "").strip()
        if key not in out and value:
            out[key] = value
    return out


_HOST_NAME = re.compile(
    r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def _bind_host(value: object) -> object:
    """An IP address or a host name to listen on; a port, scheme or path here would only fail at start."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        if not _HOST_NAME.match(text):
            raise ValueError(
                "must be an IP address or host name to listen on, without a port "
                f"(like 127.0.0.1, 0.0.0.0 or ::), got {value!r}"
            ) from None
    return text


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class ServerConfig(Section):
    """`server:` — where the one HTTP port listens and who may use the dashboard."""

    ENV_DEFAULTS: ClassVar[dict[str, str]] = {"host": "PATTER_BIND_HOST"}  # key → variable it defaults to

    host: Annotated[str, BeforeValidator(_bind_host)] = Field(
        "127.0.0.1", min_length=1, description="bind address; default $PATTER_BIND_HOST"
    )
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 picks a free port)")
    dashboard: bool = True
    dashboard_token: SecretStr | None = Field(None, description="required when host is not loopback")
    drain_timeout_secs: float = Field(30, ge=0)
    max_calls: int = Field(
        500, ge=0, description="live calls at most; more are refused the carrier's way (0: no limit)"
    )
    media_idle_timeout_secs: float = Field(
        30, ge=0, description="a carrier media socket silent this long ends its call as failed (0: never)"
    )
    workers: Annotated[int, Field(ge=1, le=256)] | Literal["auto"] = Field(
        1, description="worker processes serving the one port under a supervisor; auto: one per core"
    )

    @model_validator(mode="before")
    @classmethod
    def _env_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        return _env_defaults(cls, data, info)

    @field_validator("dashboard_token", mode="before")
    @classmethod
    def _empty_token(cls, value: Any) -> Any:
        return None if value == "" else value  # `${PATTERD_TOKEN:-}` means "no token"

    @property
    def worker_count(self) -> int:
        """`workers` resolved: `auto` is the number of cores this process may run on."""
        if self.workers == "auto":
            # the cores this process may use (a container's cpuset), not every core of the host
            usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else ()
            return max(1, len(usable) or os.cpu_count() or 1)
        return self.workers

    @property
    def needs_token(self) -> bool:
        """A dashboard reachable beyond this machine must be protected."""
        return self.dashboard and not is_loopback(self.host)


class LoggingConfig(Section):
    """`logging:` — verbosity, phone-number redaction, record retention."""

    level: Annotated[
        Literal["debug", "info", "warning", "error", "critical"],
        WithJsonSchema({"enum": [*LEVELS, *(level.upper() for level in LEVELS)]}),
    ] = "info"
    redact_phone: Literal["full", "mask", "hash_only"] = Field(
        "full", description="default $PATTER_LOG_REDACT_PHONE"
    )
    retention_days: int = Field(30, ge=0, description="0 keeps forever; default $PATTER_LOG_RETENTION_DAYS")

    ENV_DEFAULTS: ClassVar[dict[str, str]] = {
        "redact_phone": "PATTER_LOG_REDACT_PHONE",
        "retention_days": "PATTER_LOG_RETENTION_DAYS",
    }

    @model_validator(mode="before")
    @classmethod
    def _env_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        return _env_defaults(cls, data, info)

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value
