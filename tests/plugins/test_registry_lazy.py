"""The registry imports a provider's module only when that provider is asked for (start-up cost, issue 14)."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest

from patterd.errors import PluginError
from patterd.plugins import ENTRY_POINT_GROUP, load_registry

# Run in a fresh interpreter: this test process has imported every provider already.
PROBE = """
import json, sys
from patterd.plugins import load_registry
def providers():
    return sorted(m for m in sys.modules if m.startswith("patterd.providers.") and m.count(".") == 2)
steps = {}
registry = load_registry()
steps["listed"] = providers()
registry.get("tts", "offline")
steps["tts.offline"] = providers()
steps["default"] = registry.default_carrier()
steps["default carrier"] = providers()
steps["pending carriers"] = registry.pending_modules("carrier")
carriers = [s.spec.name for s in registry.of_kind("carrier")]
steps["carriers"] = providers()
steps["carrier names"] = carriers
print(json.dumps(steps))
"""


def test_modules_are_imported_on_first_lookup_only() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    steps = json.loads(out.stdout)
    base = {"patterd.providers.spec", "patterd.providers.carrier_spec", "patterd.providers.kinds"}
    assert set(steps["listed"]) <= base  # nothing but the spec types before a lookup
    assert "patterd.providers.offline_tts" in steps["tts.offline"]
    # The default carrier is found importing carriers in name order up to it: `local` sorts first.
    assert steps["default"] == "local"
    assert "patterd.providers.local" in steps["default carrier"]
    assert "patterd.providers.twilio" in steps["pending carriers"]
    assert "patterd.providers.local" not in steps["pending carriers"]
    assert not set(steps["pending carriers"]) & set(steps["default carrier"])  # the others: not imported
    assert "patterd.providers.openai_llm" not in steps["carriers"]  # carriers only, never other kinds
    assert "patterd.providers.openai_tts" not in steps["carriers"]
    assert "patterd.providers.local" in steps["carriers"] and "local" in steps["carrier names"]


def _ep(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


def test_a_broken_plugin_is_reported_when_asked_for_and_not_listed() -> None:
    registry = load_registry(
        [_ep("tts.offline", "patterd.providers.offline_tts:SPEC"), _ep("tts.gone", "no_mod:S")]
    )
    assert registry.names("tts") == ["offline"]  # the broken one is not offered as a choice
    with pytest.raises(PluginError, match=r"installed but broken: tts\.gone: cannot import no_mod:S"):
        registry.get("tts", "gone")
    with pytest.raises(PluginError, match="unknown tts type 'ofline'; did you mean 'offline'"):
        registry.get("tts", "ofline")
    assert set(registry.broken) == {"tts.gone"} and set(registry.specs) == {"tts.offline"}


def test_a_second_provider_of_one_name_is_reported_as_broken() -> None:
    value = "patterd.providers.offline_tts:SPEC"
    registry = load_registry(
        [_ep("tts.offline", value), _ep("tts.offline", "patterd.providers.offline_tts:SPEC ")]
    )
    assert registry.get("tts", "offline").key == "tts.offline"  # the first one found wins
    assert "provided twice" in registry.broken["tts.offline"]


def test_the_default_carrier_is_the_first_by_name_that_says_so_and_a_view_keeps_only_named_carriers() -> None:
    # Third-party carriers sorting before `local`: one without facts.default, one broken; both are passed over.
    registry = load_registry(
        [
            _ep("carrier.twilio", "patterd.providers.twilio:SPEC"),
            _ep("carrier.local", "patterd.providers.local:SPEC"),
            _ep("carrier.aaa", "no_mod:SPEC"),
            _ep("carrier.bbb", "patterd.providers.telnyx:SPEC"),  # declares itself carrier.telnyx: broken
            _ep("tts.offline", "patterd.providers.offline_tts:SPEC"),
        ]
    )
    assert registry.default_carrier() == "local"
    assert registry.pending_modules("carrier") == ["patterd.providers.twilio"]  # after `local`: not imported
    view = registry.only_carriers(["local"])
    assert view.names("carrier") == ["local"] and view.names("tts") == ["offline"]
    assert registry.names("carrier") == ["local", "twilio"]  # the registry itself still has every carrier
    assert set(registry.broken) == {"carrier.aaa", "carrier.bbb"}
