"""Decides where call records go: the `persist` key, then `$PATTER_LOG_DIR`, then the platform default."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import platformdirs

APP_NAME = "patter"


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
