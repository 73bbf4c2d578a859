"""A pipeline agent without `llm:` gets Patter's default: llm.openai with gpt-4o-mini on $OPENAI_API_KEY."""

from __future__ import annotations

import pytest

from patterd.config.load import load_config_text
from patterd.errors import ConfigError
from patterd.plugins import load_registry

REGISTRY = load_registry()
TWILIO = {"TWILIO_ACCOUNT_SID": "AC0123456789abcdef0123456789abcdef", "TWILIO_AUTH_TOKEN": "tw-token"}
SEED = """\
carrier: {type: twilio}
phone_number: "+15550001234"
webhook_url: gw.example.com
agents:
  - name: support
    stt: {type: deepgram, endpointing_ms: 80}
    tts: {type: elevenlabs, voice_id: rachel}
    system_prompt: You are a helpful assistant.
"""
OFFLINE = SEED.replace("{type: deepgram, endpointing_ms: 80}", "{type: offline}").replace(
    "{type: elevenlabs, voice_id: rachel}", "{type: offline}"
)


def test_offline_stt_and_tts_without_llm_talk_to_openai_gpt_4o_mini() -> None:
    config = load_config_text(OFFLINE, REGISTRY, environ={**TWILIO, "OPENAI_API_KEY": "sk-env"})
    llm = config.agents[0].llm
    assert llm is not None and llm.key == "llm.openai"
    assert llm.to_public_dict() == {
        "type": "openai",
        "api_key": "**********",
        "model": "gpt-4o-mini",
        "base_url": "https://api.openai.com/v1",
        "temperature": None,
        "max_tokens": None,
        "timeout_secs": 30.0,
    }


def test_without_an_openai_key_check_says_where_the_default_comes_from() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(OFFLINE, REGISTRY, environ=TWILIO)
    (issue,) = caught.value.issues
    assert issue.path == "agents[0].llm" and issue.line == 5
    assert issue.message.startswith("no llm given, so the default llm.openai (gpt-4o-mini) is used: ")
    assert "OPENAI_API_KEY" in issue.message


def test_openai_base_url_points_the_default_elsewhere() -> None:
    # A local OpenAI-compatible server needs no key, like an explicit llm.openai with that base_url.
    config = load_config_text(
        OFFLINE, REGISTRY, environ={**TWILIO, "OPENAI_BASE_URL": "http://127.0.0.1:11434/v1"}
    )
    llm = config.agents[0].llm
    assert llm is not None and llm.to_public_dict()["base_url"] == "http://127.0.0.1:11434/v1"


def test_an_explicit_llm_or_engine_is_left_alone() -> None:
    with_script = OFFLINE.replace("    system_prompt", "    llm: {type: script}\n    system_prompt")
    config = load_config_text(with_script, REGISTRY, environ=TWILIO)
    assert config.agents[0].llm is not None and config.agents[0].llm.key == "llm.script"
    only_stt = OFFLINE.replace("    tts: {type: offline}\n", "")
    with pytest.raises(ConfigError, match="missing: llm, tts"):
        load_config_text(only_stt, REGISTRY, environ={**TWILIO, "OPENAI_API_KEY": "sk-env"})


def test_the_seed_yaml_validates_with_the_real_providers() -> None:
    for key in ("stt.deepgram", "tts.elevenlabs"):
        kind, name = key.split(".")
        if name not in REGISTRY.names(kind):
            pytest.skip(f"{key} is not installed yet")
    env = {**TWILIO, "OPENAI_API_KEY": "sk-env", "DEEPGRAM_API_KEY": "dg", "ELEVENLABS_API_KEY": "el"}
    config = load_config_text(SEED, REGISTRY, environ=env)
    agent = config.agents[0]
    assert agent.llm is not None and agent.llm.key == "llm.openai"
    assert agent.llm.to_public_dict()["model"] == "gpt-4o-mini"
    assert agent.stt is not None and agent.stt.to_public_dict()["endpointing_ms"] == 80
    # tts.elevenlabs resolves a premade voice's name to its id
    assert agent.tts is not None and agent.tts.to_public_dict()["voice_id"] == "21m00Tcm4TlvDq8ikWAM"
