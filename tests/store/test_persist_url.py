"""`persist: postgresql://…` in the config: parsed, password from the environment, never shown."""

from __future__ import annotations

import importlib.util
import json
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest

from patterd.config import load_config_text
from patterd.config.persist import DatabaseURL, is_database_url
from patterd.errors import ConfigError
from patterd.plugins import load_registry

BASE = """\
carrier: {{type: local}}
persist: {persist}
agents:
  - {{name: a, stt: {{type: offline}}, llm: {{type: script}}, tts: {{type: offline}}}}
"""


def load(persist: str, **environ: str) -> object:
    return load_config_text(BASE.format(persist=persist), load_registry(), environ={"HOME": "/h", **environ})


def test_a_postgresql_url_with_the_password_from_the_environment() -> None:
    config = load("postgresql://patterd:${PG_PASSWORD}@db.internal:5432/calls", PG_PASSWORD="s3cr3t-pw")
    persist = config.persist  # type: ignore[attr-defined]
    assert isinstance(persist, DatabaseURL)
    assert persist.url == "postgresql://patterd:s3cr3t-pw@db.internal:5432/calls"
    shown = json.dumps(config.to_public_dict())  # type: ignore[attr-defined]
    assert "s3cr3t-pw" not in shown and "s3cr3t-pw" not in repr(persist) and "s3cr3t-pw" not in str(persist)
    assert "db.internal:5432/calls" in shown


@pytest.mark.parametrize(
    "url", ["postgres://u@h/db", "POSTGRESQL://h/db", "postgresql://h:6432/db?sslmode=require"]
)
def test_both_schemes_are_database_urls(url: str) -> None:
    assert is_database_url(url)
    assert isinstance(load(url).persist, DatabaseURL)  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", ["/var/lib/patter", "records", "postgresql-records", "auto"])
def test_paths_stay_paths(path: str) -> None:
    assert not is_database_url(path)
    assert isinstance(load(path).persist, Path)  # type: ignore[attr-defined]


def test_an_unusable_url_is_a_config_error_without_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        load("postgresql://u:hunter2@/db")
    text = str(info.value)
    assert "names no host" in text and "hunter2" not in text


def test_without_the_driver_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> ModuleSpec | None:
        return None if name == "asyncpg" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ConfigError) as info:
        load("postgresql://u:hunter2@h/db")
    assert "pip install 'patterd[cluster]'" in str(info.value) and "hunter2" not in str(info.value)


def test_patterd_imports_without_asyncpg(tmp_path: Path) -> None:
    """The store package and the config import without the optional driver (it is imported lazily)."""
    import subprocess
    import sys

    blocker = tmp_path / "asyncpg"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('asyncpg is not installed here')\n")
    code = "import patterd.store, patterd.config; print('ok')"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": f"{tmp_path}:{Path(__file__).parents[2]}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.strip() == "ok", proc.stderr
