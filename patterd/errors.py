"""The exception tree of patterd.

::

    PatterdError
     ├── ConfigError(issues)        the config file is wrong; every issue at once
     ├── PluginError                a provider plugin could not be loaded
     ├── ProviderError(retryable)   a provider failed at run time
     │    ├── ProviderAuthError          credentials refused (never retryable)
     │    ├── ProviderRateLimitError     slow down (retryable)
     │    ├── ProviderConnectionError    network trouble (retryable)
     │    └── ProviderProtocolError      the peer spoke something we cannot read
     └── CallError                  one call cannot proceed (unknown id, wrong state)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class PatterdError(Exception):
    """Base of every error patterd raises on purpose."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file: where it is and what is wrong."""

    path: str  # dotted path with list indices, e.g. "agents[1].tts.voice_idd"
    message: str
    line: int | None = None  # 1-based line in the YAML file, when known

    def __str__(self) -> str:
        where = self.path or "(root)"
        if self.line is not None:
            where = f"{where} (line {self.line})"
        return f"{where}: {self.message}"


class ConfigError(PatterdError):
    """The configuration is invalid; carries every issue found, not just the first."""

    def __init__(self, issues: Sequence[ConfigIssue], source: str | None = None) -> None:
        self.issues = list(issues)
        self.source = source
        head = f"{source}: " if source else ""
        super().__init__(
            head + f"{len(self.issues)} config error(s)\n" + "\n".join(str(i) for i in self.issues)
        )


class PluginError(PatterdError):
    """A provider plugin is broken: import failure, wrong object, duplicate name."""


class ProviderError(PatterdError):
    """A provider failed; `retryable` says whether trying again may help."""

    retryable: bool = False

    def __init__(self, message: str, *, provider: str = "", retryable: bool | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        if retryable is not None:
            self.retryable = retryable


class ProviderAuthError(ProviderError):
    """The provider refused our credentials."""

    retryable = False


class ProviderRateLimitError(ProviderError):
    """The provider asked us to slow down."""

    retryable = True


class ProviderConnectionError(ProviderError):
    """The provider could not be reached or dropped the connection."""

    retryable = True


class ProviderProtocolError(ProviderError):
    """The provider sent something that does not follow its protocol."""

    retryable = False


class CallError(PatterdError):
    """A call-level operation is not possible (unknown call, wrong state)."""


def error_for_status(status: int, message: str, *, provider: str, auth_hint: str = "") -> ProviderError:
    """The ProviderError for a vendor's HTTP error status: auth, rate limit, server trouble, or a plain refusal."""
    if status in (401, 403):
        return ProviderAuthError(f"{message} ({auth_hint})" if auth_hint else message, provider=provider)
    if status == 429:
        return ProviderRateLimitError(message, provider=provider)
    if status >= 500 or status == 408:
        return ProviderConnectionError(message, provider=provider)
    return ProviderError(message, provider=provider)
