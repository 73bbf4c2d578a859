"""resolve_persist: the file's value, then $PATTER_LOG_DIR, then the platform default."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from patterd.config import resolve_persist
from patterd.config.persist import default_data_dir

ENV = {"HOME": "/home/t"}
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG paths are Linux's")


@linux_only
@pytest.mark.parametrize(
    ("value", "environ", "expected"),
    [
        (False, {"PATTER_LOG_DIR": "/env/dir"}, None),  # explicit false wins over the environment
        (True, {"PATTER_LOG_DIR": "/env/dir"}, "/home/t/.local/share/patter"),  # so does true
        ("~/records", {}, "/home/t/records"),
        ("/abs/records", {"PATTER_LOG_DIR": "/env/dir"}, "/abs/records"),
        ("auto", {}, "/home/t/.local/share/patter"),
        (None, {"PATTER_LOG_DIR": "/env/dir"}, "/env/dir"),
        (None, {"PATTER_LOG_DIR": "~/env"}, "/home/t/env"),
        (None, {"PATTER_LOG_DIR": "auto", "XDG_DATA_HOME": "/xdg"}, "/xdg/patter"),
        (None, {"XDG_DATA_HOME": "/xdg"}, "/xdg/patter"),
        (None, {"XDG_DATA_HOME": "relative/ignored"}, "/home/t/.local/share/patter"),
        (None, {}, "/home/t/.local/share/patter"),
        ("false", {}, None),  # `persist: ${PERSIST:-false}` arrives as a string
    ],
)
def test_resolve_persist(value: bool | str | None, environ: dict[str, str], expected: str | None) -> None:
    result = resolve_persist(value, {**ENV, **environ})
    assert result == (Path(expected) if expected else None)


def test_default_is_platformdirs_user_data_dir_elsewhere() -> None:
    path = default_data_dir(ENV)
    assert path.name == "patter" and path.is_absolute()
