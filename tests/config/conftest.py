"""Keeps the developer's own credentials and PATTER_* settings out of config tests."""

from __future__ import annotations

import os

import pytest

from tests.config.specs import CREDENTIAL_VARS


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name in CREDENTIAL_VARS or name.startswith(("PATTER_", "PATTERD_")) or name == "XDG_DATA_HOME":
            monkeypatch.delenv(name)
