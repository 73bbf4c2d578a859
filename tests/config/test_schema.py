"""json_schema: valid JSON Schema 2020-12 that accepts the golden valid cases and rejects mistakes."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from patterd.config import json_schema
from patterd.config.yaml_lines import parse_yaml
from tests.config.specs import SPECS, make_registry

CASES = Path(__file__).parent / "cases"
VALID = sorted(p.stem for p in CASES.glob("*.json"))
PIPELINE: dict[str, Any] = {
    "name": "a",
    "stt": {"type": "offline"},
    "llm": {"type": "script"},
    "tts": {"type": "offline"},
}


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json_schema(make_registry())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def errors(validator: Draft202012Validator, document: Any) -> list[str]:
    return [e.message for e in validator.iter_errors(document)]


def test_schema_is_draft_2020_12_json() -> None:
    schema = json_schema(make_registry())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert json.loads(json.dumps(schema)) == schema
    assert schema["additionalProperties"] is False


def test_every_provider_appears_with_its_options() -> None:
    defs = json_schema(make_registry())["$defs"]
    for spec in SPECS:
        name = spec.kind.title() + "".join(p.title() for p in spec.name.split("_"))
        assert defs[name]["properties"]["type"]["const"] == spec.name
        for field in spec.options.model_fields:
            assert field in defs[name]["properties"]
        assert defs[name]["additionalProperties"] is False


@pytest.mark.parametrize("name", VALID)
def test_golden_valid_cases_validate(validator: Draft202012Validator, name: str) -> None:
    document = parse_yaml((CASES / f"{name}.yaml").read_text()).value
    assert errors(validator, document) == []


def test_at_least_six_valid_cases_are_checked() -> None:
    assert len(VALID) >= 6


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["agents"][0]["tts"].update(voice_idd="x"),  # unknown provider option
        lambda d: d.update(carier={"type": "local"}),  # unknown top-level key
        lambda d: d["agents"][0].update(recordng=True),  # unknown agent key
        lambda d: d["agents"][0]["tts"].update(type="elevenlab"),  # unknown provider type
        lambda d: d.update(server={"port": 8000, "hots": "x"}),  # unknown server key
        lambda d: d.update(phone_number="555-0100"),  # not E.164
        lambda d: d.update(agents=[]),  # at least one agent
        lambda d: d["agents"][0].update(tools=[{"type": "hangup"}]),  # unknown tool
    ],
)
def test_mistakes_are_rejected(validator: Draft202012Validator, mutate: Any) -> None:
    document: dict[str, Any] = {"agents": [copy.deepcopy(PIPELINE) | {"tts": {"type": "elevenlabs"}}]}
    assert errors(validator, document) == []
    mutate(document)
    assert errors(validator, document) != []


def test_references_are_accepted_where_numbers_go(validator: Draft202012Validator) -> None:
    document = {"server": {"port": "${PORT:-8000}", "dashboard": "${DASH}"}, "agents": [PIPELINE]}
    assert errors(validator, document) == []
    assert errors(validator, {"server": {"port": "eight"}, "agents": [PIPELINE]}) != []


def test_tunnel_forms(validator: Draft202012Validator) -> None:
    for tunnel in (False, True, "cloudflared", {"type": "cloudflared"}, {"type": "static", "hostname": "h"}):
        assert errors(validator, {"tunnel": tunnel, "agents": [PIPELINE]}) == [], tunnel
    assert errors(validator, {"tunnel": "ngrok", "agents": [PIPELINE]}) != []


def test_extension_keys_are_allowed(validator: Draft202012Validator) -> None:
    assert errors(validator, {"x-anchors": {"a": 1}, "agents": [PIPELINE]}) == []


def test_a_plugin_whose_options_cannot_be_expressed_still_gets_a_schema() -> None:
    from collections.abc import Callable

    from patterd.providers.spec import ProviderOptions, ProviderSpec

    class Odd(ProviderOptions):
        hook: Callable[[], None] | None = None

    registry = make_registry()
    registry.add(ProviderSpec(kind="tts", name="odd", options=Odd, build=SPECS[0].build, summary="odd"))
    schema = json_schema(registry)
    assert schema["$defs"]["TtsOdd"]["properties"]["type"]["const"] == "odd"
