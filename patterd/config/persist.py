"""Where call records go: the `persist` key (a directory or a database URL), `$PATTER_LOG_DIR`, the default."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import platformdirs

from patterd.redact import redact_url

APP_NAME = "patter"
DATABASE_SCHEMES = ("postgresql", "postgres")
MISSING_DRIVER = "needs pip install 'patterd[cluster]' (the asyncpg driver is not installed)"


@dataclass(frozen=True)
class DatabaseURL:
    """`persist: postgresql://…`: records in PostgreSQL. str() and repr() never show the password."""

    url: str = field(repr=False)

    def __str__(self) -> str:
        return redact_url(self.url)

    def __repr__(self) -> str:
        return f"DatabaseURL({redact_url(self.url)!r})"


def is_database_url(text: str) -> bool:
    """True for a `postgresql://` or `postgres://` URL (any case of the scheme)."""
    scheme, sep, _ = text.strip().partition("://")
    return bool(sep) and scheme.lower() in DATABASE_SCHEMES


def parse_database_url(text: str) -> DatabaseURL:
    """A checked database URL; ValueError (without the password) when unusable or the driver is missing."""
    text = text.strip()
    shown = redact_url(text)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{shown!r} is not a valid PostgreSQL URL: {exc}") from None
    if not parts.hostname and "host=" not in parts.query:
        raise ValueError(f"{shown!r} names no host; expected postgresql://user:password@host:5432/dbname")
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"{shown!r} has port {port}; expected 1 to 65535")
    if importlib.util.find_spec("asyncpg") is None:
        raise ValueError(f"{shown} {MISSING_DRIVER}")
    return DatabaseURL(text)


def default_data_dir(environ: Mapping[str, str]) -> Path:
    """`platformdirs.user_data_dir("patter")`; on Linux `$XDG_DATA_HOME` is read from `environ`."""
    if sys.platform.startswith("linux"):
        # platformdirs reads os.environ; honour the environment we were given instead
        xdg = environ.get("XDG_DATA_HOME", "").strip()
        base = (
            Path(xdg) if xdg and Path(xdg).is_absolute() else Path(environ.get("HOME", "~")) / ".local/share"
        )
        return _expand_home(str(base / APP_NAME), environ)
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def resolve_persist(value: bool | str | None, environ: Mapping[str, str]) -> Path | None:
    """Where records go, or None when persistence is off.

    explicit `false` → None; `true` or "auto" → platform default; a path → that path (~ expanded);
    omitted (None) → `$PATTER_LOG_DIR` ("auto" → platform default, else a path), else platform default.
    """
    if value is False:
        return None
    if value is True:
        return default_data_dir(environ)
    if value is None:
        value = environ.get("PATTER_LOG_DIR", "").strip() or "auto"
    text = value.strip()
    if text.lower() in ("", "auto", "true"):
        return default_data_dir(environ)
    if text.lower() == "false":
        return None
    return _expand_home(text, environ)


def _expand_home(text: str, environ: Mapping[str, str]) -> Path:
    """`~/x` → `$HOME/x`, with HOME from `environ` when it has one."""
    home = environ.get("HOME")
    if home and (text == "~" or text.startswith("~/")):
        return Path(home + text[1:])
    return Path(text).expanduser()
