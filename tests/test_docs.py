"""Every config key, built-in provider, HTTP route and CLI command is documented (and generated docs are current)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from starlette.routing import Route, WebSocketRoute

from patterd.config.cluster import ClusterConfig
from patterd.config.fleet import DashboardConfig
from patterd.config.load import FILE_KEYS
from patterd.config.model import (
    AgentConfig,
    EndCallTool,
    LoggingConfig,
    ServerConfig,
    TransferCallTool,
    WebhookTool,
)
from patterd.plugins import load_registry

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DOC = (ROOT / "docs" / "configuration.md").read_text()
OPERATIONS_DOC = (ROOT / "docs" / "operations.md").read_text()
README = (ROOT / "README.md").read_text()


def _documented(key: str, text: str) -> bool:
    return re.search(rf"`{re.escape(key)}`", text) is not None


@pytest.mark.parametrize("key", FILE_KEYS)
def test_top_level_keys(key: str) -> None:
    assert _documented(key, CONFIG_DOC), f"docs/configuration.md does not document `{key}`"


@pytest.mark.parametrize(
    "model",
    [
        ServerConfig,
        LoggingConfig,
        ClusterConfig,
        DashboardConfig,
        AgentConfig,
        TransferCallTool,
        EndCallTool,
        WebhookTool,
    ],
    ids=lambda m: m.__name__,
)
def test_section_keys(model: type) -> None:
    missing = [name for name in model.model_fields if name != "type" and not _documented(name, CONFIG_DOC)]  # type: ignore[attr-defined]
    assert not missing, f"docs/configuration.md lacks {model.__name__} keys: {missing}"


def test_provider_reference_is_current() -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import provider_docs  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(ROOT / "tools"))
    current = (ROOT / "docs" / "providers.md").read_text()
    assert current == provider_docs.render(), "docs/providers.md is stale: run python tools/provider_docs.py"


@pytest.mark.parametrize("key", [s.spec.key for s in load_registry()])
def test_every_provider_in_readme_or_docs(key: str) -> None:
    assert f"`{key}`" in (ROOT / "docs" / "providers.md").read_text()


def test_every_route_documented() -> None:
    from tests.web.fake_runtime import make_app

    app = make_app()
    for route in app.routes:
        if isinstance(route, Route | WebSocketRoute) and not route.path.startswith(
            ("/static", "/dashboard", "/login", "/logout", "/calls", "/phone")
        ):
            assert f"`{route.path}`" in OPERATIONS_DOC or route.path == "/", (
                f"docs/operations.md lacks {route.path}"
            )


@pytest.mark.parametrize("command", ["run", "check", "providers", "schema", "simulate", "version"])
def test_every_command_documented(command: str) -> None:
    assert f"patterd {command}" in OPERATIONS_DOC


def test_readme_has_the_two_newcomer_commands() -> None:
    assert "patterd --config config/patter.yaml" in README
    assert "python -m pytest" in README
