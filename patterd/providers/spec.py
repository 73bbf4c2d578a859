"""What a provider plugin exports: a ProviderSpec naming its kind, options model and builder."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr

from patterd.clock import SYSTEM_CLOCK, Clock
from patterd.providers.carrier_spec import CarrierFacts as CarrierFacts  # re-exported for carrier specs

KINDS = ("carrier", "engine", "stt", "tts", "llm", "vad", "tunnel")


class ProviderOptions(BaseModel):
    """Base of every provider's options: strict (unknown keys are errors), frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# The environment provider options see while a config is validated: os.environ plus the config's
# `.env` (the loader sets it); a context variable, so concurrent loads never see each other's values.
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("patterd_environ", default=None)


@contextmanager
def validation_environ(environ: Mapping[str, str]) -> Iterator[None]:
    """Let env-var defaults read `environ` instead of os.environ, in this context only."""
    token = _ENVIRON.set(environ)
    try:
        yield
    finally:
        _ENVIRON.reset(token)


def getenv(name: str) -> str | None:
    """A variable from the validation environment (see `validation_environ`), else os.environ."""
    environ = _ENVIRON.get()
    return (environ if environ is not None else os.environ).get(name)


def env_secret(name: str) -> Callable[[], SecretStr | None]:
    """A default factory reading a credential from the environment at validation time."""

    def factory() -> SecretStr | None:
        value = getenv(name)
        return SecretStr(value) if value else None

    return factory


def env_str(name: str, default: str | None = None) -> Callable[[], str | None]:
    """A default factory reading a plain setting from the environment at validation time."""

    def factory() -> str | None:
        return getenv(name) or default

    return factory


def missing_credentials(what: str, keys: Sequence[tuple[str, str, object]]) -> str | None:
    """Why `what` cannot run without some of `keys` ((option, environment variable, value) each), or None.

    `Twilio carrier requires account_sid and auth_token; missing auth_token: set auth_token in the
    config or TWILIO_AUTH_TOKEN in the environment` — naming only what is missing, and where to put it.
    """
    missing = [(key, var) for key, var, value in keys if not _present(value)]
    if not missing:
        return None
    names = " and ".join(key for key, _ in missing)
    variables = " and ".join(var for _, var in missing)
    return (
        f"{what} requires {' and '.join(key for key, _, _ in keys)}; missing {names}: "
        f"set {names} in the config or {variables} in the environment"
    )


def _present(value: object) -> bool:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return value is not None and (not isinstance(value, str) or bool(value.strip()))


@dataclass(frozen=True)
class Capabilities:
    """What a provider can do, for the graph and for `patterd providers`."""

    streaming: bool = True
    tools: bool = False
    interim_results: bool = False
    needs_network: bool = True
    sample_rates: tuple[int, ...] = ()
    notes: str = ""


@dataclass(frozen=True)
class BuildContext:
    """What a provider may use while it is built and running."""

    public_host: str | None = None  # webhook_url host[:port], no scheme
    public_scheme: str = "https"  # "http" only for explicit local setups
    clock: Clock = SYSTEM_CLOCK
    state_dir: Path | None = None  # where the provider may cache files
    phone_number: str | None = None
    config_dir: Path | None = None  # the directory holding patter.yaml, for relative paths
    # server.media_idle_timeout_secs: a carrier media socket with no frame at all for this long is dead (0: never)
    media_idle_timeout_secs: float = 30.0
    extra: dict[str, Any] = field(default_factory=dict)

    def public_url(self, path: str, *, websocket: bool = False) -> str:
        """Absolute public URL of `path` as carriers reach it."""
        if not self.public_host:
            raise ValueError("webhook_url is not configured")
        scheme = self.public_scheme
        if websocket:
            scheme = "wss" if scheme == "https" else "ws"
        return f"{scheme}://{self.public_host}{path}"


Builder = Callable[[Any, BuildContext], AbstractAsyncContextManager[Any]]
Checker = Callable[[Any], Awaitable[None]]


@dataclass(frozen=True)
class ProviderSpec:
    """One provider: `kind.name`, its options model, how to build it, and how to probe it."""

    kind: str
    name: str
    options: type[ProviderOptions]
    build: Builder  # options, ctx → async context manager yielding the live provider
    summary: str
    check: Checker | None = None  # probes credentials/reachability of a built provider; raises ProviderError
    capabilities: Capabilities = Capabilities()
    carrier: CarrierFacts | None = None  # kind "carrier" only: its routes, config needs, billing, access

    @property
    def key(self) -> str:
        return f"{self.kind}.{self.name}"
