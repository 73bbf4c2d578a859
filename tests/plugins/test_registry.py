"""Plugin discovery: a third-party distribution's provider is used from YAML; broken plugins are reported clearly."""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Iterator
from importlib.metadata import EntryPoint, distributions
from pathlib import Path

import pytest

from patterd.config import load_config_text
from patterd.errors import PluginError
from patterd.plugins import ENTRY_POINT_GROUP, load_registry
from patterd.plugins.registry import Registry
from tests.plugins.sample_site import install_sample

SAMPLE = Path(__file__).parent / "sample_plugin"


@pytest.fixture
def sample_on_path(tmp_path: Path) -> Iterator[Path]:
    """Make the sample distribution importable and discoverable, as `pip install` would (a .dist-info on sys.path)."""
    site = install_sample(tmp_path / "site")
    sys.path.insert(0, str(site))
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        for module in [m for m in sys.modules if m == "patterd_sample" or m.startswith("patterd_sample.")]:
            sys.modules.pop(module)


def test_builtins_are_registered_through_entry_points() -> None:
    registry = load_registry()
    assert not registry.broken, registry.broken
    for key in (
        "carrier.twilio",
        "carrier.telnyx",
        "carrier.local",
        "engine.openai_realtime",
        "llm.openai",
        "llm.script",
        "stt.offline",
        "tts.offline",
        "vad.offline",
        "tunnel.cloudflared",
        "tunnel.static",
    ):
        assert key in registry.specs
        assert registry.specs[key].distribution == "patterd"


def test_third_party_plugin_is_used_from_yaml(sample_on_path: Path) -> None:
    assert any(d.metadata["Name"] == "patterd-sample-plugin" for d in distributions())
    registry = load_registry()
    assert registry.specs["llm.echo"].distribution == "patterd-sample-plugin"
    config = load_config_text(
        "carrier: {type: local}\nagents:\n  - name: a\n    stt: {type: offline}\n"
        "    llm: {type: echo, prefix: 'Echo:'}\n    tts: {type: offline}\n",
        registry,
    )
    assert config.agents[0].llm is not None
    assert config.agents[0].llm.options.prefix == "Echo:"  # type: ignore[attr-defined]


def test_third_party_carrier_is_registered_with_its_facts(sample_on_path: Path) -> None:
    """carrier.sample (run end to end by tests/carriers/test_sample.py) reaches core only through its spec."""
    spec = load_registry().specs["carrier.sample"]
    assert spec.distribution == "patterd-sample-plugin"
    facts = spec.spec.carrier
    assert facts is not None and facts.media_path == "/ws/sample/{call_id}"
    assert (
        facts.webhook_route("sample") == "/webhooks/sample/{hook}" and facts.prices["inbound_per_minute"] > 0
    )


async def test_third_party_plugin_runs(sample_on_path: Path) -> None:
    from patterd.providers.kinds import Message, TextDelta
    from patterd.providers.spec import BuildContext

    spec = load_registry().get("llm", "echo")
    async with spec.build(spec.options(), BuildContext()) as llm:
        words = [
            c.text
            async for c in llm.complete([Message("user", "hello there")], [])
            if isinstance(c, TextDelta)
        ]
    assert "".join(words).strip() == "You said: hello there"


def _ep(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


def test_broken_plugins_are_reported_not_raised(sample_on_path: Path) -> None:
    registry = load_registry(
        [
            _ep("llm.missing", "patterd_no_such_module:SPEC"),
            _ep("llm.notaspec", "patterd_sample:NOT_A_SPEC"),
            _ep("llm.wrongname", "patterd_sample:WRONG_NAME"),
            _ep("llm.echo", "patterd_sample:SPEC"),
        ]
    )
    assert "llm.echo" in registry.specs
    assert "ModuleNotFoundError" in registry.broken["llm.missing"]
    assert "not a ProviderSpec" in registry.broken["llm.notaspec"]
    assert "declares itself as 'llm.other'" in registry.broken["llm.wrongname"]
    with pytest.raises(PluginError, match="installed but broken"):
        registry.get("llm", "missing")


def test_duplicate_provider_is_an_error(sample_on_path: Path) -> None:
    from patterd_sample import SPEC  # type: ignore[import-not-found]

    registry = Registry()
    registry.add(SPEC, "one")
    with pytest.raises(PluginError, match="provided twice"):
        registry.add(SPEC, "two")


def test_unknown_name_did_you_mean() -> None:
    registry = load_registry()
    with pytest.raises(PluginError, match="did you mean 'openai'"):
        registry.get("llm", "opnai")


def test_providers_command_lists_plugins(sample_on_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from patterd.cli import main

    assert main(["providers", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    rows = {r["provider"]: r for r in listing["providers"]}
    assert rows["llm.echo"]["distribution"] == "patterd-sample-plugin"
    assert rows["carrier.twilio"]["summary"]


def test_a_lookup_of_a_provider_being_imported_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The warm-up thread and the event loop may look up the same carrier first at the same time.
    gate = types.ModuleType("_registry_gate")
    gate.entered, gate.release = threading.Event(), threading.Event()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "_registry_gate", gate)
    (tmp_path / "slow_carrier.py").write_text(
        "import _registry_gate as gate\n"
        "gate.entered.set()\n"
        "gate.release.wait(30)\n"
        "from patterd.providers.local import SPEC\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry()
    registry.defer(_ep("carrier.local", "slow_carrier:SPEC"), "test")
    found: list[object] = []
    first = threading.Thread(target=lambda: found.append(registry.find("carrier", "local")))
    first.start()
    assert gate.entered.wait(30)  # type: ignore[attr-defined]  # the first lookup is importing it
    second = threading.Thread(target=lambda: found.append(registry.find("carrier", "local")))
    second.start()
    gate.release.set()  # type: ignore[attr-defined]
    first.join(30)
    second.join(30)
    assert len(found) == 2 and all(spec is not None and spec.key == "carrier.local" for spec in found)  # type: ignore[attr-defined]
